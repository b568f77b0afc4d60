"""The ``riffmask`` command: one entry point whose subcommands reach every stage.

Each command group is a module of this package with ``register(subparsers)``; heavy imports (torch,
diffusers) happen inside the command functions so that ``riffmask --help`` stays instant.
Words of the form ``key=value`` whose key is an option of the command are config overrides
(``args.overrides``); other such words (a file ``take=1.flac``) and every word after ``--`` are arguments.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import sys
from pathlib import Path

from riffmask.common.config import option_names, override_key, split_overrides, unknown_key
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
    parser = _Parser(
        prog="riffmask",
        description="Turn everyday sounds into music with mask-based diffusion on Riffusion spectrograms.",
        epilog="Any option of a command that reads a config can also be given as key=value: by its plain name "
        "(downshift=150) or, inside a section, its dotted path (mask.downshift=150). Words after -- are always "
        "file names.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in [COMMAND_MODULES[command]] if command in COMMAND_MODULES else STAGES:
        importlib.import_module(name).register(sub)
    return parser


class _UsageError(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors reach :func:`main` (which knows what was read as key=value)."""

    def error(self, message: str):
        raise _UsageError(self, message)


def _fail(parser: argparse.ArgumentParser, message: str):
    argparse.ArgumentParser.error(parser, message)  # usage and message on stderr, exit status 2


def _command_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The parser of the command ``argv`` names, down to a subcommand (``eval genre``)."""
    for word in (w for w in argv if not w.startswith("-")):
        commands = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
        if word not in commands:
            break
        parser = commands[word]
    return parser


def _misread_overrides(
    command: argparse.ArgumentParser, args: argparse.Namespace, words: list[str], extras: list[str]
) -> list[str]:
    """The ``key=value`` words (before ``--``) with a key the command does not know, that were no file name
    either: left over, or in a list of inputs while naming no file or folder (a typo: ``strenght=0.5``)."""
    shaped = {w for w in words[: words.index("--") if "--" in words else None] if override_key(w) is not None}
    listed = [
        str(value)
        for action in command._actions
        if not action.option_strings and action.nargs in ("*", "+")
        for value in getattr(args, action.dest, None) or ()
    ]
    missing = [w for w in listed if w in shaped and not Path(w).exists() and not glob.has_magic(w)]
    return [w for w in extras if w in shaped] + missing


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The only top-level option (-v) takes no value, so the first other word names the command.
    parser = build_parser(next((w for w in argv if not w.startswith("-")), None))
    command = _command_parser(parser, argv)
    config_class = command.get_default("config_class")
    words, overrides = split_overrides(argv, option_names(config_class) if config_class else set())
    try:
        args, extras = parser.parse_known_args(words)
    except _UsageError as exc:
        taken = f" ({' '.join(overrides)}: read as key=value, an option; words after -- are read as file names)"
        _fail(exc.parser, str(exc) + (taken if overrides and "required" in str(exc) else ""))
    misread = _misread_overrides(command, args, words, extras) if config_class else []
    if set(extras) - set(misread):
        _fail(command, f"unrecognized arguments: {' '.join(extras)}")
    args.overrides = overrides
    setup_logging(args.verbose)
    try:
        if misread:
            raise unknown_key(config_class, override_key(misread[0]), "the command line")
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
