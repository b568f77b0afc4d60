"""The mask creator (SPEC §2) against Pillow's own operations, and the ``riffmask mask`` command."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tone
from PIL import Image, ImageChops, ImageEnhance

from riffmask.cli import main
from riffmask.common.config import ConfigError, build_config
from riffmask.core.codec import audio_to_image, load_image, save_image
from riffmask.core.params import SpectrogramParams
from riffmask.infer.mask import MaskParams, make_mask, mask_steps

PARAMS = SpectrogramParams(num_frequencies=64)


@pytest.fixture(scope="module")
def spectrogram() -> Image.Image:
    audio = tone(440, 0.6) + tone(1800, 0.6, amp=0.1)
    audio[: len(audio) // 3] *= 0.02  # a quiet start and a loud end: a mask with both
    return audio_to_image(audio, PARAMS)


def pillow_reference(image: Image.Image, f: float, b: float, c: float, d: int) -> np.ndarray:
    """SPEC §2 written out with Pillow calls, step by step."""
    grey = image.convert("L")
    out = Image.blend(grey, ImageChops.invert(grey), f)
    out = ImageEnhance.Brightness(out).enhance(b)
    out = ImageEnhance.Contrast(out).enhance(c)
    p = np.asarray(out).astype(int)
    return np.where(p > d, p - d, 0).astype(np.uint8)


@pytest.mark.parametrize(
    "f,b,c,d", [(1.0, 0.05, 200.0, 40), (1.0, 0.05, 200.0, 150), (0.7, 0.5, 3.0, 0), (1.0, 1.0, 1.0, 255)]
)
def test_mask_is_bit_identical_to_pillow(spectrogram, rng, f, b, c, d):
    noise = Image.fromarray(rng.integers(0, 256, (48, 40), dtype=np.uint8), mode="L").convert("RGB")
    for image in (spectrogram, noise):
        mask = make_mask(image, MaskParams(f, b, c, d))
        assert mask.mode == "L" and mask.size == image.size
        np.testing.assert_array_equal(np.asarray(mask), pillow_reference(image, f, b, c, d))


def test_paper_mask_makes_loud_parts_bright(spectrogram):
    grey = np.asarray(spectrogram.convert("L"))
    mask = np.asarray(make_mask(spectrogram))
    # Loud = dark in the spectrogram = bright in the mask; near-binary at contrast 200, then shifted by 40.
    assert mask[grey == grey.min()].min() == 255 - 40
    assert mask[grey > 250].max() == 0
    quiet, loud = mask[:, : mask.shape[1] // 4], mask[:, mask.shape[1] // 2 :]
    assert (quiet > 0).mean() < (loud > 0).mean()


def test_negative_or_none_skips_a_step(spectrogram):
    grey = spectrogram.convert("L")
    skip_all = make_mask(spectrogram, MaskParams(None, -1, None, -5))
    np.testing.assert_array_equal(np.asarray(skip_all), np.asarray(grey))
    only_invert = make_mask(spectrogram, MaskParams(1.0, None, -1, None))
    np.testing.assert_array_equal(np.asarray(only_invert), 255 - np.asarray(grey))
    names = [name for name, _ in mask_steps(spectrogram, MaskParams(1.0, -1, 200.0, 40))]
    assert names == ["input", "invert 1", "contrast 200", "downshift 40"]


def test_mask_keeps_exif_and_downshift_is_validated(spectrogram, tmp_path):
    save_image(make_mask(spectrogram), tmp_path / "m.png")
    assert load_image(tmp_path / "m.png").getexif()[11040] == 64
    with pytest.raises(ConfigError, match="downshift"):
        build_config(MaskParams, ("test", {"downshift": 300}))


def test_mask_command_writes_mask_and_steps_image(spectrogram, tmp_path):
    save_image(spectrogram, tmp_path / "in.png")
    code = main(["mask", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--downshift", "150",
                 "--steps-image", str(tmp_path / "steps.png"), "contrast=100"])
    assert code == 0
    expected = pillow_reference(spectrogram, 1.0, 0.05, 100.0, 150)
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "out.png")), expected)
    steps = Image.open(tmp_path / "steps.png")
    width, height = spectrogram.size
    assert steps.size == (5 * width + 4 * 8, height + 14)
    assert main(["mask", str(tmp_path / "missing.png"), str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()
