"""Seamless loops: the time axis of the whole chain made circular, from the input part to the WAV.

* Input: the part is taken (or tiled) to the loop's length, and the sound that follows the loop's end
  is cross-faded into its head, so that the kept input already runs from its end into its start
  (:func:`loopable`); or the mask releases near the wrap and the model bridges it (``loop_seam``).
* Model: inside :func:`circular_time_padding` every ``Conv2d`` of the VAE, and of the UNet when it
  sees the whole loop at once, pads the image width (time) circularly and the height (frequency) as
  before. A loop wider than one window is denoised as MultiDiffusion windows that wrap around the
  end (:mod:`riffmask.infer.windows`, as diffusers' panorama pipeline does with ``circular_padding``); the
  UNet keeps ordinary borders there, since a window's two ends are not neighbours (the overlaps
  blend them). The patching is undone on exit.
* Decode: Griffin-Lim on a circular STFT (:func:`riffmask.core.decode.griffin_lim.griffin_lim` with
  ``circular=True``), so the waveform is one period of a periodic signal and joins sample-exactly.

Length: the image width must be a multiple of the model's full downscale (the VAE's 8 times the
UNet's own, 64 px for SD 1.x) for the wrap to be exact at every level. The spectrogram is computed
with ``T = round(L / hop)`` frames for a loop of ``L`` samples, stretched in time (per mel band,
pitch untouched) to that width for the model and back to ``T`` frames after it; the last step, from
``T * hop`` to exactly ``L`` samples, is a Fourier resampling by less than half a hop (under 0.25 %
for loops of 2 s and more, a few cents at most).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from riffmask.common.errors import RiffmaskError
from riffmask.core.codec import circular_stft, image_from_mel, linear_from_mel, mel_from_image
from riffmask.core.decode import DecodeConfig
from riffmask.core.decode.griffin_lim import griffin_lim
from riffmask.infer.config import MAX_LOOP_SECONDS, GenerateConfig, min_loop_seconds
from riffmask.infer.mask import make_mask

#: The sound after the loop's end cross-faded into its head (equal power), in seconds.
FADE_SECONDS = 0.25
#: With ``loop_seam`` "release", the mask falls linearly to 0 over this many seconds either side of the wrap.
RELEASE_SECONDS = 0.25


# --------------------------------------------------------------------------- circular padding
def _circular_conv_forward(conv: torch.nn.Conv2d, pad_w: tuple[int, int], pad_h: tuple[int, int]):
    """A ``_conv_forward`` for ``conv`` that pads width circularly and height as the conv would."""
    height_mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    # Symmetric zero padding of the height is left to conv2d itself: one copy of the input, not two.
    in_conv = pad_h[0] if pad_h[0] == pad_h[1] and height_mode == "constant" else 0

    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = F.pad(x, (*pad_w, 0, 0), mode="circular")
        if any(pad_h) and not in_conv:
            x = F.pad(x, (0, 0, *pad_h), mode=height_mode)
        return F.conv2d(x, weight, bias, conv.stride, (in_conv, 0), conv.dilation, conv.groups)

    return forward


@contextlib.contextmanager
def circular_time_padding(*models: torch.nn.Module) -> Iterator[None]:
    """Within the block, every ``Conv2d`` of ``models`` wraps the width around (time is a circle).

    Height (frequency) keeps its own padding: low and high frequencies must not meet. diffusers'
    ``Downsample2D`` without padding (the VAE encoder's) pads right and bottom by one itself; there
    the right column becomes the wrapped first one. Everything is restored on exit, even after an
    error: the modules' attributes are exactly as before, so other pipelines sharing them are
    untouched. Calls from other threads on the same modules during the block see the circular
    padding too.
    """
    from diffusers.models.downsampling import Downsample2D

    patched: list[torch.nn.Conv2d] = []
    released: list[Downsample2D] = []
    try:
        for model in models:
            for module in model.modules():
                if isinstance(module, Downsample2D) and module.use_conv and module.padding == 0:
                    module.conv._conv_forward = _circular_conv_forward(module.conv, (0, 1), (0, 1))
                    patched.append(module.conv)
                    module.padding = 1  # only read as "pad it yourself" (== 0); its conv pads now
                    released.append(module)
            for module in model.modules():
                if isinstance(module, torch.nn.Conv2d) and module not in patched and isinstance(module.padding, tuple):
                    pad_h, pad_w = module.padding
                    if pad_w:
                        module._conv_forward = _circular_conv_forward(module, (pad_w, pad_w), (pad_h, pad_h))
                        patched.append(module)
        yield
    finally:
        for conv in patched:
            del conv._conv_forward  # the class's method again
        for module in released:
            module.padding = 0


# --------------------------------------------------------------------------- length and input
def loop_samples(cfg: GenerateConfig, part_samples: int) -> int:
    """Samples of the loop: ``loop_seconds``, else ``bars`` of ``bpm``, else the part's own length."""
    seconds = cfg.looping.seconds()
    return part_samples if seconds is None else round(seconds * cfg.spectrogram.params.sample_rate)


def loopable(audio: np.ndarray, samples: int, fade: int) -> np.ndarray:
    """``samples`` of ``audio`` that run from their end into their start.

    Taken from the start; a shorter sound is first made periodic itself and tiled. The ``fade``
    samples that follow the cut are cross-faded (equal power) into the head, so that the last sample
    is followed, at the wrap, by the sound that followed it in the source.
    """
    fade = min(fade, samples // 2)
    if len(audio) < samples + fade:
        own = min(fade, len(audio) // 2)
        period = _fade_into_head(audio[: len(audio) - own], audio[len(audio) - own :])
        audio = np.tile(period, math.ceil((samples + fade) / len(period)))
    return _fade_into_head(audio[:samples], audio[samples : samples + fade])


def _fade_into_head(body: np.ndarray, tail: np.ndarray) -> np.ndarray:
    out = np.array(body, dtype=np.float32)
    theta = (np.arange(len(tail)) + 0.5) / max(len(tail), 1) * (np.pi / 2)
    out[: len(tail)] = body[: len(tail)] * np.sin(theta) + tail * np.cos(theta)
    return out


def stretch_columns(values: np.ndarray, width: int) -> np.ndarray:
    """Circular linear interpolation of the last axis to ``width`` columns (a time stretch; pitch kept)."""
    n = values.shape[-1]
    if n == width:
        return values
    pos = np.arange(width) * (n / width)
    left = np.floor(pos).astype(np.int64)
    frac = (pos - left).astype(values.dtype)
    return values[..., left % n] * (1 - frac) + values[..., (left + 1) % n] * frac


def resample_periodic(audio: np.ndarray, samples: int) -> np.ndarray:
    """One period of a periodic signal resampled to ``samples`` (Fourier method: stays periodic)."""
    from scipy.signal import resample

    if audio.shape[-1] == samples:
        return audio
    return resample(audio, samples, axis=-1).astype(np.float32)


def loop_grid(pipe) -> int:
    """Image width multiple for exact circular symmetry: the VAE's downscale times the UNet's."""
    unet_levels = len(pipe.unet.config.block_out_channels) - 1
    return pipe.vae_scale_factor * 2**unet_levels


@dataclass
class LoopInput:
    """The loop's input: ``audio`` of the asked length, its circular spectrogram ``image`` at the
    model's width and the ``mask``; ``periodic`` is ``audio`` resampled to ``frames`` hops."""

    audio: np.ndarray
    periodic: np.ndarray
    frames: int
    image: Image.Image
    mask: Image.Image


def loop_input(audio: np.ndarray, cfg: GenerateConfig, grid: int) -> LoopInput:
    """The part of a sound made into a loop of ``cfg``'s length, as image and mask for the model."""
    params = cfg.spectrogram.params
    rate, hop = params.sample_rate, params.hop_length
    samples = loop_samples(cfg, len(audio))
    frames = round(samples / hop)
    if frames < 2 * params.win_length // hop:
        raise RiffmaskError(f"loop of {samples / rate:.3f} s is too short (at least {min_loop_seconds(params):g} s)")
    if samples > MAX_LOOP_SECONDS * rate:  # the part's own length (asked lengths are checked with the options)
        raise RiffmaskError(
            f"loop of {samples / rate:.1f} s (the processed part) is too long: a loop lasts at most "
            f"{MAX_LOOP_SECONDS:g} s; give --loop-seconds or --duration"
        )
    fade = round(FADE_SECONDS * rate) if cfg.looping.loop_seam in ("crossfade", "both") else 0
    part = loopable(audio, samples, fade)
    periodic = resample_periodic(part, frames * hop)
    mel = circular_stft(periodic, params, mel=True)
    width = max(grid, grid * round(frames / grid))
    image = image_from_mel(stretch_columns(mel.numpy(), width), params, cfg.spectrogram.spectrogram_mode)
    mask = make_mask(image, cfg.mask)
    if cfg.looping.loop_seam in ("release", "both"):
        mask = _release_near_wrap(mask, round(RELEASE_SECONDS * rate / hop * width / frames))
    return LoopInput(part, periodic, frames, image, mask)


def _release_near_wrap(mask: Image.Image, columns: int) -> Image.Image:
    """The mask scaled down linearly to 0 at both ends: the model, not the input, makes the wrap."""
    grey = np.asarray(mask, dtype=np.float32)
    width = grey.shape[1]
    distance = np.minimum(np.arange(width) + 0.5, width - np.arange(width) - 0.5)
    scale = np.clip(distance / max(columns, 1), 0.0, 1.0)
    return Image.fromarray((grey * scale).round().astype(np.uint8), mode="L")


def decode_loop(images: list[Image.Image], source: LoopInput, cfg: DecodeConfig) -> list[np.ndarray]:
    """Audio of generated loop images, each exactly ``len(source.audio)`` samples and periodic."""
    mels, params = zip(*(mel_from_image(im) for im in images), strict=True)
    mel = stretch_columns(np.stack(mels), source.frames)
    magnitude = linear_from_mel(mel, params[0])
    phase: torch.Tensor | str = cfg.phase_start
    if cfg.phase_start == "input":
        phase = torch.angle(circular_stft(source.periodic, params[0])).expand_as(magnitude)
    audio = griffin_lim(magnitude, params[0], cfg.resolved_iterations, init_phase=phase, circular=True).numpy()
    return list(resample_periodic(audio, len(source.audio)))
