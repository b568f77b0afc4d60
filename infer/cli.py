"""``riffmask`` subcommands of the infer stage: ``tiny-model`` (more added by :func:`register`)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the infer stage's subcommands to the ``riffmask`` parser."""
    tiny = subparsers.add_parser(
        "tiny-model",
        help="write a tiny random pipeline of the Riffusion architecture (tests, demo)",
        description="Write a deterministic, randomly initialised diffusers pipeline folder of the "
        "Riffusion v1 architecture, small enough to run on a CPU in seconds. Its output is noise: it is "
        "for tests and demos.",
    )
    tiny.add_argument("out_dir", help="folder to write (a diffusers pipeline folder)")
    tiny.add_argument("--seed", type=int, default=0, help="random seed of the weights (default: 0)")
    tiny.set_defaults(func=_tiny_model)


def _tiny_model(args: argparse.Namespace) -> int:
    from infer.tiny import save_tiny_pipeline

    print(save_tiny_pipeline(args.out_dir, seed=args.seed))
    return 0
