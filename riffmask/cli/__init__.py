"""The ``riffmask`` command: one entry point whose subcommands reach every stage.

Each command group is a module of this package with ``register(subparsers)``; heavy imports (torch,
diffusers) happen inside the command functions so that ``riffmask --help`` stays instant.
Words of the form ``key=value`` anywhere on the line are config overrides (``args.overrides``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from riffmask.common.config import split_overrides
from riffmask.common.errors import RiffmaskError
from riffmask.common.logs import setup_logging

STAGES = (
    "riffmask.cli.prep", "riffmask.cli.generate", "riffmask.cli.train", "riffmask.cli.evaluate", "riffmask.cli.app",
)  # fmt: skip
#: The stage module that registers each command, so that running one command imports only its own
#: module (a one-shot command starts faster); a test checks this against what the modules register.
COMMAND_MODULES = {
    "spectrogram": "riffmask.cli.prep", "audio": "riffmask.cli.prep", "prep": "riffmask.cli.prep",
    "generate": "riffmask.cli.generate", "mask": "riffmask.cli.generate", "tiny-model": "riffmask.cli.generate",
    "train": "riffmask.cli.train", "publish": "riffmask.cli.train", "export": "riffmask.cli.train",
    "eval": "riffmask.cli.evaluate", "sweep": "riffmask.cli.evaluate", "app": "riffmask.cli.app",
}  # fmt: skip


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with ``command`` (a known one) of that command's stage only."""
    parser = argparse.ArgumentParser(
        prog="riffmask",
        description="Turn everyday sounds into music with mask-based diffusion on Riffusion spectrograms.",
        epilog="Any option of a command that reads a config can also be given as key=value: by its plain name "
        "(downshift=150) or, inside a section, its dotted path (mask.downshift=150).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in [COMMAND_MODULES[command]] if command in COMMAND_MODULES else STAGES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    words, overrides = split_overrides(list(sys.argv[1:] if argv is None else argv))
    # The only top-level option (-v) takes no value, so the first other word names the command.
    parser = build_parser(next((w for w in words if not w.startswith("-")), None))
    args = parser.parse_args(words)
    args.overrides = overrides
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except RiffmaskError as exc:
        print(f"riffmask {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if "torch.distributed" in sys.modules:  # a launched command may have joined a process group
            from riffmask.infer.distributed import leave_process_group

            leave_process_group()


if __name__ == "__main__":
    sys.exit(main())
