"""Seams of loops and of long outputs, with the tiny random pipeline at the real 512-band format.

* Loops: each real sound as a 4 s loop (``loop: true``, each of the ``loop_seam`` strategies), the
  seam score and sample jump at the wrap, against the same generation without ``loop`` (the first
  4 s, same settings and seed) played end to start.
* Long inputs: the six sounds joined (about 30 s) generated as one latent with MultiDiffusion windows
  (riffmask), against the Riffusion way: independent 5.11 s clips, each its own generation with the
  same model, mask and settings, joined with 0.2 s crossfades. The seam score at every join of each;
  the input's own score at the same times beside it, because the joined input has changes of its
  own (where one sound meets the next).
* Grid reference: the same outputs cut at the other points of the model's grid (every 16 px of the
  tiny model: its VAE's 8 times its UNet's 2), where the wrap and the window joins also lie. The
  random model's texture is rougher there than between them, and ordinary cuts of a noise texture
  score above 1.2 now and then: this says how a join scores that is no seam at all.
* Cost: loop mode per UNet step and per 4 s clip against plain generation, same image size and
  settings, runs interleaved. ``python -m bench.bench_seams cost`` measures only this and replaces
  the ``loop_cost`` of the existing result (the seams take about ten minutes; the cost a few);
  ``python -m bench.bench_seams long`` likewise re-measures only the long inputs.

Random tiny weights turn the spectrogram into a noise-like texture where the mask lets go: the
numbers show whether the machinery leaves a join (a wrap, a window edge, a clip edge) that stands out
from that texture; they say nothing about musical quality. ``python -m bench.bench_seams``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.bench_infer import step_intervals
from bench.common import RESULTS, machine, real_sounds, write_result
from riffmask.common.config import build_config, replace_options
from riffmask.core.audio import load_audio
from riffmask.core.params import PAPER_CLIP_SAMPLES
from riffmask.infer.config import GenerateConfig
from riffmask.infer.generate import generate_sound
from riffmask.infer.load import load_pipeline
from riffmask.infer.loop import loop_grid, loop_input
from riffmask.infer.tiny import save_tiny_pipeline
from riffmask.metrics.seams import CLICK_LIMIT, seam_scores

SR = 44100
LOOP_SECONDS = 4.0
CROSSFADE_SECONDS = 0.2
SETTINGS = {"steps": 6, "iterations": 6}  # strength 0.8: 4 denoising steps (+1 PNDM warm-up)
OTHER_SEEDS = (1, 2, 3)  # of the long input, beside the default seed
PARTS = {"cost": "loop_cost", "long": "long_inputs"}  # re-measured alone by `python -m bench.bench_seams PART`
ROUNDS = 6  # of the cost comparison: the machine is shared, its load changes while it runs


def _wrap(audio: np.ndarray) -> dict:
    (score,) = seam_scores(audio, SR, wrap=True)
    return {"seam": score.seam, "click": score.click}


def _grid_cuts(audio: np.ndarray, px: float, grid: int, width: int) -> list[float]:
    """Wrap scores of a loop cut at each other point of the model's grid (``px`` samples per image px)."""
    return [_wrap(np.roll(audio, -round(k * grid * px)))["seam"] for k in range(1, width // grid)]


def _summary(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "max": float(np.max(values)), "share_over_1.2": float(np.mean(
        np.array(values) > 1.2)), "count": len(values)}


def loops(pipe, cfg: GenerateConfig, sounds: list[Path]) -> dict:
    """Wrap scores per sound: loop mode with each seam strategy, and plain generation end to start."""
    rows, grid_cuts = [], []
    for path in sounds:
        audio = load_audio(path)
        row = {"sound": path.stem}
        plain_cfg = replace_options(cfg, duration=LOOP_SECONDS)
        row["plain"] = _wrap(generate_sound(pipe, audio[: round(LOOP_SECONDS * SR)], plain_cfg)[0].audio)
        row["input"] = _wrap(audio[: round(LOOP_SECONDS * SR)])
        for seam in ("crossfade", "release", "both"):
            loop_cfg = replace_options(cfg, loop=True, loop_seconds=LOOP_SECONDS, loop_seam=seam)
            (gen,) = generate_sound(pipe, audio, loop_cfg)
            assert len(gen.audio) == round(LOOP_SECONDS * SR)
            row[f"loop_{seam}"] = _wrap(gen.audio)
            if seam == "crossfade":
                width = gen.output_image.width
                grid_cuts += _grid_cuts(gen.audio, len(gen.audio) / width, loop_grid(pipe), width)
        rows.append(row)
        print(json.dumps(row))
    kinds = [k for k in rows[0] if k != "sound"]
    means = {k: {m: float(np.mean([r[k][m] for r in rows])) for m in ("seam", "click")} for k in kinds}
    clicks = {k: sum(r[k]["click"] > CLICK_LIMIT for r in rows) for k in kinds}
    worst = {k: float(np.max([r[k]["seam"] for r in rows])) for k in kinds}
    return {"per_sound": rows, "mean": means, "worst": worst, "clicks": clicks, "loop_seconds": LOOP_SECONDS,
            "crossfade_loops_cut_at_other_grid_points": _summary(grid_cuts)}


def _crossfade_join(pieces: list[np.ndarray], fade: int) -> tuple[np.ndarray, list[float]]:
    """Pieces joined with linear crossfades of ``fade`` samples; the joins are the fades' middles."""
    ramp = np.linspace(0, 1, fade, dtype=np.float32)
    out = pieces[0]
    joins = []
    for piece in pieces[1:]:
        joins.append((len(out) - fade / 2) / SR)
        out = np.concatenate([out[:-fade], out[-fade:] * (1 - ramp) + piece[:fade] * ramp, piece[fade:]])
    return out, joins


def _scores(audio: np.ndarray, joins: list[float]) -> list[float]:
    return [s.seam for s in seam_scores(audio, SR, at=joins)]


def long_inputs(pipe, cfg: GenerateConfig, sounds: list[Path]) -> dict:
    """Seams of one-latent windows against independent clips joined with crossfades, on ~30 s."""
    fade = round(CROSSFADE_SECONDS * SR)
    long_input, _ = _crossfade_join([load_audio(p) for p in sounds], fade)
    long_cfg = replace_options(cfg, max_seconds=None)
    (ours,) = generate_sound(pipe, long_input, long_cfg)
    # The Riffusion way: 5.11 s clips that overlap by the crossfade, each generated on its own.
    stride = PAPER_CLIP_SAMPLES - fade
    starts = range(0, len(long_input) - fade, stride)
    clips = [generate_sound(pipe, long_input[s : s + PAPER_CLIP_SAMPLES], cfg)[0].audio for s in starts]
    baseline, baseline_joins = _crossfade_join(clips, fade)
    baseline_joins = [t for t in baseline_joins if t < len(long_input) / SR]
    result = {
        "input_seconds": len(long_input) / SR,
        "riffmask": {"joins": ours.joins, "seam": _scores(ours.audio, ours.joins),
                     "input_at_joins": _scores(long_input, ours.joins)},
        "riffusion_clips": {"joins": baseline_joins, "seam": _scores(baseline, baseline_joins),
                            "input_at_joins": _scores(long_input, baseline_joins)},
    }
    for key in ("riffmask", "riffusion_clips"):
        part = result[key]
        part["seam_mean"], part["seam_max"] = float(np.mean(part["seam"])), float(np.max(part["seam"]))
        part["input_mean"] = float(np.mean(part["input_at_joins"]))
    # The output cut at every other point of the model's grid (the joins lie on it), 1 s from the ends.
    grid_seconds = loop_grid(pipe) * cfg.spectrogram.params.step_ms / 1000
    first = grid_seconds * math.ceil(1.0 / grid_seconds)
    points = [t for t in np.arange(first, len(long_input) / SR - 1.0, grid_seconds)
              if min(abs(t - j) for j in ours.joins) > 0.3]
    result["riffmask"]["cut_at_other_grid_points"] = _summary(
        [seam_scores(ours.audio, SR, at=[float(t)])[0].seam for t in points])
    # One seed could flatter or blame a join by chance: the same generation with other seeds.
    other_seeds = {}
    for seed in OTHER_SEEDS:
        (again,) = generate_sound(pipe, long_input, replace_options(long_cfg, seed=seed))
        seams = _scores(again.audio, again.joins)
        other_seeds[str(seed)] = {"seam": seams, "seam_mean": float(np.mean(seams)), "seam_max": float(np.max(seams))}
    result["riffmask"]["other_seeds"] = other_seeds
    print(json.dumps(result))
    return result


def loop_cost(pipe, cfg: GenerateConfig, sound: Path) -> dict:
    """Loop mode against plain generation at equal settings and image size (512 px), runs interleaved:
    the median UNet step (the same image and mask with and without ``loop``), and seconds per clip
    (``generate_sound``, 5.12 s loop against the paper's 5.11 s clip, both 512 px wide)."""
    audio = load_audio(sound)
    loop_cfg = replace_options(cfg, loop=True, loop_seconds=5.12)
    source = loop_input(audio, loop_cfg, loop_grid(pipe))
    assert source.image.width == 512
    steps = cfg.sampling.steps
    common = {"strength": 0.8, "guidance_scale": 8.0, "num_inference_steps": steps, "output_type": "latent"}
    intervals: dict[str, list[float]] = {"loop": [], "plain": []}
    seconds: dict[str, list[float]] = {"loop": [], "plain": []}
    runs = (("loop", loop_cfg, audio), ("plain", cfg, audio[:PAPER_CLIP_SAMPLES]))
    for round_ in range(ROUNDS):  # alternating which goes first, so a change of load hits both alike
        for kind, run_cfg, part in runs if round_ % 2 == 0 else runs[::-1]:
            intervals[kind] += step_intervals(lambda cb, looped=kind == "loop": pipe(
                "jazz", image=source.image, mask_image=source.mask, generator=torch.Generator().manual_seed(1040),
                loop=looped, callback_on_step_end=cb, **common))
            started = time.perf_counter()
            generate_sound(pipe, part, run_cfg)
            seconds[kind].append(time.perf_counter() - started)
    step = {k: float(np.median(v)) for k, v in intervals.items()}
    fastest = {k: float(np.min(v)) for k, v in intervals.items()}  # the least disturbed by other load
    clip = {k: float(np.min(v)) for k, v in seconds.items()}
    return {"s_per_step": step, "step_ratio": step["loop"] / step["plain"],
            "fastest_step": fastest, "fastest_step_ratio": fastest["loop"] / fastest["plain"],
            "s_per_clip": clip, "clip_ratio": clip["loop"] / clip["plain"], "steps_timed": len(intervals["loop"]),
            "clips_timed": len(seconds["loop"])}


def rerun_part(part: str) -> None:
    """Re-measure one part (``long_inputs`` or ``loop_cost``) and replace it in the existing ``seams.json``."""
    path = RESULTS / "seams.json"
    result = json.loads(path.read_text())
    torch.set_num_threads(1)
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_tiny_pipeline(Path(tmp) / "tiny")
        cfg = build_config(GenerateConfig, ("bench", {"model": str(model_dir), **SETTINGS}))
        pipe = load_pipeline(cfg)
        sounds = real_sounds()
        rows = long_inputs(pipe, cfg, sounds) if part == "long_inputs" else loop_cost(pipe, cfg, sounds[0])
    load = {"start": load_at_start, "end": os.getloadavg()}
    result[part] = {**rows, "machine": machine(), "load_average": load}
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result[part], indent=2))


def main() -> None:
    torch.set_num_threads(1)  # a shared machine: waiting OpenMP threads cost more than they give
    load_at_start = os.getloadavg()
    sounds = real_sounds()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_tiny_pipeline(Path(tmp) / "tiny")
        cfg = build_config(GenerateConfig, ("bench", {"model": str(model_dir), **SETTINGS}))
        pipe = load_pipeline(cfg)
        loop_rows = loops(pipe, cfg, sounds)
        long_rows = long_inputs(pipe, cfg, sounds)
        cost = loop_cost(pipe, cfg, sounds[0])
    write_result("seams", {
        "model": "tiny random Riffusion-architecture pipeline (infer.tiny), 512 bands, float32, CPU",
        "settings": {**SETTINGS, "strength": 0.8, "guidance": 8.0, "window": 512, "overlap": 128},
        "loops": loop_rows,
        "long_inputs": long_rows,
        "loop_cost": cost,
        "sounds": [p.name for p in sounds],
        "load_average": {"start": load_at_start, "end": os.getloadavg()},  # 1, 5, 15 min; 2 cores, shared
        "notes": "seam = log-mel flux across a join / median flux inside the sound (1.0: no seam; goal <= 1.2); "
                 "click = sample jump at the join / RMS sample-to-sample change (a click above 4). "
                 "Random tiny weights: shows whether the machinery leaves joins, not musical quality.",
    })
    print(json.dumps({"loop_means": loop_rows["mean"], "cost": cost}, indent=2))


if __name__ == "__main__":
    if sys.argv[1:] and sys.argv[1] not in PARTS:
        raise SystemExit(f"usage: python -m bench.bench_seams [{' | '.join(PARTS)}]")
    rerun_part(PARTS[sys.argv[1]]) if sys.argv[1:] else main()
