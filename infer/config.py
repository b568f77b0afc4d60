"""``GenerateConfig``: every option of ``riffmask generate``, in sections per concern, light to import (no
torch) so that ``riffmask --help`` stays instant. Defaults are the paper's (SPEC §3);
``configs/generate/paper.yaml`` and ``configs/generate/fast.yaml`` are presets of it.

Sections: ``checkpoint`` (what to load), ``sampling`` (prompts and the diffusion loop), ``mask``
(:class:`~riffmask.infer.mask.MaskParams`), ``input`` (the part of each sound), ``spectrogram``
(:class:`~riffmask.core.params.SpectrogramOptions`), ``decode`` (:class:`~riffmask.core.decode.DecodeConfig`),
``looping`` (loop mode) and ``output``. Every option can be set by its plain name (``downshift=150``,
``--downshift 150``) or its dotted path (``mask.downshift=150``), and a YAML file may nest the sections or not.
Training validation reuses ``sampling``, ``mask`` and ``decode``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from riffmask.common.config import ConfigError, option
from riffmask.core.decode import DecodeConfig
from riffmask.core.params import SpectrogramOptions
from riffmask.infer.mask import MaskParams

DEFAULT_MODEL = "riffusion/riffusion-model-v1"
PAPER_PROMPT = "instrumental, saxophone, flute"
DTYPES = ("float32", "float16", "bfloat16")
#: Generation decodes from the input sound's phase (and that start's 6 iterations), keeping generation all model.
GENERATE_DECODE = DecodeConfig(phase_start="input")
SEED_LIMIT = 2**63  # torch generators take seeds below 2**64; leave room for seed + k
#: Longest loop: its VAE encodes and decodes the whole loop at once (tiles would not wrap), so memory
#: grows with the length; a minute is 16 bars at 64 bpm and stays within a few GB.
MAX_LOOP_SECONDS = 60.0


@dataclass
class CheckpointConfig:
    """What to load: the model, its LoRAs and scheduler, and where it runs."""

    model: str = option(DEFAULT_MODEL, help="Hub id, local diffusers folder, or a single .safetensors checkpoint")
    revision: str | None = option(None, help="Hub revision (branch, tag or commit) of the model")
    single_file_config: str | None = option(
        None, help="diffusers folder or Hub id whose configs describe a single-file checkpoint"
    )
    lora: list[str] = option([], help="LoRA weights (file, folder or Hub id); repeatable, stacked")
    lora_scale: list[float] = option([], help="weight of each LoRA (one value: all of them; default 1.0)")
    allow_pickle: bool = option(False, local=True, help="allow pickle (.ckpt/.bin) weights: only for files you trust")
    scheduler: str | None = option(None, help="diffusers scheduler class name; default: the checkpoint's own")
    device: str | None = option(None, help="torch device; default cuda when present, else cpu")
    dtype: str | None = option(None, help="float32, float16 or bfloat16; default float16 on cuda, else float32")
    compile: bool = option(
        False, help="torch.compile the UNet and VAE (GPU speed-up; the first call compiles, for minutes)"
    )

    def validate(self) -> None:
        if self.lora_scale and len(self.lora_scale) not in (1, len(self.lora)):
            raise ConfigError(f"lora_scale: give one value or one per LoRA ({len(self.lora)}), got {self.lora_scale}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ConfigError(f"dtype: one of {', '.join(DTYPES)}, got {self.dtype!r}")


@dataclass
class SamplingConfig:
    """Prompts and the masked img2img loop (SPEC §3), including the windows of long inputs."""

    prompt: list[str] = option([PAPER_PROMPT], help="prompt(s); every prompt runs on every input")
    negative_prompt: str | None = option(None, help="negative prompt (the paper uses none)")
    strength: float = option(0.8, help="img2img strength: share of the steps that are run")
    guidance: float = option(8.0, help="classifier-free guidance scale")
    steps: int = option(50, help="scheduler steps (strength 0.8 runs 40 of 50)")
    seed: int = option(1040, help="seed of the CPU generator; variation k uses seed + k")
    num_variations: int = option(1, help="seeds per prompt and input, batched through the UNet")
    window: int = option(512, help="window width in px (10 ms each); the model's training size")
    overlap: int = option(128, help="px shared by neighbouring windows of long inputs")
    windows_per_batch: int | None = option(8, help="windows per UNet call for long inputs (bounds memory)")
    batch_size: int = option(
        1, help="inputs whose windows go through the UNet together, each with its own generator (same results)"
    )

    def validate(self) -> None:
        if not 0.0 < self.strength <= 1.0:
            raise ConfigError(f"strength: must be in (0, 1], got {self.strength}")
        if self.steps < 1 or int(self.steps * self.strength) < 1:
            raise ConfigError(f"steps: {self.steps} steps at strength {self.strength} run no step")
        if self.num_variations < 1:
            raise ConfigError(f"num_variations: must be at least 1, got {self.num_variations}")
        if self.window % 8 or self.overlap % 8 or not 0 <= self.overlap < self.window:
            raise ConfigError(f"window, overlap: multiples of 8, overlap < window: {self.window}, {self.overlap}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: at least 1, got {self.batch_size}")
        if self.guidance < 0:
            raise ConfigError(f"guidance: must be >= 0, got {self.guidance}")
        if not 0 <= self.seed < SEED_LIMIT - self.num_variations:
            raise ConfigError(f"seed: must be in [0, 2**63 - num_variations), got {self.seed}")
        if self.windows_per_batch is not None and self.windows_per_batch < 1:
            raise ConfigError(f"windows_per_batch: at least 1, got {self.windows_per_batch}")

    def items(self) -> list[tuple[str, int]]:
        """(prompt, seed) of every output per input: prompts in order, ``num_variations`` seeds each."""
        return [(p, self.seed + k) for p in self.prompt for k in range(self.num_variations)]


@dataclass
class InputConfig:
    """The part of each sound that is processed."""

    start: float = option(0.0, help="seconds into each input where the processed part begins")
    duration: float | None = option(None, help="seconds of each input to process (default: to the end)")
    max_seconds: float | None = option(60.0, help="cap on the seconds processed per input (null: no cap)")

    @property
    def seconds(self) -> float | None:
        """Seconds to read from ``start``: ``duration`` capped at ``max_seconds`` (None: to the end)."""
        if self.max_seconds is None:
            return self.duration
        return min(self.duration or math.inf, self.max_seconds)

    def validate(self) -> None:
        if self.duration is not None and self.duration <= 0:
            raise ConfigError(f"duration: must be positive, got {self.duration}")
        if self.start < 0 or (self.max_seconds is not None and self.max_seconds <= 0):
            raise ConfigError(f"start must be >= 0 and max_seconds > 0, got {self.start} and {self.max_seconds}")


def min_loop_seconds(params) -> float:
    """The shortest loop: two analysis windows, so that the circular STFT can wrap around it."""
    return 2 * params.win_length / params.sample_rate


@dataclass
class LoopConfig:
    """Loop mode (:mod:`riffmask.infer.loop`): a seamless loop of an exact length."""

    loop: bool = option(False, help="make a seamless loop: played end to start, the output has no seam")
    loop_seconds: float | None = option(None, help="loop length in seconds, at most 60 (default: the processed part's)")
    bpm: float | None = option(None, help="loop tempo in beats per minute; with bars, sets the loop length")
    bars: int | None = option(None, help="loop length in bars of beats_per_bar beats at bpm")
    beats_per_bar: int = option(4, help="beats per bar, for bars")
    loop_seam: Literal["crossfade", "release", "both"] = option(
        "crossfade",
        help="how the kept input crosses the wrap: the sound after the loop's end cross-faded into its head, "
        "the mask released near the wrap so the model bridges it, or both",
    )

    def seconds(self) -> float | None:
        """The asked loop length (``loop_seconds``, else ``bars`` at ``bpm``); None: the processed part's."""
        if self.loop_seconds is not None:
            return self.loop_seconds
        if self.bpm is not None and self.bars is not None:
            return self.bars * self.beats_per_bar * 60.0 / self.bpm
        return None

    def validate(self) -> None:
        tempo = (self.bpm, self.bars)
        if not self.loop and (self.loop_seconds is not None or any(v is not None for v in tempo)):
            raise ConfigError("loop_seconds, bpm, bars: only with loop (--loop)")
        if self.loop_seconds is not None and any(v is not None for v in tempo):
            raise ConfigError("loop_seconds or bpm and bars: give one loop length, not both")
        if (self.bpm is None) != (self.bars is None):
            raise ConfigError(f"bpm and bars go together, got bpm={self.bpm}, bars={self.bars}")
        for name in ("loop_seconds", "bpm", "bars", "beats_per_bar"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name}: must be positive, got {value}")
        seconds = self.seconds()
        if seconds is not None and seconds > MAX_LOOP_SECONDS:
            asked = "loop_seconds" if self.loop_seconds is not None else "bpm, bars, beats_per_bar"
            raise ConfigError(
                f"{asked}: a loop lasts at most {MAX_LOOP_SECONDS:g} s (its VAE runs on the whole loop at once), "
                f"got {seconds:g} s"
            )


@dataclass
class OutputConfig:
    """Where results go."""

    out: str = option("riffmask_out", local=True, help="output folder")
    overwrite: bool = option(
        False, local=True, help="make again the items made before from the same inputs (otherwise skipped)"
    )
    report: bool = option(False, local=True, help="write report.html of the run (metrics.report)")


@dataclass
class GenerateConfig:
    """Every option of ``riffmask generate``; defaults are the paper's (SPEC §3)."""

    PRESETS: ClassVar[str] = "generate"

    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    mask: MaskParams = field(default_factory=MaskParams)
    input: InputConfig = field(default_factory=InputConfig)
    spectrogram: SpectrogramOptions = field(default_factory=SpectrogramOptions)
    decode: DecodeConfig = field(default_factory=lambda: GENERATE_DECODE)
    looping: LoopConfig = field(default_factory=LoopConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def validate(self) -> None:
        if not self.sampling.prompt:
            raise ConfigError("prompt: give at least one prompt")
        if self.looping.loop and self.decode.decoder != "griffin_lim":
            raise ConfigError(f"decoder: a loop decodes with circular griffin_lim, got {self.decode.decoder!r}")
        asked, shortest = self.looping.seconds(), min_loop_seconds(self.spectrogram.params)
        if asked is not None and asked < shortest:  # the same for every input: refused before any model loads
            raise ConfigError(f"loop_seconds: a loop lasts at least {shortest:g} s, got {asked:g} s")
