"""The spectrogram codec: audio <-> mel magnitude <-> 8-bit image, exactly as SPEC §1.

The forward path is torch STFT + a sparse HTK mel filter bank (librosa's, equal to torchaudio's
``MelScale(norm=None, mel_scale="htk")``). The inverse path solves the mel -> linear least squares
with a precomputed pseudo-inverse (:func:`linear_from_mel`); phase reconstruction is a decoder of
:mod:`riffmask.core.decode`.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from typing import Literal

import librosa
import numpy as np
import torch
from PIL import Image

from riffmask.common.errors import RiffmaskError
from riffmask.common.io import atomic_path
from riffmask.core.params import MAX_PIXEL, PAPER_DECODE_MAX_VOLUME, ExifTags, SpectrogramParams

Mode = Literal["paper", "riffusion"]
ArrayLike = np.ndarray | torch.Tensor


# --------------------------------------------------------------------------- filter banks
@functools.lru_cache(maxsize=8)
def mel_filterbank(params: SpectrogramParams) -> torch.Tensor:
    """Dense (n_stft, n_mels) float32 filter bank, laid out like torchaudio's ``MelScale.fb``."""
    fb = librosa.filters.mel(
        sr=params.sample_rate,
        n_fft=params.n_fft,
        n_mels=params.num_frequencies,
        fmin=params.min_hz,
        fmax=params.max_hz,
        htk=True,
        norm=None,
        dtype=np.float64,
    )
    return torch.from_numpy(fb.T.astype(np.float32)).contiguous()


@functools.lru_cache(maxsize=8)
def _band(params: SpectrogramParams) -> tuple[int, torch.Tensor]:
    """Bins above the last non-zero filter row never contribute: (that many bins, sparse fb^T)."""
    fb = mel_filterbank(params)
    used = int(torch.nonzero(fb.abs().sum(dim=1)).max()) + 1
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        sparse = fb[:used].T.contiguous().to_sparse_csr()  # (n_mels, used), two non-zeros per column
    return used, sparse


@functools.lru_cache(maxsize=8)
def _pseudo_inverse(params: SpectrogramParams) -> torch.Tensor:
    """(used, n_mels) minimum-norm least-squares inverse of the bank, as torch.linalg.lstsq's "gels".

    The bank has full row rank, so pinv(A) = A^T (A A^T)^-1 with a small, well-conditioned
    (n_mels x n_mels) system: milliseconds, where a general SVD pseudo-inverse takes seconds.
    """
    used = _band(params)[0]
    a = mel_filterbank(params)[:used].T.double()
    return torch.linalg.solve(a @ a.T, a).T.float().contiguous()


# --------------------------------------------------------------------------- audio -> mel
def _as_tensor(audio: ArrayLike) -> torch.Tensor:
    t = torch.as_tensor(audio)
    return t.float() if t.dtype != torch.float32 else t


def hann_window(params: SpectrogramParams) -> torch.Tensor:
    return torch.hann_window(params.win_length, periodic=True)


def _reflect_pad(audio: torch.Tensor, pad: int) -> torch.Tensor:
    if audio.shape[-1] > pad:
        flat = audio.reshape(-1, 1, audio.shape[-1])
        return torch.nn.functional.pad(flat, (pad, pad), mode="reflect").reshape(*audio.shape[:-1], -1)
    # torch's reflect padding needs more samples than the pad; numpy reflects repeatedly.
    widths = [(0, 0)] * (audio.ndim - 1) + [(pad, pad)]
    return torch.from_numpy(np.pad(audio.numpy(), widths, mode="reflect"))


def stft_frames(audio: torch.Tensor, params: SpectrogramParams, bins: int | None = None) -> torch.Tensor:
    """Complex STFT laid out (…, frames, bins), centred and reflect-padded as ``torch.stft``.

    The Hann window is ``win_length`` long inside an ``n_fft`` frame; only those samples are
    framed and the FFT zero-pads them, which is cheaper than framing ``n_fft`` samples. The phase
    is referred to the window's first sample (``torch.stft``'s to the frame's first sample); the
    magnitudes are identical. ``bins`` keeps only the lowest bins.
    """
    half, win, hop = params.n_fft // 2, params.win_length, params.hop_length
    padded = _reflect_pad(audio, half)
    start = (params.n_fft - win) // 2
    frames = padded[..., start:].unfold(-1, win, hop)[..., : params.frames_for(audio.shape[-1]), :]
    spec = torch.fft.rfft(frames * hann_window(params), n=params.n_fft)
    return spec if bins is None else spec[..., :bins]


def istft_frames(spec: torch.Tensor, params: SpectrogramParams, length: int) -> torch.Tensor:
    """Least-squares inverse of :func:`stft_frames` (missing high bins are zero): (…, length)."""
    frames = torch.fft.irfft(spec, n=params.n_fft)[..., : params.win_length] * hann_window(params)
    return _overlap_add(frames, params, length) / _window_envelope(params, spec.shape[-2], length)


def _overlap_add(frames: torch.Tensor, params: SpectrogramParams, length: int) -> torch.Tensor:
    """Sum frames (…, T, win) placed every hop, centred on multiples of hop; first ``length`` samples."""
    hop, win = params.hop_length, params.win_length
    per = -(-win // hop)
    n = frames.shape[-2]
    blocks = torch.nn.functional.pad(frames, (0, per * hop - win)).reshape(*frames.shape[:-1], per, hop)
    out = frames.new_zeros(*frames.shape[:-2], n + per - 1, hop)
    for j in range(per):
        out[..., j : j + n, :] += blocks[..., j, :]
    return out.reshape(*frames.shape[:-2], -1)[..., win // 2 : win // 2 + length]


@functools.lru_cache(maxsize=16)
def _window_envelope(params: SpectrogramParams, frames: int, length: int) -> torch.Tensor:
    squared = (hann_window(params) ** 2).expand(frames, -1)
    return _overlap_add(squared, params, length).clamp_min(1e-11)


def _wrap_frames(params: SpectrogramParams) -> int:
    """Frames borrowed from the other end on each side so that every kept frame sees a whole window."""
    return -(-(params.win_length // 2) // params.hop_length) + 1


def _circular_stft_frames(audio: torch.Tensor, params: SpectrogramParams, bins: int | None = None) -> torch.Tensor:
    """:func:`stft_frames` of one period of a periodic signal (length a multiple of the hop): one frame
    per hop, centred on it, windows that reach past either end wrapping around to the other."""
    hop, n = params.hop_length, audio.shape[-1]
    if n % hop:
        raise ValueError(f"a circular STFT needs a whole number of hops ({hop} samples), got {n} samples")
    pad = _wrap_frames(params)
    wrapped = audio[..., torch.arange(-pad * hop, n + pad * hop) % n]
    return stft_frames(wrapped, params, bins)[..., pad : pad + n // hop, :]


def _circular_istft_frames(spec: torch.Tensor, params: SpectrogramParams) -> torch.Tensor:
    """Least-squares inverse of :func:`_circular_stft_frames`: frames overlap-added around the circle."""
    hop, frames, pad = params.hop_length, spec.shape[-2], _wrap_frames(params)
    wrapped = spec[..., torch.arange(-pad, frames + pad) % frames, :]
    return istft_frames(wrapped, params, (frames + 2 * pad) * hop)[..., pad * hop : (pad + frames) * hop]


def circular_stft(audio: ArrayLike, params: SpectrogramParams, mel: bool = False) -> torch.Tensor:
    """Complex STFT (…, n_stft, T), or with ``mel`` the mel magnitude (…, n_mels, T), of one period
    of a periodic signal of ``T`` hops: the spectrogram of a loop, with no edge at its ends."""
    if mel:
        used = _band(params)[0]
        return _mel_of_frames(_circular_stft_frames(_as_tensor(audio), params, used).abs(), params)
    return _circular_stft_frames(_as_tensor(audio), params).transpose(-1, -2)


def stft(audio: torch.Tensor, params: SpectrogramParams) -> torch.Tensor:
    """Complex STFT (…, n_stft, frames) of the format (phase referred to the window start)."""
    return stft_frames(audio, params).transpose(-1, -2)


def _mel_of_frames(frames: torch.Tensor, params: SpectrogramParams) -> torch.Tensor:
    used, fb_t = _band(params)
    lead, n = frames.shape[:-2], frames.shape[-2]
    # One sparse product over all clips: the bank has at most two non-zeros per linear bin.
    stacked = frames[..., :used].reshape(-1, used).T
    mel = (fb_t @ stacked).reshape(params.num_frequencies, -1, n).permute(1, 0, 2)
    return mel.reshape(*lead, params.num_frequencies, n)


def mel_spectrogram(audio: ArrayLike, params: SpectrogramParams = SpectrogramParams()) -> torch.Tensor:
    """Mel magnitude (…, n_mels, frames) of audio (…, samples), float32, frames = 1 + samples // hop."""
    used = _band(params)[0]
    return _mel_of_frames(stft_frames(_as_tensor(audio), params, used).abs(), params)


# --------------------------------------------------------------------------- mel <-> image
def max_volume_of(mel: ArrayLike, mode: Mode = "paper", power: float = 0.25) -> float:
    """The image's white-to-black scale: ``max(S)**power``, rounded up in the paper's mode."""
    top = float(torch.as_tensor(mel).max()) ** power
    if mode == "paper":
        return float(math.ceil(top))
    if mode == "riffusion":
        return top
    raise ValueError(f"unknown spectrogram mode {mode!r}; use 'paper' or 'riffusion'")


def image_from_mel(
    mel: ArrayLike,
    params: SpectrogramParams = SpectrogramParams(),
    mode: Mode = "paper",
    max_volume: float | None = None,
) -> Image.Image:
    """8-bit spectrogram image of a mel magnitude: (n_mels, W) mono, or (2, n_mels, W) stereo.

    ``pixel = uint8(255 - S**0.25 * 255 / max_volume)``, low frequencies at the bottom, EXIF holding
    the format and ``max_volume ** 4`` (Riffusion's "max value", so the image decodes exactly).
    """
    s = torch.as_tensor(mel, dtype=torch.float32).numpy()
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
    """The format stored in the image's EXIF, defaults for what is absent."""
    return SpectrogramParams.from_exif(read_exif(image))


def stored_max_volume(image: Image.Image, power: float = 0.25) -> float | None:
    value = read_exif(image).get(ExifTags.MAX_VALUE)
    return None if value is None else float(value) ** power


def mel_from_image(
    image: Image.Image, max_volume: float | None = None
) -> tuple[np.ndarray, SpectrogramParams]:
    """Mel magnitude (n_mels, W), or (2, n_mels, W) for stereo, and the format of an image.

    ``max_volume`` defaults to the one stored in EXIF, else the paper's fixed 50.
    """
    params = params_from_image(image)
    if max_volume is None:
        max_volume = stored_max_volume(image, params.power_for_image) or PAPER_DECODE_MAX_VOLUME
    rgb = np.asarray(image.convert("RGB"))[::-1]
    channels = rgb[..., 1:3].transpose(2, 0, 1) if params.stereo else rgb[..., 0]
    levels = (MAX_PIXEL - channels.astype(np.float32)) * np.float32(max_volume / MAX_PIXEL)
    return levels ** np.float32(1.0 / params.power_for_image), params


# --------------------------------------------------------------------------- mel -> audio
def linear_from_mel(mel: ArrayLike, params: SpectrogramParams) -> torch.Tensor:
    """Non-negative least-squares-style mel -> linear magnitude (…, n_stft, frames)."""
    used, pinv = _band(params)[0], _pseudo_inverse(params)
    m = torch.as_tensor(mel, dtype=torch.float32)
    lead, frames = m.shape[:-2], m.shape[-1]
    stacked = m.reshape(-1, params.num_frequencies, frames).permute(1, 0, 2).reshape(params.num_frequencies, -1)
    lin = torch.relu(pinv @ stacked).reshape(used, -1, frames).permute(1, 0, 2)
    out = torch.zeros(lin.shape[0], params.n_stft, frames)
    out[:, :used] = lin
    return out.reshape(*lead, params.n_stft, frames)


# --------------------------------------------------------------------------- high level
def audio_to_image(
    audio: ArrayLike, params: SpectrogramParams = SpectrogramParams(), mode: Mode = "paper"
) -> Image.Image:
    """Spectrogram image of mono audio (samples,) or stereo audio (2, samples)."""
    return image_from_mel(mel_spectrogram(audio, params), params, mode)


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
            return im.copy() if im.mode in ("RGB", "L") else with_exif(im.convert("RGB"), im)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from None


def with_exif(image: Image.Image, source: Image.Image) -> Image.Image:
    """``image`` carrying ``source``'s spectrogram EXIF (format and max volume), so it decodes the same."""
    image.getexif().update(source.getexif())
    return image


class ImageError(RiffmaskError):
    """An input image that cannot be read."""
