"""Mel magnitude -> audio without importing torch: the ``griffin_lim`` decoder on numpy and torch's FFT library.

The same steps as :func:`riffmask.core.decode.griffin_lim.griffin_lim` (pseudo-inverse mel, then fast
Griffin-Lim from a PGHI, random or known-sound phase start), computed with numpy and MKL's DFTI inside
torch's CPU library (:mod:`riffmask.core.dft`), so that ``riffmask audio`` starts without loading
torch. The result equals the torch decoder's to float tolerance (different rounding of the same sums;
the tests compare the two), not bit for bit: no decoded sound is a stored format, unlike the image.
Loops (a circular STFT) and machines where the FFT library is not reachable decode with torch.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from riffmask.core import dft
from riffmask.core.forward import _frames, _scratch, filter_arrays, spectrum_rows
from riffmask.core.params import SpectrogramParams


def linear_from_mel(mel: np.ndarray, params: SpectrogramParams) -> np.ndarray:
    """Non-negative least-squares-style linear magnitudes of mel magnitudes (…, n_mels, frames), laid out
    window-first (…, frames, used): :func:`riffmask.core.codec.linear_from_mel` transposed, without the
    bins above ``max_hz`` (always zero)."""
    pinv = filter_arrays(params)["pinv"]  # (used, n_mels)
    lin = np.matmul(np.swapaxes(np.asarray(mel, np.float32), -1, -2), pinv.T)
    return np.maximum(lin, 0, out=lin)


@functools.lru_cache(maxsize=16)
def _window_envelope(params: SpectrogramParams, frames: int, length: int) -> np.ndarray:
    """Sum of the squared window over ``frames`` frames (length,), as the torch decoder divides by."""
    window = filter_arrays(params)["window"]
    squared = np.broadcast_to(window * window, (1, frames, len(window)))
    envelope = np.maximum(_overlap_add(squared, params, length), np.float32(1e-11))
    envelope.flags.writeable = False
    return envelope[0]


def _overlap_add(frames: np.ndarray, params: SpectrogramParams, length: int) -> np.ndarray:
    """Sum frames (clips, T, win) placed every hop, centred on multiples of hop: (clips, length)."""
    hop, win = params.hop_length, params.win_length
    per = -(-win // hop)
    clips, count = frames.shape[:2]
    if per * hop != win:
        frames = np.pad(frames, ((0, 0), (0, 0), (0, per * hop - win)))
    blocks = frames.reshape(clips, count, per, hop)
    out = np.zeros((clips, count + per - 1, hop), np.float32)
    for j in range(per):
        out[:, j : j + count] += blocks[:, :, j]
    return out.reshape(clips, -1)[:, win // 2 : win // 2 + length]


def _rotate_to(z: np.ndarray, magnitude: np.ndarray, out: np.ndarray) -> None:
    """``out = magnitude * z / |z|`` (0 where z is 0: ``torch.sgn``'s convention), for complex64 ``z`` and
    ``out`` (rows, bins) and float32 ``magnitude`` (rows, bins); ``out`` may be a strided view."""
    scale = np.abs(z)
    np.divide(magnitude, scale, out=scale, where=scale > 0)  # stays 0 where z is 0
    np.multiply(z, scale, out=out)  # complex times real: faster in numpy than the two float planes


def _row_chunks(rows: int) -> list[slice]:
    """Rows split into one chunk per usable core (at least 64 rows each), every chunk starting at a
    multiple of 16 rows so that its part of each FFT buffer stays 64-byte aligned."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    size = -(-rows // max(1, min(cores, rows // 64)))
    size = -(-size // 16) * 16
    return [slice(first, min(first + size, rows)) for first in range(0, rows, size)] or [slice(0, 0)]


def griffin_lim(
    magnitude: np.ndarray,
    params: SpectrogramParams,
    n_iter: int,
    phase: np.ndarray,
    momentum: float = 0.99,
) -> np.ndarray:
    """Fast Griffin-Lim on linear magnitudes (…, frames, used) laid out window-first, from ``phase``
    shaped like them; returns (…, (frames - 1) * hop) samples. Needs :func:`riffmask.core.dft.available`.

    The frames are split among the cores, each chunk transformed by its own thread (numpy and the FFT
    release the GIL) with a one-thread FFT: unlike the FFT library's own threads, these do not spin
    while waiting, which costs much on a busy machine. Only the overlap-add joins the chunks.
    """
    lead, (count, used) = magnitude.shape[:-2], magnitude.shape[-2:]
    n, win = params.n_fft, params.win_length
    mag = np.ascontiguousarray(magnitude, np.float32).reshape(-1, used)
    phase = phase.reshape(mag.shape)
    rows, clips = len(mag), len(mag) // max(count, 1)
    length = params.samples_for(count)
    envelope = _window_envelope(params, count, length)
    synthesis_window = filter_arrays(params)["window"] / np.float32(n)  # the inverse FFT is unscaled
    spectrum = _scratch("inverse_in", (rows, n // 2 + 1), np.complex64)  # mag * angles; bins >= used stay 0
    spectrum[:, used:] = 0  # the buffer may have served a format with more bins
    signal = _scratch("inverse_out", (rows, n), np.float32)
    rebuilt = _scratch("inverse_rebuilt", (rows, n // 2 + 1), np.complex64)
    synthesised = np.empty((clips, count, win), np.float32)
    kept = np.zeros((rows, used), np.complex64)  # the previous iteration's rebuilt spectrum, times keep
    z = np.empty_like(kept)
    keep = np.float32(momentum / (1 + momentum))
    chunks = _row_chunks(rows)
    threads = 1 if len(chunks) > 1 else None
    frames = np.empty(0, np.float32)  # the windowed frames of the latest synthesised audio

    def start(r: slice) -> None:
        parts = spectrum[r, :used].view(np.float32).reshape(-1, used, 2)
        np.multiply(mag[r], np.cos(phase[r], dtype=np.float32), out=parts[..., 0])
        np.multiply(mag[r], np.sin(phase[r], dtype=np.float32), out=parts[..., 1])

    def synthesise_rows(r: slice) -> None:
        dft.irfft_rows_unscaled(spectrum[r], n, threads, out=signal[r])
        np.multiply(signal[r, :win], synthesis_window, out=synthesised.reshape(rows, win)[r])

    def project_rows(r: slice) -> None:
        spec = dft.rfft_rows(frames[r], threads, rebuilt[r])[:, :used]
        np.subtract(spec, kept[r], out=z[r])
        np.multiply(spec, keep, out=kept[r])
        _rotate_to(z[r], mag[r], spectrum[r, :used])

    with ThreadPoolExecutor(len(chunks)) as pool:

        def each(step: Callable[[slice], None]) -> None:
            for done in [pool.submit(step, r) for r in chunks]:
                done.result()

        def synthesise() -> np.ndarray:
            each(synthesise_rows)
            return _overlap_add(synthesised, params, length) / envelope

        each(start)
        for _ in range(n_iter):
            frames = _frames(synthesise(), params)
            each(project_rows)
        return synthesise().reshape(*lead, length)


def known_phase(audio: np.ndarray, params: SpectrogramParams, shape: tuple[int, ...]) -> np.ndarray:
    """STFT phase (…, frames, used) of a known sound (…, samples), cut or zero-padded to the frames of
    ``shape`` (…, frames, used)."""
    count, used = shape[-2:]
    samples = params.samples_for(count)
    audio = np.asarray(audio, np.float32)[..., :samples]
    audio = np.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(0, samples - audio.shape[-1])])
    audio = np.ascontiguousarray(np.broadcast_to(audio, (*shape[:-2], samples)))
    return np.angle(spectrum_rows(audio, params)[:, :used]).reshape(shape)
