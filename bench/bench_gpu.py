"""The GPU half of the benchmarks: what only a CUDA device can measure. Skipped without one.

1. ``generate``: the full-size Riffusion v1 architecture (SD 1.x UNet 860 M, CLIP ViT-L text encoder,
   SD VAE) with random weights, fp16, at the paper's settings (512 px, 50 steps, strength 0.8,
   guidance 8): the masked loop's step against diffusers' img2img on the same modules, seconds per
   5.11 s clip of ``riffmask generate`` on the real everyday sounds (model and everything around it),
   and one run under ``enable_model_cpu_offload`` (peak GPU memory).
2. ``train``: the full-size memory plan of each training recipe (``bench_train.PLAN``) as its config
   sets it, fp16 with GradScaler for the T4 recipes: peak GPU memory over the first steps (the first
   allocates gradients and optimizer state) and seconds per step. The T4 has 15 GiB usable.
3. ``trainer``: the real commands on the tiny model, on CUDA: ``riffmask prep``, ``riffmask train``
   with fp16 and 8-bit AdamW (GradScaler, bitsandbytes' CUDA kernels, validation) and a resume,
   then ``riffmask generate`` in fp16 with the fine-tuned model.
4. ``recipe``: ``configs/train/t4_full_8bit.yaml`` through ``accelerate launch train/dreambooth.py`` at
   full size (random weights): the peak GPU memory the run logs, against the T4's 15 GiB.
5. ``zero2``: the same recipe training the UNet alone with torch's AdamW, under ``single_gpu.yaml`` and
   under ``deepspeed_zero2.yaml`` (needs ``pip install 'riffmask[deepspeed]'``): memory and time side by side.

    python -m bench.bench_gpu [--sounds DIR] [--only generate,train,trainer,recipe,zero2]   # bench/results/gpu.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import tempfile
import time
import traceback
from pathlib import Path

import torch

from bench.common import real_sounds, write_result

GIB = 1024**3
SECTIONS = ("generate", "train", "trainer", "recipe", "zero2")


def free_cuda() -> None:
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def peaks() -> dict[str, float]:
    return {"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 2),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 2)}


# --------------------------------------------------------------------------- 1. generation
def save_full_size_pipeline(out: Path) -> Path:
    """Riffusion v1's architecture and scheduler with random weights, as an fp16 diffusers folder."""
    from diffusers import PNDMScheduler

    from bench.bench_train import full_size_models
    from riffmask.infer.tiny import RIFFUSION_SCHEDULER_CONFIG, save_pipeline_folder

    m = full_size_models(device="cuda")
    models = {name: m[name].to(torch.float16) for name in ("vae", "text_encoder", "unet")}
    save_pipeline_folder({**models, "tokenizer": m["tokenizer"],
                          "scheduler": PNDMScheduler(**RIFFUSION_SCHEDULER_CONFIG)}, out)
    del models, m
    free_cuda()
    return out


def bench_generate(sounds: list[Path], tmp: Path) -> dict:
    from diffusers import StableDiffusionImg2ImgPipeline

    from bench.bench_infer import clip_seconds, per_step_seconds
    from riffmask.core.audio import load_audio
    from riffmask.core.codec import audio_to_image
    from riffmask.core.params import PAPER_CLIP_SAMPLES
    from riffmask.infer.mask import make_mask
    from riffmask.infer.pipeline import MaskedRiffusionPipeline

    started = time.perf_counter()
    model_dir = save_full_size_pipeline(tmp / "full-size")
    built = time.perf_counter() - started

    pipe = MaskedRiffusionPipeline.from_pretrained(model_dir, dtype=torch.float16).to("cuda")
    reference = StableDiffusionImg2ImgPipeline(**pipe.components, safety_checker=None, feature_extractor=None,
                                               requires_safety_checker=False)
    for p in (pipe, reference):
        p.set_progress_bar_config(disable=True)
    image = audio_to_image(load_audio(sounds[0])[:PAPER_CLIP_SAMPLES])
    mask = make_mask(image)
    per_step_seconds(pipe, reference, image, mask)  # warm-up: cuDNN/cuBLAS choose their kernels
    steps = per_step_seconds(pipe, reference, image, mask)
    del reference, pipe
    free_cuda()

    clips = clip_seconds(model_dir, sounds)
    clips["peak_allocated_gib"] = peaks()["peak_allocated_gib"]
    free_cuda()
    return {"build_and_save_s": round(built, 1), "per_step": steps, "clip_5s": clips,
            "cpu_offload": offload_run(model_dir, image, mask)}


def offload_run(model_dir: Path, image, mask) -> dict:
    """One paper-settings generation under ``enable_model_cpu_offload``: it runs, and uses less GPU memory."""
    from riffmask.infer.pipeline import MaskedRiffusionPipeline

    pipe = MaskedRiffusionPipeline.from_pretrained(model_dir, dtype=torch.float16)
    pipe.enable_model_cpu_offload()
    pipe.set_progress_bar_config(disable=True)
    free_cuda()
    started = time.perf_counter()
    out = pipe("jazz", image=image, mask_image=mask, strength=0.8, guidance_scale=8.0, num_inference_steps=50,
               generator=torch.Generator().manual_seed(1040))
    torch.cuda.synchronize()
    result = {"seconds": round(time.perf_counter() - started, 2), "image_size": list(out.images[0].size), **peaks()}
    del pipe
    free_cuda()
    return result


# --------------------------------------------------------------------------- 2. training memory plan
def bench_train_plan() -> dict:
    from bench.bench_train import PLAN, RES, Recipe, estimate_gib, full_size_models

    plan = {}
    for name, recipe in PLAN.items():
        free_cuda()
        batch = recipe["batch_size"]
        kwargs = {k: v for k, v in recipe.items() if k != "batch_size"}
        try:
            r = Recipe(full_size_models(device="cuda"), images=[torch.zeros(3, RES, RES)] * batch,
                       batch_size=batch, device="cuda", **kwargs)
            setup = peaks()
            torch.cuda.reset_peak_memory_stats()
            losses, times = [], []
            for _ in range(4):  # the first allocates gradients and optimizer state
                start = time.perf_counter()
                losses.append(r.ours())
                torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            row = {**recipe, "estimate_weights_grads_optimizer_gib": round(estimate_gib(recipe), 2),
                   "setup_peak_allocated_gib": setup["peak_allocated_gib"], **peaks(),
                   "first_step_s": round(times[0], 3), "step_s": round(min(times[1:]), 3),
                   "losses_finite": all(map(math.isfinite, losses))}
            if recipe["mixed_precision"] == "fp16":
                row["grad_scale"] = float(r.accelerator.scaler.get_scale())
            row["fits_t4_15gib"] = row["peak_reserved_gib"] < 15.0
            del r
        except Exception as exc:  # one recipe out of memory must not cost the others their numbers
            traceback.print_exc()
            row = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
        plan[name] = row
        print(name, row, flush=True)
    free_cuda()
    return plan


# --------------------------------------------------------------------------- 3. the real commands on CUDA
def run_riffmask(*words: str) -> float:
    from riffmask.cli import main as riffmask

    started = time.perf_counter()
    code = riffmask(list(words))
    if code:
        raise RuntimeError(f"riffmask {' '.join(words)} exited {code}")
    return round(time.perf_counter() - started, 1)


def bench_trainer(sounds: list[Path], tmp: Path) -> dict:
    from accelerate.state import AcceleratorState, GradientState

    from riffmask.data_prep.synth import write_builtin_genres
    from riffmask.train.dreambooth import read_training_log

    AcceleratorState._reset_state(reset_partial_state=True)  # the plan's recipes ran in this process
    GradientState._reset_state()

    genres, dataset, base, model = tmp / "genres", tmp / "dataset", tmp / "tiny-base", tmp / "tiny-finetuned"
    write_builtin_genres(genres)
    seconds = {"prep": run_riffmask("prep", str(genres), str(dataset)),
               "tiny_model": run_riffmask("tiny-model", str(base))}
    common = ["train", "--config", "cpu_smoke", f"pretrained_model_name_or_path={base}", f"dataset={dataset}",
              f"output_dir={model}", "mixed_precision=fp16", "optimizer=adamw8bit", "train_text_encoder=true",
              "text_encoder_steps=4", "checkpointing_steps=4", f"validation_sounds=[{sounds[0]}]",
              "validation_steps=8"]
    seconds["train_8_steps"] = run_riffmask(*common, "max_train_steps=8")
    seconds["resume_to_12"] = run_riffmask(*common, "max_train_steps=12", "resume=latest")
    log = read_training_log(model)
    seconds["generate"] = run_riffmask("generate", "--config", "fast", "--model", str(model), "--out",
                                       str(tmp / "music"), str(sounds[0]))
    sidecar = json.loads((tmp / "music" / f"{sounds[0].stem}.json").read_text())
    return {"seconds": seconds, "train_log_tail": log[-2:], "generate_device": sidecar.get("device"),
            "generate_dtype": sidecar.get("dtype"), "outputs": sorted(p.name for p in (tmp / "music").iterdir())}


# --------------------------------------------------------------------------- 4-5. recipes at full size
def launch_recipe(tmp: Path, accelerate_config: str, overrides: list[str], steps: int = 12) -> dict:
    """``accelerate launch --config_file configs/accelerate/<accelerate_config>.yaml train/dreambooth.py
    --config t4_full_8bit`` on the full-size architecture, validation audio at the end, the pipeline
    saved. Peak GPU memory from the run's own log (``gpu_memory_gib``)."""
    import subprocess
    import sys

    from riffmask.data_prep.synth import write_builtin_genres
    from riffmask.train.dreambooth import read_training_log

    tmp.mkdir(parents=True, exist_ok=True)
    base, dataset, out = save_full_size_pipeline(tmp / "full-size"), tmp / "dataset", tmp / "run"
    write_builtin_genres(tmp / "genres")
    run_riffmask("prep", str(tmp / "genres"), str(dataset))
    overrides = [f"pretrained_model_name_or_path={base}", f"dataset={dataset}", f"output_dir={out}",
                 f"max_train_steps={steps}", "checkpointing_steps=0", f"validation_steps={steps}", "report_to=none",
                 *overrides]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           f"configs/accelerate/{accelerate_config}.yaml", "train/dreambooth.py", "--config", "t4_full_8bit",
           *overrides]
    started = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    if run.returncode:
        raise RuntimeError(run.stderr.strip()[-3000:])
    log = read_training_log(out)
    return {
        "command": " ".join(cmd[1:]),
        "steps": steps,
        "seconds_with_loading_validation_and_saving": round(seconds, 1),
        "peak_gpu_memory_gib": max(r.get("gpu_memory_gib", 0.0) for r in log),
        "peak_gpu_memory_gib_first_half": max(r.get("gpu_memory_gib", 0.0) for r in log[: steps // 2]),
        "losses_finite": all(math.isfinite(r["loss"]) for r in log),
        "log_tail": log[-1],
        "outputs": sorted(p.name for p in out.iterdir()),
    }


def bench_recipe(tmp: Path, steps: int = 12) -> dict:
    """The T4 recipe as bundled: the text encoder for the first half of the steps, then the UNet."""
    return launch_recipe(tmp, "single_gpu", [f"text_encoder_steps={steps // 2}"], steps)


def bench_zero2(tmp: Path, steps: int = 12) -> dict:
    """The UNet-only T4 recipe with torch's AdamW, plain and under DeepSpeed ZeRO-2 (optimizer state
    offloaded to the CPU): peak GPU memory and time side by side."""
    unet_only = ["train_text_encoder=false", "text_encoder_steps=0", "optimizer=adamw"]
    return {"plain": launch_recipe(tmp / "plain", "single_gpu", unet_only, steps),
            "zero2": launch_recipe(tmp / "zero2", "deepspeed_zero2", unet_only, steps)}


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sounds", type=Path, help="folder of everyday sounds (default: $RIFFMASK_BENCH_DATA/seed-samples)"
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    args = parser.parse_args(argv or [])
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here, skipped (the CPU benchmarks cover this machine)")
        return
    sounds = sorted(args.sounds.glob("*.wav")) if args.sounds else real_sounds()
    results: dict = {"model": "Riffusion v1 architecture (SD 1.x) with random weights; real everyday sounds",
                     "sounds": [p.name for p in sounds]}
    for section in args.only.split(","):
        started = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                if section == "generate":
                    results[section] = bench_generate(sounds, Path(tmp))
                elif section == "train":
                    results[section] = bench_train_plan()
                elif section == "trainer":
                    results[section] = bench_trainer(sounds, Path(tmp))
                elif section == "recipe":
                    results[section] = bench_recipe(Path(tmp))
                elif section == "zero2":
                    results[section] = bench_zero2(Path(tmp))
                else:
                    raise SystemExit(f"--only: unknown section {section!r}; choose from {SECTIONS}")
        except Exception as exc:  # later sections still run; the error is in the results
            traceback.print_exc()
            results[section] = {"error": f"{type(exc).__name__}: {exc}"}
        results[section]["section_seconds"] = round(time.perf_counter() - started, 1)
        print(section, json.dumps(results[section], indent=1, default=str), flush=True)
        write_result("gpu", results)  # after every section: a timeout keeps what was measured


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
