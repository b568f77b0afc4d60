"""Batches of files: inputs (files, folders, globs), output names, and the output item contract.

Per input NAME (``NAME_v{k}`` when there are several prompts or variations) the output folder gets
``NAME_input.png``, ``NAME_mask.png``, ``NAME_output.png``, ``NAME_input.wav``, ``NAME.wav`` and the
sidecar ``NAME.json`` (written last: an item with a sidecar is complete), plus ``summary.json``.
:func:`write_item` is the one writer of that contract (``riffmask generate`` and ``riffmask sweep``).
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from riffmask.common.config import config_dict, replace_options
from riffmask.common.errors import RiffmaskError
from riffmask.common.io import safe_stem, write_json_atomic
from riffmask.core.audio import AUDIO_EXTENSIONS, load_audio, write_wav
from riffmask.core.codec import save_image
from riffmask.infer.config import GenerateConfig
from riffmask.infer.generate import Generation, generate_sound

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files, folders (their audio files, recursively) and globs, in order, without repeats."""
    found: list[Path] = []
    for pattern in filter(None, patterns):
        path = Path(pattern).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        elif glob.has_magic(pattern):
            matches = glob.glob(os.path.expanduser(pattern), recursive=True)
            found += sorted(Path(p) for p in matches if Path(p).is_file())
        else:
            found.append(path)  # a missing file is reported as a failure of that input
    return list(dict.fromkeys(found))


def output_names(inputs: list[Path]) -> dict[Path, str]:
    """A safe, unique output NAME per input (``x``, ``x_2``, ... when stems repeat)."""
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for path in inputs:
        stem = base = safe_stem(path.stem)
        k = 2
        while stem in taken:
            stem, k = f"{base}_{k}", k + 1
        taken.add(stem)
        names[path] = stem
    return names


def item_files(name: str) -> dict[str, str]:
    return {
        "input_image": f"{name}_input.png",
        "mask_image": f"{name}_mask.png",
        "output_image": f"{name}_output.png",
        "input_audio": f"{name}_input.wav",
        "output_audio": f"{name}.wav",
        "sidecar": f"{name}.json",
    }


def item_names(name: str, count: int) -> list[str]:
    return [name] if count == 1 else [f"{name}_v{k}" for k in range(count)]


def model_revision(pipe, cfg: GenerateConfig) -> str | None:
    """The commit the weights came from when known (a Hub cache path holds it), else the asked one."""
    path = Path(pipe.name_or_path or "")
    if path.parent.name == "snapshots":
        return path.name
    return cfg.checkpoint.revision


def item_sidecar(gen: Generation, cfg: GenerateConfig, source: Path, name: str, seconds: float, pipe) -> dict:
    """The sidecar of one result: everything needed to make it again (``riffmask generate --like NAME.json``)."""
    import diffusers
    import torch

    item_cfg = replace_options(cfg, prompt=[gen.prompt], seed=gen.seed, num_variations=1)
    return {
        "input": str(source),
        "prompt": gen.prompt,
        "seed": gen.seed,
        "model": cfg.checkpoint.model,
        "revision": model_revision(pipe, cfg),
        "scheduler": {"class": type(pipe.scheduler).__name__, **dict(pipe.scheduler.config)},
        "device": str(pipe.device),
        "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "seconds": round(seconds, 3),
        "model_seconds": round(gen.model_seconds, 3),
        "input_seconds": round(len(gen.input_audio) / cfg.spectrogram.params.sample_rate, 3),
        "image_size": list(gen.output_image.size),
        "joins": gen.joins,
        "versions": {"diffusers": diffusers.__version__, "torch": torch.__version__},
        "files": {k: v for k, v in item_files(name).items() if k != "sidecar"},
        "config": config_dict(item_cfg),
    }


def write_item(gen: Generation, out_dir: Path, name: str, sidecar: dict) -> None:
    """Write one result's files (names from :func:`item_files`), each atomically, and its sidecar last.

    The one writer of the output contract: ``riffmask generate``, ``riffmask sweep`` and anything later.
    """
    files = item_files(name)
    save_image(gen.input_image, out_dir / files["input_image"])
    save_image(gen.mask_image, out_dir / files["mask_image"])
    save_image(gen.output_image, out_dir / files["output_image"])
    write_wav(out_dir / files["input_audio"], gen.input_audio)
    write_wav(out_dir / files["output_audio"], gen.audio)
    write_json_atomic(out_dir / files["sidecar"], sidecar)  # last: its presence marks a complete item


def generate_files(pipe, inputs: list[Path], cfg: GenerateConfig) -> RunSummary:
    """Run every input; one failing input is recorded and the others go on. Writes summary.json."""
    out_dir = Path(cfg.output.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary()
    names = output_names(inputs)
    for source in inputs:
        all_names = item_names(names[source], len(cfg.sampling.items()))
        existing = [n for n in all_names if any((out_dir / f).exists() for f in item_files(n).values())]
        if existing and not cfg.output.overwrite:
            summary.skipped += [{"item": n, "reason": "outputs exist (use --overwrite)"} for n in existing]
            if len(existing) == len(all_names):
                continue
        started = time.perf_counter()
        try:
            audio = read_part(source, cfg)
            generations = generate_sound(pipe, audio, cfg)
        except (RiffmaskError, OSError, ValueError, RuntimeError) as exc:
            log.error("%s", exc)
            summary.failed.append({"input": str(source), "error": str(exc)})
            continue
        seconds = (time.perf_counter() - started) / len(generations)
        for name, gen in zip(all_names, generations, strict=True):
            if name in existing and not cfg.output.overwrite:
                continue
            write_item(gen, out_dir, name, item_sidecar(gen, cfg, source, name, seconds, pipe))
            summary.done.append(name)
        log.info("%s -> %s", source, ", ".join(all_names))
    write_json_atomic(out_dir / "summary.json", dataclasses.asdict(summary) | {"config": config_dict(cfg)})
    return summary


def read_part(source: Path, cfg: GenerateConfig) -> np.ndarray:
    """The part of ``source`` that ``cfg`` selects (``start``, ``duration``, capped at ``max_seconds``)."""
    duration = cfg.input.duration
    if cfg.input.max_seconds is not None:
        duration = min(duration or math.inf, cfg.input.max_seconds)
    return load_audio(source, cfg.spectrogram.params.sample_rate, start=cfg.input.start, duration=duration)
