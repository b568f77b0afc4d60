"""The spectrogram codec: audio <-> mel magnitude <-> 8-bit image, exactly as SPEC §1.

The forward path is torch STFT + a sparse HTK mel filter bank (librosa's, equal to torchaudio's
``MelScale(norm=None, mel_scale="htk")``). The inverse path solves the mel -> linear least squares
with a precomputed pseudo-inverse (:func:`linear_from_mel`); phase reconstruction is a decoder of
:mod:`riffmask.core.decode`. The bank and its inverse are built once per format and kept in
the user's cache folder (:mod:`riffmask.common.cache`). The image side (numpy and Pillow only) is
:mod:`riffmask.core.image`, and the same forward path without torch (to the bit, for commands that
should start fast) is :mod:`riffmask.core.forward`; both are re-exported here.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch

from riffmask.core.forward import (  # noqa: F401 - re-exported: the torch-free forward path
    audio_to_image,
    filter_arrays,
    mel_array,
)
from riffmask.core.image import (  # noqa: F401 - re-exported: the codec's public image side
    ImageError,
    Mode,
    image_from_mel,
    load_image,
    max_volume_of,
    mel_from_image,
    params_from_image,
    read_exif,
    save_image,
    stored_max_volume,
    with_exif,
)
from riffmask.core.params import SpectrogramParams

ArrayLike = np.ndarray | torch.Tensor


# --------------------------------------------------------------------------- filter banks
def build_filter_arrays(params: SpectrogramParams) -> dict[str, np.ndarray]:
    """The bank's non-zero rows (used, n_mels), their pseudo-inverse (used, n_mels) and torch's Hann
    window (win_length,), float32 (kept in the disk cache: :func:`riffmask.core.forward.filter_arrays`).

    Bins above the last non-zero row never contribute. The bank has full row rank, so
    pinv(A) = A^T (A A^T)^-1 with a small, well-conditioned (n_mels x n_mels) system, as
    torch.linalg.lstsq's "gels" (a general SVD pseudo-inverse takes seconds).
    """
    import librosa  # only when the cache has no copy: it pulls in scipy

    fb = librosa.filters.mel(
        sr=params.sample_rate,
        n_fft=params.n_fft,
        n_mels=params.num_frequencies,
        fmin=params.min_hz,
        fmax=params.max_hz,
        htk=True,
        norm=None,
        dtype=np.float64,
    ).T.astype(np.float32)
    used = int(np.nonzero(np.abs(fb).sum(axis=1))[0].max()) + 1
    a = torch.from_numpy(fb[:used]).T.double()
    pinv = torch.linalg.solve(a @ a.T, a).T.float().contiguous()
    window = hann_window(params).numpy()
    return {"bank": np.ascontiguousarray(fb[:used]), "pinv": pinv.numpy(), "window": window}


@functools.lru_cache(maxsize=8)
def _filter_arrays(params: SpectrogramParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(bank rows, pseudo-inverse) of the format, from the disk cache when it holds them."""
    arrays = filter_arrays(params)
    with warnings.catch_warnings():  # the cached arrays are read-only; torch only reads them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(arrays["bank"]), torch.from_numpy(arrays["pinv"])


def mel_filterbank(params: SpectrogramParams) -> torch.Tensor:
    """Dense (n_stft, n_mels) float32 filter bank, laid out like torchaudio's ``MelScale.fb``."""
    bank = _filter_arrays(params)[0]
    return torch.cat([bank, bank.new_zeros(params.n_stft - bank.shape[0], bank.shape[1])])


@functools.lru_cache(maxsize=8)
def _band(params: SpectrogramParams) -> tuple[int, torch.Tensor]:
    """(bins that any filter touches, that part of the bank transposed as a sparse CSR matrix)."""
    bank = _filter_arrays(params)[0]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        sparse = bank.T.contiguous().to_sparse_csr()  # (n_mels, used), two non-zeros per column
    return bank.shape[0], sparse


def _pseudo_inverse(params: SpectrogramParams) -> torch.Tensor:
    """(used, n_mels) minimum-norm least-squares inverse of the bank (see :func:`build_filter_arrays`)."""
    return _filter_arrays(params)[1]


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
    frames = padded[..., half - _lead(params) :].unfold(-1, win, hop)[..., : params.frames_for(audio.shape[-1]), :]
    return _windowed_rfft(frames, params, bins)


def _lead(params: SpectrogramParams) -> int:
    """Samples of a frame's window before the sample it is centred on."""
    return params.n_fft // 2 - (params.n_fft - params.win_length) // 2


def _windowed_rfft(frames: torch.Tensor, params: SpectrogramParams, bins: int | None) -> torch.Tensor:
    spec = torch.fft.rfft(frames * hann_window(params), n=params.n_fft)
    return spec if bins is None else spec[..., :bins]


def istft_frames(spec: torch.Tensor, params: SpectrogramParams, length: int) -> torch.Tensor:
    """Least-squares inverse of :func:`stft_frames` (missing high bins are zero): (…, length)."""
    frames = torch.fft.irfft(spec, n=params.n_fft)[..., : params.win_length] * hann_window(params)
    return _overlap_add(frames, params, length) / _window_envelope(params, spec.shape[-2], length)


def _overlap_add(frames: torch.Tensor, params: SpectrogramParams, length: int) -> torch.Tensor:
    """Sum frames (…, T, win) placed every hop, centred on multiples of hop; first ``length`` samples."""
    win = params.win_length
    return _overlap_add_all(frames, params)[..., win // 2 : win // 2 + length]


def _overlap_add_all(frames: torch.Tensor, params: SpectrogramParams) -> torch.Tensor:
    """Sum frames (…, T, win) placed every hop from sample 0: all ``(T + ceil(win / hop) - 1) * hop`` samples."""
    hop, win = params.hop_length, params.win_length
    per = -(-win // hop)
    n = frames.shape[-2]
    blocks = torch.nn.functional.pad(frames, (0, per * hop - win)).reshape(*frames.shape[:-1], per, hop)
    out = frames.new_zeros(*frames.shape[:-2], n + per - 1, hop)
    for j in range(per):
        out[..., j : j + n, :] += blocks[..., j, :]
    return out.reshape(*frames.shape[:-2], -1)


@functools.lru_cache(maxsize=16)
def _window_envelope(params: SpectrogramParams, frames: int, length: int) -> torch.Tensor:
    squared = (hann_window(params) ** 2).expand(frames, -1)
    return _overlap_add(squared, params, length).clamp_min(1e-11)


def _circular_stft_frames(audio: torch.Tensor, params: SpectrogramParams, bins: int | None = None) -> torch.Tensor:
    """:func:`stft_frames` of one period of a periodic signal (length a multiple of the hop): one frame
    per hop, centred on it, windows that reach past either end wrapping around to the other."""
    hop, win, n = params.hop_length, params.win_length, audio.shape[-1]
    if n % hop:
        raise ValueError(f"a circular STFT needs a whole number of hops ({hop} samples), got {n} samples")
    # Exactly the n / hop windows, gathered around the circle: no frame is computed to be thrown away.
    first = -_lead(params)
    wrapped = audio[..., torch.arange(first, first + n - hop + win) % n]
    return _windowed_rfft(wrapped.unfold(-1, win, hop), params, bins)


def _circular_istft_frames(spec: torch.Tensor, params: SpectrogramParams) -> torch.Tensor:
    """Least-squares inverse of :func:`_circular_stft_frames`: frames overlap-added around the circle."""
    frames = torch.fft.irfft(spec, n=params.n_fft)[..., : params.win_length] * hann_window(params)
    return _fold(frames, params) / _circular_envelope(params, spec.shape[-2])


def _fold(frames: torch.Tensor, params: SpectrogramParams) -> torch.Tensor:
    """Overlap-add of one period's frames (…, T, win) around a circle of ``T * hop`` samples."""
    n, centre = frames.shape[-2] * params.hop_length, params.win_length // 2
    added = _overlap_add_all(frames, params)  # sample i lies at i - centre on the circle
    laps = -(-added.shape[-1] // n)
    added = torch.nn.functional.pad(added, (0, laps * n - added.shape[-1]))
    return added.reshape(*added.shape[:-1], laps, n).sum(-2).roll(-centre, -1)


@functools.lru_cache(maxsize=16)
def _circular_envelope(params: SpectrogramParams, frames: int) -> torch.Tensor:
    return _fold((hann_window(params) ** 2).expand(frames, -1), params).clamp_min(1e-11)


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
