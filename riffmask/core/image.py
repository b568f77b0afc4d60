"""The spectrogram image side of the codec: mel magnitude <-> 8-bit PNG with its EXIF (SPEC §1).

Only numpy and Pillow: commands that read or write images without transforming audio (``riffmask
mask``, reports) import this and start without loading torch. :mod:`riffmask.core.codec` re-exports
everything here.
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal

import numpy as np
from PIL import Image

from riffmask.common.errors import RiffmaskError
from riffmask.common.io import atomic_path
from riffmask.core.params import (
    MAX_PIXEL,
    MIN_FRAMES,
    PAPER_DECODE_MAX_VOLUME,
    ExifTags,
    SpectrogramParams,
    invalid_tag,
)

#: The largest max value (EXIF 11080) read: far above any sound's (about 1e5), far below float32 overflow.
MAX_STORED_VALUE = 1e12

Mode = Literal["paper", "riffusion"]


def _as_float32(mel: Any) -> np.ndarray:
    """float32 numpy view of a mel array or CPU tensor (``np.asarray`` reads tensors without torch here)."""
    return np.asarray(mel, dtype=np.float32)


def max_volume_of(mel: Any, mode: Mode = "paper", power: float = 0.25) -> float:
    """The image's white-to-black scale: ``max(S)**power``, rounded up in the paper's mode."""
    top = float(_as_float32(mel).max()) ** power
    if mode == "paper":
        return float(math.ceil(top))
    if mode == "riffusion":
        return top
    raise ValueError(f"unknown spectrogram mode {mode!r}; use 'paper' or 'riffusion'")


def image_from_mel(
    mel: Any,
    params: SpectrogramParams = SpectrogramParams(),
    mode: Mode = "paper",
    max_volume: float | None = None,
) -> Image.Image:
    """8-bit spectrogram image of a mel magnitude: (n_mels, W) mono, or (2, n_mels, W) stereo.

    ``pixel = uint8(255 - S**0.25 * 255 / max_volume)``, low frequencies at the bottom, EXIF holding
    the format and ``max_volume ** 4`` (Riffusion's "max value", so the image decodes exactly).
    """
    s = _as_float32(mel)
    if s.ndim == 3 and s.shape[0] == 1:
        s = s[0]
    stereo = s.ndim == 3
    if s.ndim not in (2, 3) or (stereo and s.shape[0] != 2):
        raise ValueError(f"expected a mel spectrogram (n_mels, W) or (2, n_mels, W), got shape {s.shape}")
    if max_volume is None:
        max_volume = max_volume_of(s, mode, params.power_for_image)
    v = s ** np.float32(params.power_for_image)
    scale = max_volume if max_volume > 0 else 1.0
    pixels = (MAX_PIXEL - v * MAX_PIXEL / scale).astype(np.uint8)
    pixels = pixels[..., ::-1, :]
    if stereo:
        rgb = np.stack([np.zeros_like(pixels[0]), pixels[0], pixels[1]], axis=-1)
    else:
        rgb = np.repeat(pixels[..., None], 3, axis=-1)
    image = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    exif = image.getexif()
    for tag, value in params.to_exif().items():
        exif[tag] = value
    exif[ExifTags.STEREO] = int(stereo)
    exif[ExifTags.MAX_VALUE] = float(max_volume) ** (1.0 / params.power_for_image)
    image.info["exif"] = exif.tobytes()
    return image


def read_exif(image: Image.Image) -> dict[int, object]:
    return dict(image.getexif())


def params_from_image(image: Image.Image) -> SpectrogramParams:
    """The format stored in the image's EXIF, defaults for what is absent; :class:`ImageError` for a value
    the format does not allow."""
    try:
        return SpectrogramParams.from_exif(read_exif(image))
    except ValueError as exc:
        raise ImageError(str(exc)) from None


def stored_max_volume(image: Image.Image, power: float = 0.25) -> float | None:
    """The max volume the image's EXIF stores (as its max value, ``max_volume ** (1 / power)``), else None."""
    value = read_exif(image).get(ExifTags.MAX_VALUE)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0 <= number <= MAX_STORED_VALUE:  # also false for NaN
        raise ImageError(invalid_tag(ExifTags.MAX_VALUE, value, f"a number from 0 to {MAX_STORED_VALUE:g}"))
    return number**power


def mel_from_image(
    image: Image.Image, max_volume: float | None = None
) -> tuple[np.ndarray, SpectrogramParams]:
    """Mel magnitude (n_mels, W), or (2, n_mels, W) for stereo, and the format of an image.

    ``max_volume`` defaults to the one stored in EXIF, else the paper's fixed 50.
    """
    params = params_from_image(image)
    if image.height != params.num_frequencies or image.width < MIN_FRAMES:
        raise ImageError(
            f"a {image.width}x{image.height} px image is not a spectrogram of {params.num_frequencies} mel bands "
            f"(its height) and at least {MIN_FRAMES} frames (its width)"
        )
    if max_volume is None:
        max_volume = stored_max_volume(image, params.power_for_image) or PAPER_DECODE_MAX_VOLUME
    rgb = np.asarray(image.convert("RGB"))[::-1]
    channels = rgb[..., 1:3].transpose(2, 0, 1) if params.stereo else rgb[..., 0]
    levels = (MAX_PIXEL - channels.astype(np.float32)) * np.float32(max_volume / MAX_PIXEL)
    return levels ** np.float32(1.0 / params.power_for_image), params


def save_image(image: Image.Image, path: str | os.PathLike, compress_level: int = 6) -> None:
    """Write a spectrogram PNG with its EXIF, atomically (no half-written file on failure).

    ``compress_level`` 1 encodes about 3x faster than Pillow's default 6 for files a sixth larger.
    """
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG", exif=image.getexif(), compress_level=compress_level)


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open a spectrogram image fully (EXIF included); raises :class:`ImageError` naming the file."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGB", "L"):
                return im.copy()
            if im.mode.startswith("I"):  # 16-bit grey: Pillow's convert would clip it at 255, not scale it
                return with_exif(_grey_from_16_bit(np.asarray(im), path), im)
            return with_exif(im.convert("RGB"), im)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from None


def _grey_from_16_bit(levels: np.ndarray, path: str | os.PathLike) -> Image.Image:
    if levels.min() < 0 or levels.max() > 65535:
        raise ImageError(f"{path}: pixel values beyond 16 bits; save it as an 8- or 16-bit PNG")
    return Image.fromarray(np.round(levels.astype(np.float64) / 257).astype(np.uint8), mode="L")


def with_exif(image: Image.Image, source: Image.Image) -> Image.Image:
    """``image`` carrying ``source``'s spectrogram EXIF (format and max volume), so it decodes the same."""
    image.getexif().update(source.getexif())
    return image


class ImageError(RiffmaskError):
    """An input image that cannot be read."""
