"""``riffmask train`` and ``riffmask publish``: the training stage's commands."""

from __future__ import annotations

import argparse

from train.config import TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``publish`` to the ``riffmask`` parser."""
    from riffmask.config import add_config_arguments

    p = subparsers.add_parser(
        "train",
        help="DreamBooth / LoRA fine-tuning on a prepared dataset",
        description="Fine-tune a Riffusion pipeline on a dataset made by `riffmask prep` (one process; for "
        "several GPUs: accelerate launch train/dreambooth.py --config ...). Options may be key=value.",
    )
    add_config_arguments(p, TrainConfig)
    p.set_defaults(func=train_command)

    p = subparsers.add_parser(
        "publish",
        help="upload a training output to the Hugging Face Hub with a model card",
        description="Create REPO_ID and upload DIR (weights, config, log, validation media, model card). "
        "The token comes from HF_TOKEN or `huggingface-cli login`; HF_ENDPOINT selects another Hub.",
    )
    p.add_argument("dir", metavar="DIR", help="output folder of `riffmask train`")
    p.add_argument("repo_id", metavar="REPO_ID", help="owner/name")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.set_defaults(func=publish_command)


def train_command(args: argparse.Namespace) -> int:
    from riffmask.config import config_from_args
    from train.dreambooth import train

    print(train(config_from_args(TrainConfig, args, args.overrides)))
    return 0


def publish_command(args: argparse.Namespace) -> int:
    from train.hub import publish

    print(publish(args.dir, args.repo_id, private=args.private))
    return 0
