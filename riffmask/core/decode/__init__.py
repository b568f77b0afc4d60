"""The decoder seam: a mel spectrogram (or its image) back to audio, by a decoder chosen by name.

One :class:`DecodeConfig` (decoder, iterations, phase start) is shared by every command that decodes:
``riffmask audio``, ``generate``, training validation, ``eval`` and ``sweep``. A decoder is a function
``(mel, params, cfg, known_audio, seed) -> audio`` registered under a name in :data:`DECODERS`; a new
method (e.g. a neural vocoder) is one module beside :mod:`.griffin_lim` plus one
:func:`register_decoder` call, and every command can select it with ``decoder=NAME``.

Phase starts (one vocabulary everywhere):

- ``pghi``: the phase that the magnitudes' own slopes predict (Phase Gradient Heap Integration);
  10 iterations from it land closer to the target than the paper's 32 from random phases.
- ``random``: seeded random phases, the paper's torchaudio decoding (32 iterations).
- ``input``: the phase of a known sound (generation starts from the input it transformed); 6 iterations.

``iterations`` left empty means the start's own default: :data:`DEFAULT_ITERATIONS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from riffmask.common.config import ConfigError, option

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from riffmask.core.params import SpectrogramParams

PhaseStart = Literal["pghi", "random", "input"]
#: Iterations per phase start when none are given: a good start needs few, a random one the paper's 32.
#: From the sound's own phase, 6 already beat 32 from a random start (bench/results/codec.json).
DEFAULT_ITERATIONS: dict[str, int] = {"pghi": 10, "input": 6, "random": 32}

Decoder = Callable[..., "np.ndarray"]
DECODERS: dict[str, Decoder] = {}


@dataclass(frozen=True)
class DecodeConfig:
    """How a spectrogram becomes audio again (``decode.*`` keys; also plain ``iterations=``...)."""

    PRESETS: ClassVar[str] = "audio"

    decoder: str = option("griffin_lim", help="decoder by name (griffin_lim)")
    iterations: int | None = option(
        None, help="decoder iterations (null: the phase start's default: pghi 10, input 6, random 32)"
    )
    phase_start: PhaseStart = option(
        "pghi", help="Griffin-Lim start: pghi (predicted from the magnitudes), random (the paper's) or input "
        "(the phase of the known original sound)"
    )

    def validate(self) -> None:
        if self.decoder not in _registry():
            raise ConfigError(f"decoder: unknown decoder {self.decoder!r}; known: {', '.join(sorted(DECODERS))}")
        if self.iterations is not None and self.iterations < 0:
            raise ConfigError(f"iterations: must be >= 0, got {self.iterations}")

    @property
    def resolved_iterations(self) -> int:
        return DEFAULT_ITERATIONS[self.phase_start] if self.iterations is None else self.iterations


def register_decoder(name: str, decoder: Decoder) -> None:
    """Make ``decoder`` selectable as ``decoder=NAME`` in every command that decodes."""
    DECODERS[name] = decoder


def _registry() -> dict[str, Decoder]:
    if not DECODERS:  # the built-in decoders register on first use, keeping `import` of configs light
        from riffmask.core.decode import griffin_lim

        register_decoder("griffin_lim", griffin_lim.decode)
    return DECODERS


def decode(
    mel: np.ndarray,
    params: SpectrogramParams,
    cfg: DecodeConfig | None = None,
    known_audio: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Audio of mel magnitudes (…, n_mels, frames), ``(frames - 1) * hop`` samples per spectrogram.

    ``known_audio`` is the original sound (one per spectrogram, or one for all) for ``phase_start=input``.
    """
    cfg = cfg or DecodeConfig()
    cfg.validate()
    if cfg.phase_start == "input" and known_audio is None:
        raise ConfigError("phase_start: 'input' needs the original sound; use pghi or random to decode an image alone")
    return _registry()[cfg.decoder](mel, params, cfg, known_audio if cfg.phase_start == "input" else None, seed)


def image_to_audio(
    image: Image.Image,
    cfg: DecodeConfig | None = None,
    known_audio: np.ndarray | None = None,
    max_volume: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Audio (samples,) or (2, samples) of a spectrogram image (its EXIF gives the format and volume)."""
    from riffmask.core.image import mel_from_image

    mel, params = mel_from_image(image, max_volume)
    return decode(mel, params, cfg, known_audio, seed)
