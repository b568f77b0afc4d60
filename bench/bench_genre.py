"""Does fine-tuning learn a genre? Held-out genre accuracy of the recipe's modes, on a CPU.

1. Material: the built-in synthetic genres (``data_prep.synth``: ambient, chiptune, synthpop; 9 files
   each, 8 s, every file its own key and tempo), prepared by ``riffmask prep`` as 64 px clips (0.64 s,
   64 mel bands) with a third of the files held out (the split is by file, so no held-out clip shares
   a file with a training clip).
2. Base: ``riffmask tiny-model`` (random weights). Its held-out accuracy is the chance reference.
3. Modes, each one ``riffmask train --config cpu_genre`` process from the same base: full; LoRA;
   full with 8-bit AdamW; the text-encoder-first phase; prior preservation. Every 500 steps the
   run's own validation classifies the held-out clips (diffusion classification, 16 pairs, the
   measure of ``riffmask eval genre``) and records accuracy and per-genre loss in
   ``validation/genre.json``; the run's CPU seconds come from the operating system (children's
   rusage), and the CPU time at each validation step is that total pro rata of steps.
4. The paper's trade-off in miniature: ``riffmask sweep`` of the full fine-tune on the six real
   everyday sounds with each genre prompt, per downshift: the genre rate of the outputs (how often an
   output made with prompt G reads as G) and of the inputs, beside SSIM to the input.

    python -m bench.bench_genre                        # writes bench/results/genre.json
    python -m bench.bench_genre --modes full,lora --steps 1000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import real_sounds, write_result

GENRES_FILES, GENRE_SECONDS = 9, 8.0
PREP_WORDS = ("width=64", "num_frequencies=64", "validation_fraction=0.34")
#: Overrides of ``configs/train/cpu_genre.yaml`` per mode (the LoRA and text-encoder rates were measured,
#: docs/genre.md).
MODES: dict[str, tuple[str, ...]] = {
    "full": (),
    "lora": ("mode=lora", "rank=8", "learning_rate=1e-2"),
    "full_8bit": ("optimizer=adamw8bit",),
    "text_encoder_phase": ("train_text_encoder=true", "text_encoder_steps=200", "text_encoder_learning_rate=1e-3"),
    "prior_preservation": ("with_prior_preservation=true", "class_prompt=music", "num_class_images=48"),
}
SWEEP_DOWNSHIFT = "0,50,...,250"


def riffmask(*words: str, log: Path | None = None) -> float:
    """Run one ``riffmask`` command as its own process; return its CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log or "/dev/null", "w") as out:
        code = subprocess.call([sys.executable, "-m", "riffmask.cli", *words], stdout=out, stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"riffmask {' '.join(words)} failed (exit {code}); see {log}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def material(work: Path) -> Path:
    from riffmask.data_prep.synth import write_builtin_genres

    write_builtin_genres(work / "genres", seconds=GENRE_SECONDS, files_per_genre=GENRES_FILES)
    riffmask("prep", str(work / "genres"), str(work / "dataset"), *PREP_WORDS)
    return work / "dataset"


def evaluate(work: Path, dataset: Path, model: Path) -> dict:
    out = work / f"eval-{model.name}.json"
    riffmask("eval", "genre", str(dataset), "--model", str(model), "--json", str(out))
    return json.loads(out.read_text())


def train(work: Path, base: Path, dataset: Path, mode: str, steps: int) -> dict:
    run = work / "runs" / mode
    started = time.perf_counter()
    cpu = riffmask("train", "--config", "cpu_genre", f"pretrained_model_name_or_path={base}", f"dataset={dataset}",
                   f"output_dir={run}", f"max_train_steps={steps}", *MODES[mode], log=work / f"{mode}.log")
    wall = time.perf_counter() - started
    record = json.loads((run / "validation" / "genre.json").read_text())["steps"]
    curve = [{"step": int(step), "cpu_minutes": round(cpu / 60 * int(step) / steps, 2),
              "accuracy": summary["accuracy"], "loss": summary["loss"]}
             for step, summary in sorted(record.items(), key=lambda kv: int(kv[0]))]
    reached = next((point for point in curve if point["accuracy"] >= 0.9), None)
    losses = [json.loads(line)["loss"] for line in (run / "training_log.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    return {
        "overrides": list(MODES[mode]), "steps": steps, "cpu_minutes": round(cpu / 60, 2),
        "wall_minutes": round(wall / 60, 2), "before": curve[0]["accuracy"], "after": curve[-1]["accuracy"],
        "loss_before": curve[0]["loss"], "loss_after": curve[-1]["loss"],
        "first_at_90": reached and {"step": reached["step"], "cpu_minutes": reached["cpu_minutes"]},
        "training_loss_first_last_50": [sum(losses[:50]) / 50, sum(losses[-50:]) / 50],
        "curve": curve,
    }


def sweep(work: Path, model: Path) -> dict:
    """Genre rate and SSIM per downshift: the fine-tune's outputs from the real sounds, each genre prompt."""
    genres = sorted(p.name for p in (work / "genres").iterdir())
    out = work / "sweep"
    sounds = real_sounds()
    cpu = riffmask("sweep", *map(str, sounds), "--model", str(model), "--config", "fast",
                   "--prompt", "[" + ", ".join(genres) + "]", "--downshift", SWEEP_DOWNSHIFT,
                   "--num-frequencies", "64", "--window", "64", "--overlap", "16", "--no-save", "--out", str(out),
                   log=work / "sweep.log")
    summary = json.loads((out / "summary.json").read_text())
    return {"sounds": [s.name for s in sounds], "prompts": genres, "cpu_minutes": round(cpu / 60, 2),
            "summary": summary}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default=",".join(MODES), help="comma list of modes (default: all)")
    parser.add_argument("--steps", type=int, default=2000, help="fine-tuning steps per mode")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the generation sweep")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise SystemExit(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    with tempfile.TemporaryDirectory(prefix="riffmask-bench-genre-") as tmp:
        work = args.work or Path(tmp)
        dataset = material(work)
        base = work / "tiny-model"
        riffmask("tiny-model", str(base))
        results = {"material": {"genres": GENRES_FILES, "seconds": GENRE_SECONDS, "prep": list(PREP_WORDS)},
                   "base": evaluate(work, dataset, base), "modes": {}}
        for mode in modes:
            results["modes"][mode] = row = train(work, base, dataset, mode, args.steps)
            print(f"{mode}: held-out accuracy {row['before']:.2f} -> {row['after']:.2f} in {args.steps} steps, "
                  f"{row['cpu_minutes']:.1f} CPU min", flush=True)
        if "full" in modes and not args.no_sweep:
            results["sweep"] = sweep(work, work / "runs" / "full")
        write_result("genre", results)


if __name__ == "__main__":
    main()
