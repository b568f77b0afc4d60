"""Placeholder replaced below."""


def register_sweep(subparsers) -> None:
    pass
