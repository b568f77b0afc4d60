"""SSIM and chroma similarity between an input and an output spectrogram, exactly as SPEC §4.

* SSIM: ``skimage.metrics.structural_similarity`` of the two 8-bit grey images, ``data_range=255``,
  default window.
* Chroma: ``librosa.feature.chroma_cens(y, sr=44100)`` of the Griffin-Lim reconstructions of both
  images, flattened, cosine (0 when either is all zero). Both images are decoded the same way: the
  paper's fixed ``max_volume = 50`` (whatever their EXIF says), 32 iterations from the same seeded
  random start phase (the paper's torchaudio path), so that differences come from the pictures alone.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from riffmask.core.decode import DecodeConfig, image_to_audio
from riffmask.core.params import PAPER_DECODE_MAX_VOLUME

SAMPLE_RATE = 44100
#: The paper's decoding for chroma: 32 Griffin-Lim iterations from a seeded random phase.
PAPER_DECODE = DecodeConfig(phase_start="random")


def grey(image: Image.Image) -> np.ndarray:
    """The image as 8-bit grey (for Riffusion's grey RGB images this is the R channel exactly)."""
    return np.asarray(image.convert("L"))


def ssim(input_image: Image.Image, output_image: Image.Image) -> float:
    """Structural similarity of two equally sized spectrogram images (8-bit grey, data range 255)."""
    from skimage.metrics import structural_similarity

    a, b = grey(input_image), grey(output_image)
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape[::-1]} vs {b.shape[::-1]} (width x height)")
    return float(structural_similarity(a, b, data_range=255))


def decode(image: Image.Image, cfg: DecodeConfig = PAPER_DECODE, seed: int = 0) -> np.ndarray:
    """Audio of a spectrogram image at the paper's fixed volume, decoded the way the paper does for every
    image by default (random start phase, as torchaudio's GriffinLim, 32 iterations)."""
    return image_to_audio(image, cfg, max_volume=PAPER_DECODE_MAX_VOLUME, seed=seed)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two flattened arrays; 0 when either is all zero."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 0.0 if na == 0.0 or nb == 0.0 else float(a @ b / (na * nb))


def chroma(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``librosa.feature.chroma_cens`` of a sound (12 x frames)."""
    import librosa

    return librosa.feature.chroma_cens(y=np.asarray(audio, dtype=np.float32), sr=sr)


def chroma_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two chromagrams of the same shape (same-length sounds)."""
    if a.shape != b.shape:
        raise ValueError(f"sounds differ in length: chromagrams of {a.shape[-1]} vs {b.shape[-1]} frames")
    return cosine(a, b)


def chroma_similarity(input_audio: np.ndarray, output_audio: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Cosine of the flattened CENS chromagrams of two equally long sounds."""
    return chroma_cosine(chroma(input_audio, sr), chroma(output_audio, sr))


def image_chroma(image: Image.Image, cfg: DecodeConfig = PAPER_DECODE, seed: int = 0) -> np.ndarray:
    """Chromagram of a spectrogram image's reconstruction (reusable against many outputs)."""
    return chroma(decode(image, cfg, seed))


def pair_metrics(
    input_image: Image.Image,
    output_image: Image.Image,
    cfg: DecodeConfig = PAPER_DECODE,
    seed: int = 0,
) -> dict[str, float]:
    """``{"ssim": ..., "chroma": ...}`` of one input/output spectrogram pair (SPEC §4)."""
    score = ssim(input_image, output_image)
    a, b = (image_chroma(im, cfg, seed) for im in (input_image, output_image))
    similarity = chroma_cosine(a, b)
    return {"ssim": score, "chroma": similarity}
