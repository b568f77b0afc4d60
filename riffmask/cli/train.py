"""``riffmask train``, ``riffmask publish`` and ``riffmask export``: the training stage's commands."""

from __future__ import annotations

import argparse

from riffmask.train.config import TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``publish`` to the ``riffmask`` parser."""
    from riffmask.common.config import add_config_arguments

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

    p = subparsers.add_parser(
        "export",
        help="write a pipeline as one original-layout .safetensors checkpoint (AUTOMATIC1111, ComfyUI)",
        description="Convert an SD 1.x diffusers pipeline (a full fine-tune from `riffmask train`, or a Hub id) "
        "to the single-file checkpoint WebUIs load. `riffmask generate --model OUT --single-file-config MODEL` "
        "loads it back. LoRA fine-tunes already have theirs: lora_kohya.safetensors.",
    )
    p.add_argument("model", metavar="MODEL", help="diffusers pipeline folder or Hub id")
    p.add_argument("out", metavar="OUT", help="checkpoint to write (.safetensors)")
    p.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16",
                   help="weights' type (default float16, the usual WebUI file; float32 keeps them exactly)")
    p.add_argument("--revision", help="Hub revision of MODEL")
    p.set_defaults(func=export_command)


def train_command(args: argparse.Namespace) -> int:
    from riffmask.common.config import config_from_args
    from riffmask.train.dreambooth import train

    print(train(config_from_args(TrainConfig, args, args.overrides)))
    return 0


def publish_command(args: argparse.Namespace) -> int:
    from riffmask.train.hub import publish

    print(publish(args.dir, args.repo_id, private=args.private))
    return 0


def export_command(args: argparse.Namespace) -> int:
    from riffmask.train.single_file import export_single_file

    print(export_single_file(args.model, args.out, dtype=args.dtype, revision=args.revision))
    return 0
