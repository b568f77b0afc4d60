"""``PrepConfig``: every option of ``riffmask prep`` (preset: ``configs/prep/paper.yaml``)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from riffmask.common.config import ConfigError, option
from riffmask.core.params import SpectrogramOptions, SpectrogramParams
from riffmask.data_prep.sources import format_caption


def available_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS tells it, else all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class PrepConfig:
    """Options of ``riffmask prep`` (configs/prep/paper.yaml)."""

    PRESETS: ClassVar[str] = "prep"

    width: int = option(512, help="image width in pixels = clip length in 10 ms frames (512 = 5.11 s)")
    spectrogram: SpectrogramOptions = field(default_factory=SpectrogramOptions)
    hop_seconds: float | None = option(
        None, help="start-to-start distance of clips; unset: clip length minus overlap_seconds"
    )
    overlap_seconds: float = option(0.0, help="overlap of consecutive clips when hop_seconds is not set")
    min_tail_fraction: float = option(
        0.5, help="a last partial clip at least this fraction of a clip long is kept, zero-padded"
    )
    silence_db: float = option(-50.0, help="clips whose RMS level (dBFS) is below this are dropped as near-silent")
    min_sample_rate: int = option(
        22050, help="files recorded below this rate are rejected (the images reach 10 kHz); 0 accepts all"
    )
    caption_template: str = option("{genre}", help="caption of a clip; fields {genre} and {stem} (file name)")
    txt_captions: bool = option(True, help="a song.txt beside song.mp3 gives that file's caption")
    validation_fraction: float = option(0.1, help="share of source files (not clips) held out for validation")
    split_seed: int = option(0, help="seed of the file-level train/validation split")
    png_compress_level: int = option(
        1, help="zlib level of the PNGs (0-9): 1 encodes 3x faster than 6, files a sixth larger"
    )
    num_proc: int | None = option(None, help="worker processes preparing files in parallel (null: one per CPU core)")

    def validate(self) -> None:
        if self.width < 2:
            raise ConfigError(f"width: at least 2 px, got {self.width}")
        if self.hop_seconds is not None and self.overlap_seconds:
            raise ConfigError("set hop_seconds or overlap_seconds, not both")
        if not 0 <= self.overlap_seconds < self.clip_seconds:
            raise ConfigError(f"overlap_seconds must be in [0, {self.clip_seconds:.2f}) (the clip length)")
        if self.hop_samples < 1:
            raise ConfigError("hop_seconds must be positive")
        if not 0 < self.min_tail_fraction <= 1:
            raise ConfigError("min_tail_fraction must be in (0, 1]")
        if not 0 <= self.validation_fraction < 1:
            raise ConfigError("validation_fraction must be in [0, 1)")
        if not 0 <= self.png_compress_level <= 9:
            raise ConfigError("png_compress_level must be 0..9")
        if self.num_proc is not None and self.num_proc < 1:
            raise ConfigError("num_proc must be >= 1 (or null: one per CPU core)")
        try:
            format_caption(self.caption_template, "genre", "stem")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"caption_template {self.caption_template!r}: use only {{genre}} and {{stem}} ({exc})"
            ) from None

    @property
    def workers(self) -> int:
        """Worker processes this run uses: ``num_proc``, else the CPU cores this process may use."""
        return self.num_proc or available_cores()

    @property
    def params(self) -> SpectrogramParams:
        return self.spectrogram.params

    @property
    def clip_samples(self) -> int:
        """Samples per clip: exactly what an image ``width`` pixels wide decodes to."""
        return self.params.samples_for(self.width)

    @property
    def clip_seconds(self) -> float:
        return self.clip_samples / self.params.sample_rate

    @property
    def min_tail_samples(self) -> int:
        """The shortest last clip kept (and so the shortest file that makes one)."""
        return int(self.min_tail_fraction * self.clip_samples)

    @property
    def hop_samples(self) -> int:
        seconds = self.clip_seconds - self.overlap_seconds if self.hop_seconds is None else self.hop_seconds
        return int(round(seconds * self.params.sample_rate))

    def content_settings(self) -> dict[str, Any]:
        """The options that shape the clip files; an output folder keeps the ones it was made with.

        ``min_sample_rate`` is free: it only decides which files are used, and a rerun under another one
        prepares or drops just the files whose verdict it changes.
        """
        free = {"caption_template", "txt_captions", "num_proc", "png_compress_level", "min_sample_rate"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in free}
