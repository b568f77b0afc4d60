"""``riffmask`` subcommands of the infer stage: ``generate``, ``mask`` and ``tiny-model``."""

from __future__ import annotations

import argparse

from riffmask.common.config import add_config_arguments, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the infer stage's subcommands to the ``riffmask`` parser."""
    from riffmask.infer.mask import MaskParams

    gen = subparsers.add_parser(
        "generate",
        help="turn sounds into music with masked differential img2img",
        description="Generate music from everyday sounds (files, folders or globs) with a Riffusion checkpoint. "
        "Defaults are the paper's; presets: --config paper | fast.",
    )
    gen.add_argument("inputs", nargs="*", metavar="INPUT", help="audio files, folders or glob patterns")
    gen.add_argument(
        "--like",
        metavar="SIDECAR",
        help="start from the settings of an earlier result (its NAME.json) instead of --config; "
        "without INPUT, its input again: the same result, made again",
    )
    add_generate_options(gen)
    gen.set_defaults(func=generate_command)

    mask = subparsers.add_parser(
        "mask",
        help="make the mask of a spectrogram image (SPEC §2)",
        description="Invert, brighten, contrast and downshift a spectrogram image into a mask; "
        "a negative value skips a step.",
    )
    mask.add_argument("input", help="spectrogram PNG")
    mask.add_argument("output", help="mask PNG to write")
    add_config_arguments(mask, MaskParams)
    mask.add_argument("--steps-image", help="also write every intermediate step side by side to this PNG")
    mask.set_defaults(func=mask_command)

    tiny = subparsers.add_parser(
        "tiny-model",
        help="write a tiny random pipeline of the Riffusion architecture (tests, demo)",
        description="Write a deterministic, randomly initialised diffusers pipeline folder of the "
        "Riffusion v1 architecture, small enough to run on a CPU in seconds. Its output is noise: it is "
        "for tests and demos.",
    )
    tiny.add_argument("out_dir", help="folder to write (a diffusers pipeline folder)")
    tiny.add_argument("--seed", type=int, default=0, help="random seed of the weights (default: 0)")
    tiny.add_argument(
        "--unit-latents",
        action="store_true",
        help="scale the random VAE's latents to unit variance (as SD's factor does for its trained VAE): without it "
        "fine-tuning cannot learn prompts (docs/genre.md)",
    )
    tiny.set_defaults(func=tiny_model_command)


def add_generate_options(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``key=value`` and one flag per option of ``riffmask generate`` (also ``riffmask app``'s)."""
    from riffmask.infer.config import GenerateConfig

    add_config_arguments(parser, GenerateConfig, skip=("prompt", "lora", "lora_scale"))
    # Repeatable flags for the list options; argparse.SUPPRESS leaves them out unless given.
    repeat = {"action": "append", "default": argparse.SUPPRESS}
    parser.add_argument(
        "--prompt", dest="sampling.prompt", metavar="TEXT", **repeat,
        help="prompt; repeat for several (each runs on every input)",
    )  # fmt: skip
    parser.add_argument(
        "--lora", dest="checkpoint.lora", metavar="PATH", **repeat, help="LoRA file, folder or Hub id; repeat to stack"
    )
    parser.add_argument(
        "--lora-scale", dest="checkpoint.lora_scale", metavar="W", type=float, **repeat, help="weight of each --lora"
    )


def generate_command(args: argparse.Namespace) -> int:
    import tempfile

    from riffmask.common.config import save_config
    from riffmask.common.errors import RiffmaskError
    from riffmask.infer.config import GenerateConfig
    from riffmask.infer.files import expand_inputs, generate_files
    from riffmask.infer.load import load_pipeline

    patterns = list(args.inputs)
    with tempfile.TemporaryDirectory() as tmp:
        if args.like:
            if args.config:
                raise RiffmaskError("give --like or --config, not both")
            # The sidecar's settings become the config file layer; flags and key=value still override.
            settings, source = _sidecar_settings(args.like)
            args.config = f"{tmp}/like.yaml"
            save_config(settings, args.config)
            patterns = patterns or [source]
        cfg = config_from_args(GenerateConfig, args, args.overrides)
    if not patterns:
        raise RiffmaskError("give at least one INPUT (or --like SIDECAR)")
    inputs = expand_inputs(patterns)
    if not inputs:
        raise RiffmaskError(f"no input files found in {' '.join(patterns)}")
    pipe = load_pipeline(cfg)
    summary = generate_files(pipe, inputs, cfg)
    save_config(cfg, f"{cfg.output.out}/config.yaml")
    if cfg.output.report:
        from riffmask.metrics.report import write_generation_report

        print(f"report: {write_generation_report(cfg.output.out)}")
    counts = f"{len(summary.done)} generated, {len(summary.skipped)} skipped, {len(summary.failed)} failed"
    print(f"{counts} -> {cfg.output.out}")
    for failure in summary.failed:
        print(f"  failed: {failure['input']}: {failure['error']}")
    return 1 if summary.failed else 0


def _sidecar_settings(path: str):
    """(GenerateConfig, input path) recorded in a result's sidecar."""
    import json

    from riffmask.common.config import build_config
    from riffmask.common.errors import RiffmaskError
    from riffmask.infer.config import GenerateConfig

    try:
        data = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as exc:
        raise RiffmaskError(f"{path}: cannot read the sidecar ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), t) for k, t in (("config", dict), ("input", str))):
        raise RiffmaskError(f"{path}: not the sidecar of a riffmask generate result (NAME.json)")
    return build_config(GenerateConfig, (path, _current_keys(data["config"]))), data["input"]


#: Keys of sidecars written before decoding had one vocabulary, and their values now.
_LEGACY_KEYS = {"griffin_lim_iters": "iterations", "phase_init": "phase_start"}
_LEGACY_VALUES = {"phase_init": {"magnitude": "pghi", "input": "input"}}


def _current_keys(config: dict) -> dict:
    """An older sidecar's flat config in today's names (its settings keep their meaning)."""
    out = dict(config)
    for key, name in _LEGACY_KEYS.items():
        if key in out:
            value = out.pop(key)
            out[name] = _LEGACY_VALUES.get(key, {}).get(value, value)
    return out


def mask_command(args: argparse.Namespace) -> int:
    from riffmask.core.codec import load_image, save_image
    from riffmask.infer.mask import MaskParams, make_mask, mask_steps, steps_image

    params = config_from_args(MaskParams, args, args.overrides)
    image = load_image(args.input)
    save_image(make_mask(image, params), args.output)
    if args.steps_image:
        save_image(steps_image(mask_steps(image, params)), args.steps_image)
    print(args.output)
    return 0


def tiny_model_command(args: argparse.Namespace) -> int:
    from riffmask.infer.tiny import save_tiny_pipeline

    print(save_tiny_pipeline(args.out_dir, seed=args.seed, unit_latents=args.unit_latents))
    return 0
