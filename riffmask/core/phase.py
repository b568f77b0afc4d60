"""Phase from magnitude: Phase Gradient Heap Integration (Průša, Balazs & Søndergaard, 2017).

For a Gaussian window, the phase gradient of an STFT is a function of the log-magnitude gradient:
the time derivative (instantaneous frequency) follows the frequency slope, the frequency derivative
(local group delay) follows the time slope. Integrating those gradients outward from the loudest
cells, always continuing from the loudest cell reached so far, gives a phase that is already close
to consistent, so Griffin-Lim started from it needs a few iterations instead of dozens. The Hann
window is treated as the Gaussian of equal time-frequency spread (λ = 0.25645 · L², as in LTFAT).

The priority queue is a bucket queue over quantised log-magnitude: O(1) per cell, and the order it
gives differs from an exact heap only between cells less than 1/1000 of the dynamic range apart.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from riffmask.common.cache import cache_dir
from riffmask.common.native import native_library
from riffmask.core.params import SpectrogramParams

HANN_LAMBDA = 0.25645
LEVELS = 1024
#: The heap integration in C (the same steps as :func:`_integrate`), built with the system's C compiler.
_SOURCE = Path(__file__).with_name("pghi.c")
log = logging.getLogger(__name__)


def _integrate(level, dphi_dt, dphi_dk, phase, levels):  # pragma: no cover - compiled by numba
    """Fill ``phase`` (T, K) in place for cells with level >= 0, loudest-first (bucket queue).

    Where no C compiler is found this is the kernel, compiled by numba; ``pghi.c`` is the same code.
    """
    n_t, n_k = level.shape
    size = n_t * n_k
    seed_head = np.full(levels, -1, np.int64)
    seed_next = np.empty(size, np.int64)
    for cell in range(size):
        b = level.flat[cell]
        if b >= 0:
            seed_next[cell] = seed_head[b]
            seed_head[b] = cell
    done = np.zeros(size, np.bool_)
    head = np.full(levels, -1, np.int64)
    nxt = np.empty(size, np.int64)
    for seed_bucket in range(levels - 1, -1, -1):
        seed = seed_head[seed_bucket]
        while seed != -1:
            if not done[seed]:
                done[seed] = True
                phase.flat[seed] = 0.0
                top = seed_bucket
                head[top] = seed
                nxt[seed] = -1
                while top >= 0:
                    cur = head[top]
                    if cur == -1:
                        top -= 1
                        continue
                    head[top] = nxt[cur]
                    t = cur // n_k
                    k = cur - t * n_k
                    for dt, dk in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                        tt = t + dt
                        kk = k + dk
                        if tt < 0 or tt >= n_t or kk < 0 or kk >= n_k:
                            continue
                        other = tt * n_k + kk
                        b = level[tt, kk]
                        if done[other] or b < 0:
                            continue
                        if dt != 0:
                            step = 0.5 * (dphi_dt[t, k] + dphi_dt[tt, kk]) * dt
                        else:
                            step = 0.5 * (dphi_dk[t, k] + dphi_dk[tt, kk]) * dk
                        phase[tt, kk] = phase[t, k] + step
                        done[other] = True
                        nxt[other] = head[b]
                        head[b] = other
                        if b > top:
                            top = b
            seed = seed_next[seed]


@contextlib.contextmanager
def _compiled_kernels_in_user_cache() -> Iterator[None]:
    """numba keeps a ``cache=True`` kernel beside its source (site-packages) unless NUMBA_CACHE_DIR says
    otherwise; kernels compiled inside this block go to the user's cache folder instead. numba fixes a
    kernel's cache path when it is decorated, so its setting is restored for everything else."""
    import numba

    before = numba.config.CACHE_DIR
    if not os.environ.get("NUMBA_CACHE_DIR"):
        numba.config.CACHE_DIR = str(cache_dir() / "numba")
    try:
        yield
    finally:
        numba.config.CACHE_DIR = before


def _native_library() -> ctypes.CDLL | None:
    """``pghi.c`` built and loaded (:func:`riffmask.common.native.native_library`); None where it cannot be."""
    lib = native_library(_SOURCE)
    if lib is None:
        return None
    pointer = np.ctypeslib.ndpointer
    lib.riffmask_pghi_integrate.argtypes = [
        pointer(np.int64, flags="C"), pointer(np.float32, flags="C"), pointer(np.float32, flags="C"),
        pointer(np.float32, flags="C,W"), ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
    ]  # fmt: skip
    lib.riffmask_pghi_integrate.restype = ctypes.c_int
    return lib


@functools.cache
def integrator() -> Callable[..., None]:
    """The heap integration, ``(level, dphi_dt, dphi_dk, phase, levels)``: the C kernel where a C
    compiler is found (loading it costs milliseconds), else :func:`_integrate` compiled by numba (whose
    start costs about a second even with its cache)."""
    lib = _native_library()
    if lib is None:
        import numba

        with _compiled_kernels_in_user_cache():
            return numba.njit(cache=True, nogil=True)(_integrate)

    def native(level, dphi_dt, dphi_dk, phase, levels) -> None:
        if lib.riffmask_pghi_integrate(level, dphi_dt, dphi_dk, phase, *level.shape, levels):
            raise MemoryError("PGHI: no memory for the heap integration")

    return native


def pghi(
    magnitude: np.ndarray,
    params: SpectrogramParams,
    tolerance_db: float = 60.0,
    seed: int = 0,
) -> np.ndarray:
    """Phase (T, K) for linear magnitudes (T, K) of frames laid out window-first (see codec).

    Cells more than ``tolerance_db`` below the loudest get a random phase: their phase gradients are
    noise, and they matter little to the sound.
    """
    mag = np.ascontiguousarray(magnitude, dtype=np.float32)
    n_fft, hop, win = params.n_fft, params.hop_length, params.win_length
    lam = HANN_LAMBDA * win * win
    logs = np.log(mag + np.float32(1e-10))
    k = np.arange(mag.shape[1], dtype=np.float32)
    # Instantaneous frequency (cycles/sample) = bin frequency + (∂ log s / ∂ν) / (2πλ).
    dphi_dt = (2 * np.pi * hop / n_fft) * (k + (n_fft * n_fft / (2 * np.pi * lam)) * np.gradient(logs, axis=1))
    # Frequency derivative = -λ ∂ log s / ∂t, per bin (1/N) and per sample (1/hop).
    dphi_dk = (-lam / (n_fft * hop)) * np.gradient(logs, axis=0)
    top = float(logs.max())
    span = tolerance_db / 20 * np.log(10)
    level = np.floor((logs - (top - span)) * (LEVELS / span)).astype(np.int64)
    np.clip(level, -1, LEVELS - 1, out=level)
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, size=mag.shape).astype(np.float32)
    integrator()(level, dphi_dt.astype(np.float32), dphi_dk.astype(np.float32), phase, LEVELS)
    # The gradients above are for a window centred at the phase origin; frames here start at the
    # window's first sample, which turns each bin by -π k L / N.
    return phase - (np.pi * win / n_fft) * k
