"""Batches of files: inputs (files, folders, globs), output names, and the output item contract.

Per input NAME (``NAME_v{k}`` when there are several prompts or variations) the output folder gets
``NAME_input.png``, ``NAME_mask.png``, ``NAME_output.png``, ``NAME_input.wav``, ``NAME.wav`` and the
sidecar ``NAME.json`` (written last: an item with a sidecar is complete), plus ``summary.json``.
:func:`write_item` is the one writer of that contract (``riffmask generate`` and ``riffmask sweep``);
how runs share a folder (lock, claims, names, records) is :mod:`riffmask.infer.out_folder`.
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from riffmask.common.config import config_dict, replace_options
from riffmask.common.errors import RiffmaskError
from riffmask.common.io import file_sha256, locked, safe_stem, write_json_atomic
from riffmask.core.audio import AUDIO_EXTENSIONS, load_part, write_wav
from riffmask.core.codec import save_image
from riffmask.infer.config import GenerateConfig
from riffmask.infer.generate import Generation, generate_sounds
from riffmask.infer.out_folder import (
    claim_path,
    earlier_runs,
    item_files,
    plan_input,
    remove_temporaries,
    write_summary,
)

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    cut: list[dict[str, str]] = field(default_factory=list)  # inputs longer than max_seconds


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files, folders (their audio files, recursively) and globs, in order, without repeats."""
    found: list[Path] = []
    for pattern in filter(None, patterns):
        path = Path(pattern).expanduser()
        if path.is_dir():
            # Dangling links stay in the list: they are reported as failures, not dropped without a word.
            found += sorted(
                p for p in path.rglob("*") if (p.is_file() or p.is_symlink()) and p.suffix.lower() in AUDIO_EXTENSIONS
            )
        elif glob.has_magic(pattern):
            matches = glob.glob(os.path.expanduser(pattern), recursive=True)
            found += sorted(Path(p) for p in matches if Path(p).is_file())
        else:
            found.append(path)  # a missing file is reported as a failure of that input
    unique: dict[Path, Path] = {}
    for path in found:  # one file named two ways is one input, under the first name given
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def output_names(inputs: list[Path]) -> dict[Path, str]:
    """A safe output NAME per input (``x``, ``x_2``, ... when stems repeat) whose item files no other
    input's share: ``x_input`` would make its music in ``x``'s ``x_input.wav``."""
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for path in inputs:
        base = safe_stem(path.stem)
        for k in itertools.count(1):
            stem = base if k == 1 else f"{base}_{k}"
            files = set(item_files(stem).values())
            if not files & taken:
                break
        taken |= files
        names[path] = stem
    return names


def model_revision(pipe, cfg: GenerateConfig) -> str | None:
    """The commit the weights came from when known (a Hub cache path holds it), else the asked one."""
    path = Path(pipe.name_or_path or "")
    if path.parent.name == "snapshots":
        return path.name
    return cfg.checkpoint.revision


def item_config(cfg: GenerateConfig, prompt: str, seed: int) -> GenerateConfig:
    """The config of the one result of ``prompt`` and ``seed`` (what its sidecar records)."""
    return replace_options(cfg, prompt=[prompt], seed=seed, num_variations=1)


def item_sidecar(
    gen: Generation, cfg: GenerateConfig, source: Path, name: str, seconds: float, pipe, digest: str | None = None
) -> dict:
    """The sidecar of one result: everything needed to make it again (``riffmask generate --like NAME.json``)."""
    import diffusers
    import torch

    return {
        "input": str(source.resolve()),
        "input_sha256": digest or file_sha256(source),
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
        "config": config_dict(item_config(cfg, gen.prompt, gen.seed)),
    }


def write_item(gen: Generation, out_dir: Path, name: str, sidecar: dict) -> None:
    """Write one result's files (names from :func:`item_files`), each atomically, and its sidecar last.

    The one writer of the output contract: ``riffmask generate``, ``riffmask sweep`` and anything later.
    The sidecar-to-be goes first into a hidden claim, so that a killed write is known as incomplete.
    """
    files = item_files(name)
    claim = claim_path(out_dir, name)
    write_json_atomic(claim, sidecar)
    remove_temporaries(out_dir, list(files.values()))  # left by an earlier write of this item, killed
    save_image(gen.input_image, out_dir / files["input_image"])
    save_image(gen.mask_image, out_dir / files["mask_image"])
    save_image(gen.output_image, out_dir / files["output_image"])
    write_wav(out_dir / files["input_audio"], gen.input_audio)
    write_wav(out_dir / files["output_audio"], gen.audio)
    write_json_atomic(out_dir / files["sidecar"], sidecar)  # last: its presence marks a complete item
    claim.unlink()


def generate_files(pipe, inputs: list[Path], cfg: GenerateConfig) -> RunSummary:
    """Run every input; one failing input is recorded and the others go on. Writes summary.json.

    Holds the folder's writer lock throughout; items made before from the same input and settings
    are skipped, incomplete ones finished (see :mod:`riffmask.infer.out_folder`).
    """
    started_at = run_started()
    with locked(Path(cfg.output.out), "riffmask generate") as out_dir:
        earlier = earlier_runs(out_dir)
        summary = run_inputs(pipe, inputs, cfg)
        record_run(out_dir, summary, cfg, started_at, earlier)
    return summary


def run_started() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def record_run(out_dir: Path, summary: RunSummary, cfg: GenerateConfig, started_at: str, earlier: list[dict]) -> None:
    """This run's record at the top of ``summary.json``, the earlier runs kept under ``runs``."""
    run = {"started": started_at, **dataclasses.asdict(summary), "config": config_dict(cfg)}
    write_summary(out_dir, run, earlier)


def run_inputs(pipe, inputs: list[Path], cfg: GenerateConfig, share: tuple[int, int] = (0, 1)) -> RunSummary:
    """Generate and write the items of ``inputs`` (no summary.json, no lock: the caller holds it).

    ``share = (k, n)``: only the inputs k, k + n, ... (process k of n); names are planned over the whole
    list, so every process gives every input the same names. Up to ``cfg.sampling.batch_size`` inputs
    at a time go through the model together (:func:`generate_sounds`).
    """
    out_dir = Path(cfg.output.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary()
    taken: set[str] = set()
    configs = [config_dict(item_config(cfg, p, s)) for p, s in cfg.sampling.items()]
    todo: list[tuple[Path, str, list[str], list[bool]]] = []
    for index, source in enumerate(inputs):
        mine = index % share[1] == share[0]
        try:
            digest = file_sha256(source)
        except OSError as exc:
            if mine:
                dangling = source.is_symlink() and not source.exists()
                _fail(summary, source, f"{source}: {'a dangling symbolic link' if dangling else exc.strerror}")
            continue
        overwrite = cfg.output.overwrite
        names, states = plan_input(
            out_dir, safe_stem(source.stem), str(source.resolve()), digest, configs, overwrite, taken
        )
        if not mine:
            continue
        make = [overwrite or state != "same" for state in states]
        summary.skipped += [
            {"item": n, "reason": "made before from this input with these settings (--overwrite: make again)"}
            for n, m in zip(names, make, strict=True)
            if not m
        ]
        if any(make):
            todo.append((source, digest, names, make))
    size = cfg.sampling.batch_size
    for first in range(0, len(todo), size):
        _generate_batch(pipe, todo[first : first + size], cfg, out_dir, summary)
    return summary


def _generate_batch(
    pipe, batch: list[tuple[Path, str, list[str], list[bool]]], cfg: GenerateConfig, out_dir: Path, summary: RunSummary
) -> None:
    """Read, generate and write a batch of inputs; an input that fails is recorded and the rest go on."""
    started = time.perf_counter()
    ready, sounds, cuts = [], [], []
    for entry in batch:
        try:
            audio = read_part(entry[0], cfg)
            cuts.append(cut_note(entry[0], cfg, len(audio)))
        except (RiffmaskError, OSError, ValueError, RuntimeError) as exc:
            _fail(summary, entry[0], str(exc))
            continue
        sounds.append(audio)
        ready.append(entry)
    if not ready:
        return
    try:
        made = generate_sounds(pipe, sounds, cfg)
    except (RiffmaskError, OSError, ValueError, RuntimeError) as exc:
        if len(ready) == 1:
            _fail(summary, ready[0][0], str(exc))
            return
        # Which input broke the batch? Alone, each one fails or succeeds on its own.
        for entry in ready:
            _generate_batch(pipe, [entry], cfg, out_dir, summary)
        return
    seconds = (time.perf_counter() - started) / sum(len(g) for g in made)
    for (source, digest, names, make), generations, cut in zip(ready, made, cuts, strict=True):
        if cut:
            log.warning("%s: %s", source, cut)
            summary.cut.append({"input": str(source), "note": cut})
        for name, gen, m in zip(names, generations, make, strict=True):
            if m:
                sidecar = item_sidecar(gen, cfg, source, name, seconds, pipe, digest) | ({"cut": cut} if cut else {})
                write_item(gen, out_dir, name, sidecar)
                summary.done.append(name)
        log.info("%s -> %s", source, ", ".join(names))


def _fail(summary: RunSummary, source: Path, error: str) -> None:
    log.error("%s", error if error.startswith(str(source)) else f"{source}: {error}")
    summary.failed.append({"input": str(source), "error": error})


def read_part(source: Path, cfg: GenerateConfig) -> np.ndarray:
    """The part of ``source`` that ``cfg`` selects (``start``, ``duration``, capped at ``max_seconds``)."""
    return load_part(source, cfg.spectrogram.params, cfg.input.start, cfg.input.seconds)


def cut_note(source: Path, cfg: GenerateConfig, samples: int) -> str | None:
    """What ``max_seconds`` left out of ``source`` (None when nothing): said in the log, sidecar and summary."""
    import soundfile as sf

    part = cfg.input
    if part.max_seconds is None or samples < int(part.max_seconds * cfg.spectrogram.params.sample_rate):
        return None
    wanted = sf.info(str(source)).duration - part.start
    if part.duration is not None:
        wanted = min(wanted, part.duration)
    if wanted <= part.max_seconds + 0.01:
        return None
    return f"cut to max_seconds={part.max_seconds:g} s of the {wanted:.2f} s asked for (raise --max-seconds for more)"
