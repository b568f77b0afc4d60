"""The DeepSpeed ZeRO-2 recipe end to end on the CPU, against the plain recipe.

The bundled ``configs/accelerate/deepspeed_zero2.yaml`` (optimizer state offloaded to the CPU, DeepSpeed's
CPU AdamW) runs ``train/dreambooth.py`` on the tiny model and two genre folders of the real sounds, beside
the same recipe without DeepSpeed:

1. ``plain``: ``accelerate launch train/dreambooth.py``, fp32, one process.
2. ``zero2``: the same under the bundled config (``--mixed_precision no``), checkpoint half way.
3. ``zero2_resumed``: ZeRO-2 again from that checkpoint to the end.
4. ``zero2_bf16``: ZeRO-2 with bf16 (DeepSpeed trains a bf16 module; the saved UNet must be its fp32 weights).

Warm-up and cosine learning rates, gradient clipping and non-default Adam betas are on, so that each
reaches DeepSpeed or shows. Reported: the largest weight difference of ZeRO-2 against plain and of the
resumed run against the uninterrupted one, next to the largest update; wall seconds per command (the first
DeepSpeed run on a machine also compiles DeepSpeed's CPU ops, cached afterwards). accelerate runs
DeepSpeed in one process only on a CPU, so memory and scaling are for the GPU bench (``bench_gpu``).

    python -m bench.bench_deepspeed            # writes bench/results/deepspeed.json
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import real_sounds, write_result

ROOT = Path(__file__).resolve().parents[1]
ZERO2 = ROOT / "configs" / "accelerate" / "deepspeed_zero2.yaml"
STEPS = 6
RECIPE = ["--config", "cpu_smoke", f"max_train_steps={STEPS}", f"checkpointing_steps={STEPS // 2}",
          "checkpoints_total_limit=2", "lr_scheduler=cosine", "lr_warmup_steps=2", "learning_rate=1e-3",
          "max_grad_norm=0.05", "adam_beta2=0.9", "adam_epsilon=1e-4"]


def run(cmd: list[str], log: Path) -> float:
    """Wall seconds of ``cmd``; its output goes to ``log`` (shown if it fails)."""
    start = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{log.read_text()[-4000:]}")
    return round(time.perf_counter() - start, 1)


def unet(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def largest_difference(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def main() -> None:
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        print("bench_deepspeed: DeepSpeed is not installed, skipped (pip install 'riffmask[deepspeed]')")
        return
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    recipe = str(ROOT / "train" / "dreambooth.py")
    extensions = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
    ops_cached = any(extensions.glob("*/cpu_adam"))
    with tempfile.TemporaryDirectory(prefix="riffmask-bench-ds-") as tmp:
        work = Path(tmp)
        sounds = real_sounds()
        for i, sound in enumerate(sounds):
            genre = work / "genres" / ("a" if i % 2 else "b")
            genre.mkdir(parents=True, exist_ok=True)
            shutil.copy(sound, genre / sound.name)
        cli = [sys.executable, "-m", "riffmask.cli"]
        run([*cli, "tiny-model", str(work / "tiny")], work / "tiny.log")
        run([*cli, "prep", str(work / "genres"), str(work / "data")], work / "prep.log")
        common = [*RECIPE, f"pretrained_model_name_or_path={work / 'tiny'}", f"dataset={work / 'data'}"]
        zero2 = [*accelerate, "--config_file", str(ZERO2), "--num_processes", "1"]
        seconds = {
            "zero2": run([*zero2, "--mixed_precision", "no", recipe, *common, f"output_dir={work / 'zero2'}"],
                         work / "zero2.log"),
            "plain": run([*accelerate, "--num_processes", "1", "--mixed_precision", "no", recipe, *common,
                          f"output_dir={work / 'plain'}"], work / "plain.log"),
        }
        middle = work / "zero2" / "checkpoints" / f"checkpoint-{STEPS // 2}"
        seconds["zero2_resumed"] = run([*zero2, "--mixed_precision", "no", recipe, *common, f"resume={middle}",
                                        f"output_dir={work / 'zero2_resumed'}"], work / "resumed.log")
        seconds["zero2_bf16"] = run([*zero2, "--mixed_precision", "bf16", recipe, *common, "mixed_precision=bf16",
                                     f"output_dir={work / 'zero2_bf16'}"], work / "bf16.log")
        base, plain, ds = unet(work / "tiny"), unet(work / "plain"), unet(work / "zero2")
        bf16 = unet(work / "zero2_bf16")
        losses = {name: [r["loss"] for r in map(json.loads, (work / name / "training_log.jsonl").read_text()
                                                 .splitlines())] for name in ("plain", "zero2", "zero2_bf16")}
        result = {
            "steps": STEPS,
            "recipe": RECIPE,
            "largest_update": largest_difference(plain, base),
            "zero2_vs_plain": largest_difference(ds, plain),
            "zero2_resumed_vs_uninterrupted": largest_difference(unet(work / "zero2_resumed"), ds),
            "zero2_bf16_saved_dtypes": sorted({str(v.dtype) for v in bf16.values()}),
            "zero2_bf16_vs_plain": largest_difference(bf16, plain),
            "losses": losses,
            "seconds": seconds,
            "deepspeed_ops_compiled_in_this_run": not ops_cached,
        }
    print(json.dumps(result, indent=2))
    write_result("deepspeed", result)


if __name__ == "__main__":
    main()
