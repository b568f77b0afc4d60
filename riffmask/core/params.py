"""The Riffusion v1 spectrogram image format, as one frozen dataclass (SPEC §1)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Literal

from riffmask.common.config import ConfigError, option


class ExifTags:
    """Integer EXIF tags under which Riffusion stores its format parameters."""

    SAMPLE_RATE = 11000
    STEREO = 11005
    STEP_MS = 11010
    WINDOW_MS = 11020
    PADDED_MS = 11030
    NUM_FREQUENCIES = 11040
    MIN_HZ = 11050
    MAX_HZ = 11060
    POWER_FOR_IMAGE = 11070
    MAX_VALUE = 11080


@dataclass(frozen=True)
class SpectrogramParams:
    """Everything that defines the spectrogram image format; all sizes derive from it.

    The defaults are Riffusion v1: 44.1 kHz, 10 ms hop, 100 ms Hann window zero-padded to 400 ms,
    512 HTK mel bands from 0 to 10 kHz, magnitudes raised to 0.25 for the image.
    """

    sample_rate: int = 44100
    stereo: bool = False
    step_ms: int = 10
    window_ms: int = 100
    padded_ms: int = 400
    num_frequencies: int = 512
    min_hz: float = 0.0
    max_hz: float = 10000.0
    power_for_image: float = 0.25

    @property
    def hop_length(self) -> int:
        return int(self.sample_rate * self.step_ms / 1000)

    @property
    def win_length(self) -> int:
        return int(self.sample_rate * self.window_ms / 1000)

    @property
    def n_fft(self) -> int:
        return int(self.sample_rate * self.padded_ms / 1000)

    @property
    def n_stft(self) -> int:
        """Number of linear-frequency bins of the one-sided STFT."""
        return self.n_fft // 2 + 1

    def frames_for(self, num_samples: int) -> int:
        """Width in pixels of the image of a clip of ``num_samples`` (centred framing)."""
        return 1 + num_samples // self.hop_length

    @property
    def min_samples(self) -> int:
        """The shortest clip with an image of :data:`MIN_FRAMES` (one hop)."""
        return self.samples_for(MIN_FRAMES)

    def samples_for(self, width: int) -> int:
        """Samples of audio that an image ``width`` pixels wide decodes to."""
        return (width - 1) * self.hop_length

    def seconds_for(self, width: int) -> float:
        return width * self.step_ms / 1000

    def to_exif(self) -> dict[int, float | int]:
        return {
            ExifTags.SAMPLE_RATE: self.sample_rate,
            ExifTags.STEREO: int(self.stereo),
            ExifTags.STEP_MS: self.step_ms,
            ExifTags.WINDOW_MS: self.window_ms,
            ExifTags.PADDED_MS: self.padded_ms,
            ExifTags.NUM_FREQUENCIES: self.num_frequencies,
            ExifTags.MIN_HZ: self.min_hz,
            ExifTags.MAX_HZ: self.max_hz,
            ExifTags.POWER_FOR_IMAGE: self.power_for_image,
        }

    @classmethod
    def from_exif(cls, exif: dict[int, object]) -> SpectrogramParams:
        """Parameters stored in an image's EXIF; tags that are absent keep their defaults.

        Raises ValueError naming the tag for a value the format does not allow (an image from elsewhere
        could otherwise divide by zero or ask for terabytes).
        """
        kwargs = {}
        for f in fields(cls):
            tag = _TAG_OF[f.name]
            if tag in exif:
                kind = {"stereo": bool, "min_hz": float, "max_hz": float, "power_for_image": float}.get(f.name, int)
                try:
                    number = float(exif[tag])
                except (TypeError, ValueError):
                    number = math.nan
                if not math.isfinite(number):
                    raise ValueError(invalid_tag(tag, exif[tag], "a finite number"))
                kwargs[f.name] = kind(number)
        params = cls(**kwargs)
        for name, (allowed, rule) in params._rules().items():
            if not allowed:
                raise ValueError(invalid_tag(_TAG_OF[name], exif.get(_TAG_OF[name], getattr(params, name)), rule))
        return params

    def _rules(self) -> dict[str, tuple[bool, str]]:
        """Each field's check, in the order reported: whether it holds, and what the format allows."""
        return {
            "sample_rate": (8000 <= self.sample_rate <= 384000, "8000 to 384000 Hz"),
            "step_ms": (1 <= self.step_ms <= 1000, "1 to 1000 ms"),
            "window_ms": (self.step_ms <= self.window_ms <= 1000, "step_ms to 1000 ms"),
            "padded_ms": (self.window_ms <= self.padded_ms <= 1000, "window_ms to 1000 ms"),
            "num_frequencies": (self.num_frequencies >= 1, "at least 1"),
            "min_hz": (0 <= self.min_hz < self.max_hz, "0 Hz to below max_hz"),
            "max_hz": (self.max_hz <= self.sample_rate / 2, "at most sample_rate / 2"),
            "power_for_image": (0 < self.power_for_image <= 1, "above 0, at most 1"),
        }

    def as_dict(self) -> dict:
        return asdict(self)


_TAG_OF = {
    "sample_rate": ExifTags.SAMPLE_RATE,
    "stereo": ExifTags.STEREO,
    "step_ms": ExifTags.STEP_MS,
    "window_ms": ExifTags.WINDOW_MS,
    "padded_ms": ExifTags.PADDED_MS,
    "num_frequencies": ExifTags.NUM_FREQUENCIES,
    "min_hz": ExifTags.MIN_HZ,
    "max_hz": ExifTags.MAX_HZ,
    "power_for_image": ExifTags.POWER_FOR_IMAGE,
    "max_value": ExifTags.MAX_VALUE,
}


def invalid_tag(tag: int, value: object, rule: str) -> str:
    """The message for an EXIF value the format does not allow, naming the tag, its field and the rule."""
    name = next(name for name, t in _TAG_OF.items() if t == tag)
    return f"EXIF tag {tag} ({name}) = {value!r} is not a valid spectrogram format ({rule})"


#: The narrowest image ``riffmask audio`` decodes: two frames (one hop of audio).
MIN_FRAMES = 2
#: The paper takes the first 225 500 samples (5.11 s) of an input: exactly 512 frames.
PAPER_CLIP_SAMPLES = 225_500
#: Grey level range of the 8-bit image.
MAX_PIXEL = 255
#: The paper decodes every image with this max volume (only loudness changes; output is normalised).
PAPER_DECODE_MAX_VOLUME = 50.0


@dataclass(frozen=True)
class SpectrogramOptions:
    """The user-facing format options shared by ``riffmask prep`` and ``riffmask generate`` (``spectrogram.*``)."""

    num_frequencies: int = option(512, help="mel bands = image height (the model's training size)")
    spectrogram_mode: Literal["paper", "riffusion"] = option(
        "paper", help="pixel scaling: paper (max volume rounded up per clip) or riffusion (not rounded)"
    )

    def validate(self) -> None:
        if self.num_frequencies < 8:
            raise ConfigError(f"num_frequencies: at least 8 mel bands, got {self.num_frequencies}")

    @property
    def params(self) -> SpectrogramParams:
        return SpectrogramParams(num_frequencies=self.num_frequencies)
