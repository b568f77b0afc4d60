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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from riffmask.common.errors import RiffmaskError
from riffmask.core.audio import peak_normalize
from riffmask.core.codec import audio_to_image, mel_from_image, with_exif
from riffmask.core.decode import DecodeConfig, decode
from riffmask.core.params import SpectrogramParams
from riffmask.infer.config import GenerateConfig
from riffmask.infer.loop import LoopInput, decode_loop, loop_grid, loop_input
from riffmask.infer.mask import make_mask
from riffmask.infer.windows import window_joins

if TYPE_CHECKING:
    import torch


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
    #: The denoised latent (scaled, float32, CPU) that ``output_image`` was decoded from. What the model
    #: made, before the VAE: the genre rate of ``riffmask sweep`` classifies it, since encoding the
    #: decoded image again does not give it back (with the tiny model's random VAE, not even nearly).
    latent: torch.Tensor | None = None


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


def input_spectrogram(audio: np.ndarray, cfg: GenerateConfig) -> tuple[np.ndarray, Image.Image]:
    """(padded audio, its spectrogram image): the input exactly as :func:`generate_sound` feeds it to
    the pipeline, the sound padded with silence to :func:`padded_width`."""
    if audio.size == 0:
        raise RiffmaskError("no audio to process")
    params = cfg.spectrogram.params
    padded = _pad_to_width(audio, padded_width(len(audio), cfg), params)
    return padded, audio_to_image(padded, params, cfg.spectrogram.spectrogram_mode)


def generate_sound(
    pipe, audio: np.ndarray, cfg: GenerateConfig, on_step: Callable[[int, int], None] | None = None
) -> list[Generation]:
    """Music from mono 44.1 kHz ``audio`` (already cut to the part to process), one per ``cfg.sampling.items()``.

    All items go through the UNet as one batch. Used by ``riffmask generate``, the sweep, training
    validation and the app. ``on_step(steps done, steps in the run)`` is called after each
    denoising step; an exception it raises stops the run there (the app's Cancel).
    """
    return generate_sounds(pipe, [audio], cfg, on_step)[0]


def generate_sounds(
    pipe, sounds: list[np.ndarray], cfg: GenerateConfig, on_step: Callable[[int, int], None] | None = None
) -> list[list[Generation]]:
    """:func:`generate_sound` of several sounds, their items sent through the UNet together.

    Sounds whose images are equally wide share one pipeline call (their windows batched, each item
    with its own generator, so every result equals the one made alone, to float tolerance); sounds of
    other widths get a call per width, never padding one sound to another's length.
    """
    if any(audio.size == 0 for audio in sounds):
        raise RiffmaskError("no audio to process")
    prepared = [_prepare(pipe, audio, cfg) for audio in sounds]
    widths = [p.image.width for p in prepared]
    results: list[list[Generation]] = [[] for _ in sounds]
    for width in dict.fromkeys(widths):
        group = [k for k, w in enumerate(widths) if w == width]
        made = _generate_same_width(pipe, [prepared[k] for k in group], cfg, on_step)
        for k, generations in zip(group, made, strict=True):
            results[k] = generations
    return results


@dataclass
class _Prepared:
    """One sound ready for the pipeline: what the result stands for, its image and mask, how it decodes."""

    audio: np.ndarray  # the input part (for a loop: the part made loop-length)
    image: Image.Image
    mask: Image.Image
    padded: np.ndarray | None = None  # the padded sound whose phase starts decoding
    loop: LoopInput | None = None


def _prepare(pipe, audio: np.ndarray, cfg: GenerateConfig) -> _Prepared:
    if cfg.looping.loop:
        source = loop_input(audio, cfg, loop_grid(pipe))
        return _Prepared(source.audio, source.image, source.mask, loop=source)
    padded, image = input_spectrogram(audio, cfg)
    return _Prepared(audio, image, make_mask(image, cfg.mask), padded=padded)


def _generate_same_width(
    pipe, prepared: list[_Prepared], cfg: GenerateConfig, on_step: Callable[[int, int], None] | None
) -> list[list[Generation]]:
    """One pipeline call for sounds whose images are equally wide: one item per (sound, prompt, seed)."""
    import torch

    sampling, loop = cfg.sampling, cfg.looping.loop
    items = sampling.items()
    one = len(prepared) == 1  # one image for all items: encoded once, as the paper's single-sound call
    width = prepared[0].image.width
    wide = width > sampling.window
    # Wide images: the VAE encodes/decodes in blended tiles (its attention would not fit otherwise);
    # a loop's VAE must see the whole circle instead.
    (pipe.vae.enable_tiling if wide and not loop else pipe.vae.disable_tiling)()
    final: dict[str, torch.Tensor] = {}
    started = time.perf_counter()
    result = pipe(
        prompt=[p for p, _ in items] * len(prepared),
        image=prepared[0].image if one else [p.image for p in prepared for _ in items],
        mask_image=prepared[0].mask if one else [p.mask for p in prepared for _ in items],
        strength=sampling.strength,
        num_inference_steps=sampling.steps,
        guidance_scale=sampling.guidance,
        negative_prompt=[sampling.negative_prompt] * len(items) * len(prepared) if sampling.negative_prompt else None,
        generator=[torch.Generator().manual_seed(s) for _ in prepared for _, s in items],
        window_width=sampling.window if wide else None,
        window_overlap=sampling.overlap,
        windows_per_batch=sampling.windows_per_batch,
        loop=loop,
        callback_on_step_end=_step_callback(final, on_step),
        output_type="pil",
    ).images
    model_seconds = (time.perf_counter() - started) / len(result)
    sample_rate = cfg.spectrogram.params.sample_rate
    out = []
    for k, p in enumerate(prepared):
        outputs = [with_exif(im.convert("RGB"), p.image) for im in result[k * len(items) : (k + 1) * len(items)]]
        if loop:
            music = decode_loop(outputs, p.loop, cfg.decode)
        else:
            music = decode_images(outputs, cfg.decode, known_audio=p.padded)
        joins = _join_seconds(width, pipe.vae_scale_factor, cfg, len(p.audio) / sample_rate)
        out.append([
            Generation(s_p, s, p.image, p.mask, output, p.audio, peak_normalize(_fit(m, len(p.audio))), model_seconds,
                       joins, latent)
            for (s_p, s), output, m, latent in zip(items, outputs, music,
                                                   final["latents"][k * len(items) : (k + 1) * len(items)], strict=True)
        ])  # fmt: skip
    return out


def _step_callback(final: dict, on_step: Callable[[int, int], None] | None):
    """A diffusers ``callback_on_step_end`` that keeps the last step's latents in ``final["latents"]``
    and reports (steps done, steps in this run) to ``on_step``."""

    def callback(pipe, i: int, t, tensors: dict) -> dict:
        if i + 1 == pipe.num_timesteps:
            final["latents"] = tensors["latents"].detach().float().cpu()
        if on_step is not None:
            on_step(i + 1, pipe.num_timesteps)
        return {}

    return callback


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
