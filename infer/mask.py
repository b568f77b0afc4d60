"""The mask creator (SPEC §2): loud parts of the input spectrogram become bright in the mask.

Four steps on the 8-bit grey image, each skipped when its value is negative or ``None``:
invert (``Image.blend`` with ``ImageChops.invert``), brightness and contrast (``ImageEnhance``),
then downshift ``m = p - d if p > d else 0``. The Pillow operations are called directly, so the
result is bit-identical to the paper's notebook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageEnhance

from riffmask.common.config import ConfigError, option


@dataclass(frozen=True)
class MaskParams:
    """Knobs of the mask creator; a negative value or ``None`` skips that step."""

    PRESETS: ClassVar[str] = "mask"

    invert: float | None = option(1.0, help="blend factor towards the inverted image (1: fully inverted)")
    brightness: float | None = option(0.05, help="ImageEnhance.Brightness factor (low: only the loudest stay)")
    contrast: float | None = option(200.0, help="ImageEnhance.Contrast factor (200: nearly binary)")
    downshift: int | None = option(40, help="grey level subtracted, floored at 0 (0: keep loud parts to the end)")

    def validate(self) -> None:
        if self.invert is not None and self.invert > 1:
            raise ConfigError(f"invert: a blend factor 0-1 (or negative to skip), got {self.invert}")
        if self.downshift is not None and self.downshift > 255:
            raise ConfigError(f"downshift: a grey level 0-255 (or negative to skip), got {self.downshift}")


def _active(value: float | None) -> bool:
    return value is not None and value >= 0


def downshift(image: Image.Image, level: int) -> Image.Image:
    """``p - level`` where ``p > level``, else 0, on an 8-bit grey image."""
    pixels = np.asarray(image, dtype=np.int16)
    return Image.fromarray(np.where(pixels > level, pixels - level, 0).astype(np.uint8), mode="L")


def mask_steps(image: Image.Image, params: MaskParams = MaskParams()) -> list[tuple[str, Image.Image]]:
    """Every intermediate image, named: ``[("input", grey), ("invert 1.0", ...), ...]``; last is the mask."""
    grey = image.convert("L")
    steps = [("input", grey)]
    current = grey
    if _active(params.invert):
        current = Image.blend(current, ImageChops.invert(current), params.invert)
        steps.append((f"invert {params.invert:g}", current))
    if _active(params.brightness):
        current = ImageEnhance.Brightness(current).enhance(params.brightness)
        steps.append((f"brightness {params.brightness:g}", current))
    if _active(params.contrast):
        current = ImageEnhance.Contrast(current).enhance(params.contrast)
        steps.append((f"contrast {params.contrast:g}", current))
    if _active(params.downshift):
        current = downshift(current, int(params.downshift))
        steps.append((f"downshift {params.downshift}", current))
    return steps


def make_mask(image: Image.Image, params: MaskParams = MaskParams()) -> Image.Image:
    """The mask ("L", same size) of a spectrogram image, carrying the image's EXIF."""
    mask = mask_steps(image, params)[-1][1].copy()
    exif = mask.getexif()
    exif.update(image.getexif())
    return mask


def steps_image(steps: list[tuple[str, Image.Image]], gap: int = 8, label_height: int = 14) -> Image.Image:
    """The steps side by side, each labelled above, so a user sees what each knob does."""
    width, height = steps[0][1].size
    sheet = Image.new("L", (len(steps) * (width + gap) - gap, height + label_height), 255)
    draw = ImageDraw.Draw(sheet)
    for k, (name, step) in enumerate(steps):
        x = k * (width + gap)
        draw.text((x + 2, 1), name, fill=0)
        sheet.paste(step, (x, label_height))
    return sheet
