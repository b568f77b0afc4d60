"""One sound in, music out: spectrogram + mask, the masked pipeline, decoding back to audio.

Any length: the part of a sound to process (``start``, ``duration``, capped at ``max_seconds``) becomes
one spectrogram image, padded with silence to at least one window (512 px = 5.11 s) and to a width
the VAE accepts. Images wider than a window are denoised by :class:`MaskedRiffusionPipeline` as
overlapping windows blended in latent space at every step (MultiDiffusion), so the whole sound is
one latent and there are no seams or rhythm breaks to hide; the VAE encodes and decodes wide images
in blended tiles. A sound of exactly 225 500 samples gives the paper's single 512-px image, draw
for draw. The output is trimmed back to the input's length and peak-normalised. With ``loop`` the
part becomes a seamless loop of the asked length instead (:mod:`riffmask.infer.loop`).

Loading is :mod:`riffmask.infer.load`; files, folders and the output layout are :mod:`riffmask.infer.files`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from riffmask.common.errors import RiffmaskError
from riffmask.core.audio import peak_normalize
from riffmask.core.codec import audio_to_image, mel_from_image, with_exif
from riffmask.core.decode import DecodeConfig, decode
from riffmask.core.params import SpectrogramParams
from riffmask.infer.config import GenerateConfig
from riffmask.infer.loop import decode_loop, loop_grid, loop_input, window_joins
from riffmask.infer.mask import make_mask


@dataclass
class Generation:
    """One result: the images, the processed input part and the music, in memory."""

    prompt: str
    seed: int
    input_image: Image.Image
    mask_image: Image.Image
    output_image: Image.Image
    input_audio: np.ndarray
    audio: np.ndarray
    model_seconds: float = 0.0  # this item's share of the pipeline call (text encoder, UNet, VAE)
    joins: list[float] = field(default_factory=list)  # seconds where MultiDiffusion windows meet


def padded_width(num_samples: int, cfg: GenerateConfig) -> int:
    """Image width for a sound: its frames, at least one window, rounded up to the VAE's multiple of 8."""
    frames = cfg.spectrogram.params.frames_for(num_samples)
    return max(cfg.sampling.window, 8 * math.ceil(frames / 8))


def _pad_to_width(audio: np.ndarray, width: int, params: SpectrogramParams) -> np.ndarray:
    """Silence appended so that the image is exactly ``width`` frames (never cut)."""
    target = max(len(audio), params.samples_for(width))
    return np.pad(audio, (0, target - len(audio)))


def _fit(audio: np.ndarray, length: int) -> np.ndarray:
    return audio[:length] if len(audio) >= length else np.pad(audio, (0, length - len(audio)))


def generate_sound(pipe, audio: np.ndarray, cfg: GenerateConfig) -> list[Generation]:
    """Music from mono 44.1 kHz ``audio`` (already cut to the part to process), one per ``cfg.sampling.items()``.

    All items go through the UNet as one batch. Used by ``riffmask generate``, the sweep and
    training validation.
    """
    import torch

    if audio.size == 0:
        raise RiffmaskError("no audio to process")
    params = cfg.spectrogram.params
    if cfg.looping.loop:
        source = loop_input(audio, cfg, loop_grid(pipe))
        image, mask, audio = source.image, source.mask, source.audio
        width = image.width
    else:
        width = padded_width(len(audio), cfg)
        padded = _pad_to_width(audio, width, params)
        image = audio_to_image(padded, params, cfg.spectrogram.spectrogram_mode)
        mask = make_mask(image, cfg.mask)
    items = cfg.sampling.items()
    wide = width > cfg.sampling.window
    # Wide images: the VAE encodes/decodes in blended tiles (its attention would not fit otherwise);
    # a loop's VAE must see the whole circle instead.
    (pipe.vae.enable_tiling if wide and not cfg.looping.loop else pipe.vae.disable_tiling)()
    started = time.perf_counter()
    result = pipe(
        prompt=[p for p, _ in items],
        image=image,
        mask_image=mask,
        strength=cfg.sampling.strength,
        num_inference_steps=cfg.sampling.steps,
        guidance_scale=cfg.sampling.guidance,
        negative_prompt=[cfg.sampling.negative_prompt] * len(items) if cfg.sampling.negative_prompt else None,
        generator=[torch.Generator().manual_seed(s) for _, s in items],
        window_width=cfg.sampling.window if wide else None,
        window_overlap=cfg.sampling.overlap,
        windows_per_batch=cfg.sampling.windows_per_batch,
        loop=cfg.looping.loop,
        output_type="pil",
    ).images
    model_seconds = (time.perf_counter() - started) / len(items)
    outputs = [with_exif(im.convert("RGB"), image) for im in result]
    if cfg.looping.loop:
        music = decode_loop(outputs, source, cfg.decode)
    else:
        music = decode_images(outputs, cfg.decode, known_audio=padded)
    joins = _join_seconds(width, pipe.vae_scale_factor, cfg, len(audio) / params.sample_rate)
    return [
        Generation(p, s, image, mask, out, audio, peak_normalize(_fit(m, len(audio))), model_seconds, joins)
        for (p, s), out, m in zip(items, outputs, music, strict=True)
    ]


def _join_seconds(width: int, scale: int, cfg: GenerateConfig, seconds: float) -> list[float]:
    """Seconds of the output where neighbouring windows meet (a loop's image is stretched to its length)."""
    window, overlap = cfg.sampling.window // scale, cfg.sampling.overlap // scale
    columns = window_joins(width // scale, window, overlap, cfg.looping.loop)
    px_seconds = seconds / width if cfg.looping.loop else cfg.spectrogram.params.step_ms / 1000
    return [round(c * scale * px_seconds, 4) for c in columns if c * scale * px_seconds < seconds]


def decode_images(
    images: list[Image.Image], cfg: DecodeConfig, known_audio: np.ndarray | None = None
) -> list[np.ndarray]:
    """Audio of same-format spectrogram images, decoded together as one batch.

    ``known_audio``: the sound they were made from, used when ``cfg.phase_start`` is ``input``.
    """
    mels, params = zip(*(mel_from_image(im) for im in images), strict=True)
    return list(decode(np.stack(mels), params[0], cfg, known_audio if cfg.phase_start == "input" else None))
