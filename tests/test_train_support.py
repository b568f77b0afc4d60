"""Shared pieces of the training tests: a tiny prepared dataset and configs for the tiny pipeline."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
RES = 64  # spectrograms 64 px tall (num_frequencies=64) and 64 frames wide


@contextlib.contextmanager
def one_thread():
    """One torch thread: the CPUs are shared, and more threads mostly spin; the subprocesses use one too,
    and float sums depend on the thread count, so in-process runs must match them for exact comparisons."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory) -> Path:
    """A real `riffmask prep` output of the built-in synthetic genres, 64x64 clips, both splits filled."""
    from riffmask.core.params import SpectrogramOptions
    from riffmask.data_prep.config import PrepConfig
    from riffmask.data_prep.dataset import prepare_dataset
    from riffmask.data_prep.synth import write_builtin_genres

    root = tmp_path_factory.mktemp("train_data")
    write_builtin_genres(root / "genres", seconds=1.3, files_per_genre=3)
    cfg = PrepConfig(width=RES, spectrogram=SpectrogramOptions(num_frequencies=RES), validation_fraction=0.34)
    prepare_dataset(root / "genres", root / "prep", cfg, progress=False)
    return root / "prep"


def overrides(dataset: Path, model: Path, out: Path, **extra) -> dict:
    """Settings of a fast run on the tiny pipeline; ``extra`` replaces or adds keys."""
    base = {
        "dataset": str(dataset), "pretrained_model_name_or_path": str(model), "output_dir": str(out),
        "resolution": RES, "max_train_steps": 4, "learning_rate": 1e-3, "checkpointing_steps": 0,
        "report_to": "none", "seed": 0,
    }
    return {**base, **extra}


def make_config(**values):
    from riffmask.common.config import build_config
    from riffmask.train.config import TrainConfig

    return build_config(TrainConfig, ("test", values))


def run_train(**values) -> Path:
    from riffmask.train.dreambooth import train

    return train(make_config(**values))


def as_words(values: dict) -> list[str]:
    return [f"{k}={v}" for k, v in values.items()]


def script_env(**extra: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **extra)
    env.pop("HF_TOKEN", None)
    return env


def launch(values: dict, *accelerate_args: str, wait: bool = True, env: dict | None = None):
    """``[accelerate launch ARGS] train/dreambooth.py key=value ...`` as a subprocess."""
    script = [str(ROOT / "train" / "dreambooth.py"), *as_words(values)]
    if accelerate_args:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", *accelerate_args, *script]
    else:
        cmd = [sys.executable, *script]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=script_env(**(env or {})), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if wait:
        proc.output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, proc.output[-4000:]
    return proc


def unet_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
