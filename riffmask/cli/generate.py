"""``riffmask`` subcommands of the infer stage: ``generate``, ``mask`` and ``tiny-model``."""

from __future__ import annotations

import argparse
from pathlib import Path

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
        help="start from the generation settings of an earlier result (its NAME.json) instead of --config "
        "(never its output folder or --allow-pickle); without INPUT, its input again if that lies in the "
        "sidecar's folder",
    )
    add_generate_options(gen)
    gen.set_defaults(func=generate_command)

    mask = subparsers.add_parser(
        "mask",
        help="make the mask of a spectrogram image (docs/mask.md)",
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
        "Riffusion v1 architecture, small enough to run on a CPU in seconds, for tests and demos. Untrained, "
        "its output is noise; its VAE's latents behave like a trained VAE's, so a short fine-tune on a CPU "
        "learns genres from it (configs/train/cpu_genre.yaml, docs/genre.md).",
    )
    tiny.add_argument("out_dir", help="folder to write (a diffusers pipeline folder)")
    tiny.add_argument("--seed", type=int, default=0, help="random seed of the weights (default: 0)")
    tiny.set_defaults(func=tiny_model_command)


def add_generate_options(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``key=value`` and one flag per option of ``riffmask generate`` (also ``riffmask app``'s)."""
    from riffmask.infer.config import GenerateConfig

    add_config_arguments(parser, GenerateConfig, skip=("prompt", "lora", "lora_scale"))
    parser.add_argument(
        "--prompt", dest="sampling.prompt", metavar="TEXT", **REPEAT,
        help="prompt; repeat for several (each runs on every input)",
    )  # fmt: skip
    add_lora_flags(parser, "checkpoint.")


# Repeatable flags for the list options; argparse.SUPPRESS leaves them out unless given.
REPEAT = {"action": "append", "default": argparse.SUPPRESS}


def add_lora_flags(parser: argparse.ArgumentParser, section: str = "") -> None:
    """``--lora`` and ``--lora-scale``, repeatable, for the options of a ``CheckpointConfig`` at ``section``."""
    parser.add_argument(
        "--lora", dest=f"{section}lora", metavar="PATH", **REPEAT, help="LoRA file, folder or Hub id; repeat to stack"
    )
    parser.add_argument(
        "--lora-scale", dest=f"{section}lora_scale", metavar="W", type=float, **REPEAT, help="weight of each --lora"
    )


def generate_command(args: argparse.Namespace) -> int:
    """``riffmask generate``; under ``accelerate launch`` each process takes its share of the inputs."""
    import contextlib
    import tempfile

    from riffmask.common.errors import RiffmaskError
    from riffmask.common.io import locked
    from riffmask.infer import distributed
    from riffmask.infer.config import GenerateConfig
    from riffmask.infer.files import expand_inputs, record_run, run_inputs, run_started
    from riffmask.infer.load import load_pipeline
    from riffmask.infer.out_folder import earlier_runs

    patterns = list(args.inputs)
    with tempfile.TemporaryDirectory() as tmp:
        if args.like:
            if args.config:
                raise RiffmaskError("give --like or --config, not both")
            # The sidecar's settings become the config file layer; flags and key=value still override.
            args.config = f"{tmp}/like.yaml"
            source = _sidecar_settings(args.like, args.config)
            if not patterns:
                patterns = [_sidecar_input(args.like, source)]
        cfg = config_from_args(GenerateConfig, args, args.overrides)
    if not patterns:
        raise RiffmaskError("give at least one INPUT (or --like SIDECAR)")
    inputs = expand_inputs(patterns)
    if not inputs:
        raise RiffmaskError(f"no input files found in {' '.join(patterns)}")
    state = distributed.process_state() if distributed.launched() else None
    main = state is None or state.is_main_process
    # One writer per folder: a run (for a launch, its main process) holds the folder's lock, and a bad --out
    # (a file, a foreign summary, another run writing) stops it before the model loads.
    out = Path(cfg.output.out)
    folder = locked(out, "riffmask generate") if main else contextlib.nullcontext(out)
    with folder as out_dir:
        earlier = earlier_runs(out_dir) if main else []
        if state is not None:
            state.wait_for_everyone()  # the others start once the main process holds the folder
        # Each process on its own device; the config (and the sidecars) keep what was asked for.
        pipe = load_pipeline(distributed.on_process_device(cfg, state))
        started_at = run_started()
        share = (state.process_index, state.num_processes) if state else (0, 1)
        summary = run_inputs(pipe, inputs, cfg, share)
        if state is not None:
            summary = distributed.gather_summaries(state, summary)  # waits for every process
        if not main:
            return 0  # the main process reports the run (infer/distributed.py says why)
        record_run(out_dir, summary, cfg, started_at, earlier)
    if cfg.output.report:
        from riffmask.metrics.report import write_generation_report

        print(f"report: {write_generation_report(cfg.output.out)}")
    counts = f"{len(summary.done)} generated, {len(summary.skipped)} skipped, {len(summary.failed)} failed"
    print(f"{counts} -> {cfg.output.out}")
    for failure in summary.failed:
        print(f"  failed: {failure['input']}: {failure['error']}")
    return 1 if summary.failed else 0


def _sidecar_settings(path: str, config_path: str) -> str:
    """Write the generation settings a result's sidecar records to ``config_path``; return its input.

    A sidecar is data, possibly someone else's: it sets generation settings only, never where outputs
    go or what is allowed (the ``local`` options: ``out``, ``allow_pickle`` ...); the command line does.
    """
    import json

    import yaml

    from riffmask.common.config import ConfigError, build_config, without_local
    from riffmask.common.errors import RiffmaskError
    from riffmask.common.io import write_text_atomic
    from riffmask.infer.config import GenerateConfig

    try:
        data = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as exc:
        raise RiffmaskError(f"{path}: cannot read the sidecar ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), t) for k, t in (("config", dict), ("input", str))):
        raise RiffmaskError(f"{path}: not the sidecar of a riffmask generate result (NAME.json)")
    settings = without_local(GenerateConfig, _current_keys(data["config"]), path)
    try:
        build_config(GenerateConfig, (path, settings))
    except ConfigError as exc:  # a value's own error names the key; say which file holds it
        raise (exc if str(exc).startswith(str(path)) else ConfigError(f"{path}: {exc}")) from None
    write_text_atomic(config_path, yaml.safe_dump(settings, sort_keys=False, allow_unicode=True))
    return data["input"]


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


def _sidecar_input(path: str, source: str) -> str:
    """The sidecar's input, which must lie inside the sidecar's folder (else give INPUT on the command line)."""
    from riffmask.common.errors import RiffmaskError
    from riffmask.common.io import inside

    try:
        return str(inside(Path(path).parent, source))
    except ValueError:
        raise RiffmaskError(
            f"{path}: its input {source} is outside the sidecar's folder; a sidecar may not choose what is read: "
            f"give the input on the command line (riffmask generate --like {path} INPUT)"
        ) from None


def mask_command(args: argparse.Namespace) -> int:
    from riffmask.common.io import output_file
    from riffmask.core.image import load_image, save_image
    from riffmask.infer.mask import MaskParams, make_mask, mask_steps, steps_image

    params = config_from_args(MaskParams, args, args.overrides)
    output_file(args.output, "OUTPUT", ".png", keep={"INPUT": args.input})
    if args.steps_image:
        output_file(args.steps_image, "--steps-image", ".png", keep={"INPUT": args.input, "OUTPUT": args.output})
    image = load_image(args.input)
    save_image(make_mask(image, params), args.output)
    if args.steps_image:
        save_image(steps_image(mask_steps(image, params)), args.steps_image)
    print(args.output)
    return 0


def tiny_model_command(args: argparse.Namespace) -> int:
    from riffmask.infer.tiny import save_tiny_pipeline

    print(save_tiny_pipeline(args.out_dir, seed=args.seed))
    return 0
