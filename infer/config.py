"""``GenerateConfig``: every option of ``riffmask generate``, light to import (no torch), so that
``riffmask --help`` stays instant. Defaults are the paper's (SPEC §3); ``configs/paper.yaml`` and
``configs/fast.yaml`` are presets of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from riffmask.common.config import ConfigError, option
from riffmask.core.params import SpectrogramParams
from riffmask.infer.mask import MaskParams

DEFAULT_MODEL = "riffusion/riffusion-model-v1"
PAPER_PROMPT = "instrumental, saxophone, flute"
DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class GenerateConfig:
    """Every option of ``riffmask generate``; defaults are the paper's (SPEC §3)."""

    model: str = option(DEFAULT_MODEL, help="Hub id, local diffusers folder, or a single .safetensors checkpoint")
    revision: str | None = option(None, help="Hub revision (branch, tag or commit) of the model")
    single_file_config: str | None = option(
        None, help="diffusers folder or Hub id whose configs describe a single-file checkpoint"
    )
    lora: list[str] = option([], help="LoRA weights (file, folder or Hub id); repeatable, stacked")
    lora_scale: list[float] = option([], help="weight of each LoRA (one value: all of them; default 1.0)")
    allow_pickle: bool = option(False, help="allow pickle (.ckpt/.bin) weights: only for files you trust")
    scheduler: str | None = option(None, help="diffusers scheduler class name; default: the checkpoint's own")
    device: str | None = option(None, help="torch device; default cuda when present, else cpu")
    dtype: str | None = option(None, help="float32, float16 or bfloat16; default float16 on cuda, else float32")
    prompt: list[str] = option([PAPER_PROMPT], help="prompt(s); every prompt runs on every input")
    negative_prompt: str | None = option(None, help="negative prompt (the paper uses none)")
    strength: float = option(0.8, help="img2img strength: share of the steps that are run")
    guidance: float = option(8.0, help="classifier-free guidance scale")
    steps: int = option(50, help="scheduler steps (strength 0.8 runs 40 of 50)")
    seed: int = option(1040, help="seed of the CPU generator; variation k uses seed + k")
    num_variations: int = option(1, help="seeds per prompt and input, batched through the UNet")
    invert: float | None = option(1.0, help="mask: invert blend factor (negative/null skips)")
    brightness: float | None = option(0.05, help="mask: brightness factor (negative/null skips)")
    contrast: float | None = option(200.0, help="mask: contrast factor (negative/null skips)")
    downshift: int | None = option(40, help="mask: grey level subtracted (negative/null skips)")
    start: float = option(0.0, help="seconds into each input where the processed part begins")
    duration: float | None = option(None, help="seconds of each input to process (default: to the end)")
    max_seconds: float | None = option(60.0, help="cap on the seconds processed per input (null: no cap)")
    window: int = option(512, help="window width in px (10 ms each); the model's training size")
    overlap: int = option(128, help="px shared by neighbouring windows of long inputs")
    windows_per_batch: int | None = option(8, help="windows per UNet call for long inputs (bounds memory)")
    num_frequencies: int = option(512, help="mel bands = image height (the model's training size)")
    spectrogram_mode: Literal["paper", "riffusion"] = option("paper", help="max volume per clip: ceil or not")
    griffin_lim_iters: int | None = option(
        6,
        help="Griffin-Lim iterations of the decode; from a good start 6 already beat the paper's 32 from a random "
        "one (bench/results/codec.json), keeping generation all model (null: the codec's default, 10)",
    )
    phase_init: Literal["input", "magnitude"] = option(
        "input", help="Griffin-Lim start: the input sound's phase, or one predicted from the magnitudes"
    )
    out: str = option("riffmask_out", help="output folder")
    overwrite: bool = option(False, help="replace existing outputs (otherwise those items are skipped)")
    report: bool = option(False, help="write report.html of the run (metrics.report)")

    def validate(self) -> None:
        if not 0.0 < self.strength <= 1.0:
            raise ConfigError(f"strength: must be in (0, 1], got {self.strength}")
        if self.steps < 1 or int(self.steps * self.strength) < 1:
            raise ConfigError(f"steps: {self.steps} steps at strength {self.strength} run no step")
        if self.num_variations < 1:
            raise ConfigError(f"num_variations: must be at least 1, got {self.num_variations}")
        if not self.prompt:
            raise ConfigError("prompt: give at least one prompt")
        if self.window % 8 or self.overlap % 8 or not 0 <= self.overlap < self.window:
            raise ConfigError(f"window, overlap: multiples of 8, overlap < window: {self.window}, {self.overlap}")
        if self.lora_scale and len(self.lora_scale) not in (1, len(self.lora)):
            raise ConfigError(f"lora_scale: give one value or one per LoRA ({len(self.lora)}), got {self.lora_scale}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ConfigError(f"dtype: one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.duration is not None and self.duration <= 0:
            raise ConfigError(f"duration: must be positive, got {self.duration}")
        if self.start < 0 or (self.max_seconds is not None and self.max_seconds <= 0):
            raise ConfigError(f"start must be >= 0 and max_seconds > 0, got {self.start} and {self.max_seconds}")
        if self.windows_per_batch is not None and self.windows_per_batch < 1:
            raise ConfigError(f"windows_per_batch: at least 1, got {self.windows_per_batch}")
        MaskParams(self.invert, self.brightness, self.contrast, self.downshift).validate()

    @property
    def mask_params(self) -> MaskParams:
        return MaskParams(self.invert, self.brightness, self.contrast, self.downshift)

    @property
    def spectrogram_params(self) -> SpectrogramParams:
        return SpectrogramParams(num_frequencies=self.num_frequencies)

    def items(self) -> list[tuple[str, int]]:
        """(prompt, seed) of every output per input: prompts in order, ``num_variations`` seeds each."""
        return [(p, self.seed + k) for p in self.prompt for k in range(self.num_variations)]
