"""Audio -> mel magnitude -> image without importing torch, identical to the torch codec to the bit.

:func:`riffmask.core.codec.mel_spectrogram` is the definition; this module computes the same numbers
with numpy and torch's own FFT library (:mod:`riffmask.core.dft`), step by step as torch does them:

- frames: reflect padding, every ``hop`` samples the ``win_length`` samples under the window, times
  the Hann window (torch's own values, kept in the disk cache), zero-padded to ``n_fft``;
- MKL's batched real FFT, planned as torch plans it;
- magnitudes of the bins below ``max_hz``, rounded as torch's complex ``abs`` rounds them
  (:mod:`riffmask.core.magnitude`);
- the mel sums in torch's sparse-CSR order: for each band, its bins one after another, each
  ``out += weight * magnitude`` rounded to float32 (no fused multiply-add), from zero.

Another FFT changes a few pixels in 10^5 of a real clip, and thousands on a file with silent bands
(``python -m bench.bench_codec forward``), so where the FFT library is not reachable :func:`mel_array`
uses torch. The filter bank, its inverse and the window
come from the user's cache folder (:mod:`riffmask.common.cache`); building them the first time loads
librosa and torch.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
from PIL import Image

from riffmask.common.cache import cached_arrays
from riffmask.core import dft
from riffmask.core.image import Mode, image_from_mel
from riffmask.core.magnitude import native_kernel, torch_abs_transposed
from riffmask.core.params import SpectrogramParams

#: Bump when the cached arrays' recipe changes, so that old cache files are not read.
CACHE_VERSION = 2
#: Each thread's FFT buffers, kept from clip to clip: a fresh 36 MB pair per 512-frame clip costs a
#: third of the transform in page faults.
_buffers = threading.local()


def _scratch(name: str, shape: tuple[int, int], dtype: type) -> np.ndarray:
    """This thread's aligned buffer ``name`` of ``shape``, zeroed when made and reused after."""
    buffer = getattr(_buffers, name, None)
    if buffer is None or buffer.shape != shape:
        buffer = dft.aligned_zeros(shape, dtype)
        setattr(_buffers, name, buffer)
    return buffer


@functools.lru_cache(maxsize=8)
def filter_arrays(params: SpectrogramParams) -> dict[str, np.ndarray]:
    """The format's cached arrays (see :func:`riffmask.core.codec.build_filter_arrays`): the bank's
    non-zero rows ``bank`` (used, n_mels), their pseudo-inverse ``pinv`` and the Hann ``window``."""
    fields = ("sample_rate", "n_fft", "win_length", "num_frequencies", "min_hz", "max_hz")
    key = {"version": CACHE_VERSION, **{f: getattr(params, f) for f in fields}}

    def build() -> dict[str, np.ndarray]:
        from riffmask.core.codec import build_filter_arrays  # torch and librosa: only when not cached

        return build_filter_arrays(params)

    arrays = cached_arrays("melbank", key, build)
    for array in arrays.values():
        array.flags.writeable = False  # shared by every caller in the process
    return arrays


@functools.lru_cache(maxsize=8)
def _band_order(params: SpectrogramParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bank's non-zeros in torch's CSR order, one step per column: (bins, weights, bands) of shape
    (steps, n_mels), step j holding each band's j-th bin (weight 0 at bin 0 once a band has no more)."""
    bank_t = filter_arrays(params)["bank"].T  # (n_mels, used)
    counts = np.count_nonzero(bank_t, axis=1)
    steps = int(counts.max(initial=0))
    bins = np.zeros((steps, bank_t.shape[0]), np.int64)
    weights = np.zeros((steps, bank_t.shape[0]), np.float32)
    for band, row in enumerate(bank_t):
        nonzero = np.flatnonzero(row)  # ascending bins, as CSR stores them
        bins[: len(nonzero), band] = nonzero
        weights[: len(nonzero), band] = row[nonzero]
    return bins, weights, counts


def _frames(audio: np.ndarray, params: SpectrogramParams) -> np.ndarray:
    """Windowed frames (clips * frames, n_fft), zero-padded, 64-byte aligned, as torch's rfft gets them.

    The array is this thread's buffer: only the first ``win_length`` columns are written, the rest stay
    zero (the FFT does not write to its input); it is valid until the thread's next call.
    """
    half, win, hop = params.n_fft // 2, params.win_length, params.hop_length
    widths = [(0, 0)] * (audio.ndim - 1) + [(half, half)]
    padded = np.pad(audio, widths, mode="reflect")  # torch's reflect padding (numpy's when shorter than the pad)
    start = (params.n_fft - win) // 2
    count = params.frames_for(audio.shape[-1])
    views = np.lib.stride_tricks.sliding_window_view(padded[..., start:], win, axis=-1)[..., ::hop, :][..., :count, :]
    out = _scratch("frames", (int(np.prod(views.shape[:-1])), params.n_fft), np.float32)
    np.multiply(views.reshape(-1, win), filter_arrays(params)["window"], out=out[:, :win])
    return out


def spectrum_rows(audio: np.ndarray, params: SpectrogramParams, threads: int | None = None) -> np.ndarray:
    """Complex STFT of float32 audio (…, samples) as rows (clips * frames, n_stft), bit for bit
    :func:`riffmask.core.codec.stft_frames` (needs :func:`riffmask.core.dft.available`). The array is
    this thread's buffer, valid until the thread's next call."""
    frames = _frames(audio, params)
    spectrum = _scratch("spectrum", (len(frames), params.n_stft), np.complex64)
    return dft.rfft_rows(frames, threads, spectrum)


def _mel_of_magnitudes(mag: np.ndarray, params: SpectrogramParams) -> np.ndarray:
    """(n_mels, N) mel sums of magnitudes (used, N), in torch's sparse-CSR order and rounding."""
    bins, weights, counts = _band_order(params)
    out = np.zeros((params.num_frequencies, mag.shape[1]), np.float32)
    for step in range(bins.shape[0]):
        bands = np.flatnonzero(counts > step)
        out[bands] += weights[step, bands, None] * mag[bins[step, bands]]
    return out


def fast_mel_spectrogram(audio: np.ndarray, params: SpectrogramParams, threads: int | None = None) -> np.ndarray:
    """Mel magnitude (…, n_mels, frames) of audio (…, samples), float32, bit for bit
    :func:`riffmask.core.codec.mel_spectrogram`; needs :func:`riffmask.core.dft.available`.

    ``threads`` caps the threads of the FFT (default: MKL's own choice).
    """
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    used = filter_arrays(params)["bank"].shape[0]
    mag = torch_abs_transposed(spectrum_rows(audio, params, threads)[:, :used])  # (used, clips * frames)
    mel = _mel_of_magnitudes(mag, params)
    count = params.frames_for(audio.shape[-1])
    return mel.reshape(params.num_frequencies, -1, count).transpose(1, 0, 2).reshape(
        *audio.shape[:-1], params.num_frequencies, count
    )


def mel_array(
    audio: np.ndarray, params: SpectrogramParams = SpectrogramParams(), threads: int | None = None
) -> np.ndarray:
    """:func:`riffmask.core.codec.mel_spectrogram` as a numpy array, without torch where it can."""
    if dft.available():
        return fast_mel_spectrogram(audio, params, threads)
    from riffmask.core.codec import mel_spectrogram

    return mel_spectrogram(audio, params).numpy()


def warm(params: SpectrogramParams) -> None:
    """Load the FFT library and the format's arrays now (e.g. before forking workers), transforming nothing."""
    if dft.available():
        _band_order(params)
        native_kernel()
    else:
        from riffmask.core.codec import mel_spectrogram

        mel_spectrogram(np.zeros(params.n_fft, np.float32), params)


def audio_to_image(
    audio: np.ndarray, params: SpectrogramParams = SpectrogramParams(), mode: Mode = "paper"
) -> Image.Image:
    """Spectrogram image of mono audio (samples,) or stereo audio (2, samples)."""
    return image_from_mel(mel_array(audio, params), params, mode)
