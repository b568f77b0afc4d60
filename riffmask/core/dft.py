"""torch's own CPU FFT, called without importing torch: MKL's DFTI inside torch's CPU library.

The spectrogram image is this project's data format, so the audio -> image path must give torch's
pixels exactly. On x86-64 Linux, ``torch.fft.rfft`` runs Intel MKL's DFTI, linked into
``libtorch_cpu`` and exported from it; no other FFT (numpy's or scipy's pocketfft, another MKL)
rounds the same way (``bench/bench_codec.py`` counts the pixels they change). Loading that one
library takes a fraction of ``import torch``, which also loads the Python framework on top of it.

The transform is planned as torch plans it (``aten/src/ATen/native/mkl/SpectralOps.cpp``): real,
single precision, out of place, one batch of frames ``n`` floats apart, complex conjugate-even output
``n // 2 + 1`` apart. MKL picks its kernel by the batch size and by the buffers' alignment as well, so
both buffers are 64-byte aligned, as torch's allocator aligns them.

The decoder (:mod:`riffmask.core.inverse`) uses the same library's inverse transform, where only float
tolerance matters but the library is the fastest one at hand that loads without torch.

Where torch's library does not export DFTI (a build on pocketfft, e.g. on macOS or ARM), or cannot be
found, :func:`available` is False and callers use torch itself.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import platform
import sys
import threading
from pathlib import Path

import numpy as np

# DFTI's configuration parameters and values (mkl_dfti.h).
_NUMBER_OF_TRANSFORMS, _CONJUGATE_EVEN_STORAGE, _PLACEMENT = 7, 10, 11
_INPUT_STRIDES, _OUTPUT_STRIDES, _INPUT_DISTANCE, _OUTPUT_DISTANCE = 12, 13, 14, 15
_THREAD_LIMIT, _REAL, _COMPLEX_COMPLEX, _NOT_INPLACE = 27, 33, 39, 44
_SYMBOLS = ("DftiCreateDescriptor_s_1d", "DftiSetValue", "DftiCommitDescriptor", "DftiComputeForward",
            "DftiComputeBackward", "DftiFreeDescriptor")  # fmt: skip
ALIGNMENT = 64  # bytes; c10's CPU allocator's alignment
_NAMES = {"linux": "libtorch_cpu.so", "darwin": "libtorch_cpu.dylib", "win32": "torch_cpu.dll"}


class DftError(RuntimeError):
    """MKL refused a plan or a transform (its status code is in the message)."""


_library_lock = threading.Lock()


@functools.cache
def _library_path() -> Path | None:
    """Where torch's CPU library is, found without importing torch; None where it is not."""
    spec = importlib.util.find_spec("torch")
    name = _NAMES.get(sys.platform)
    if spec is None or not spec.submodule_search_locations or name is None:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "lib" / name
    return path if path.is_file() else None


def _library() -> ctypes.CDLL | None:
    """torch's CPU library when it exports DFTI, else None (loaded once; other threads wait for it)."""
    with _library_lock:
        return _load_library()


@functools.cache
def _load_library() -> ctypes.CDLL | None:
    path = _library_path()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:
        return None
    if not all(hasattr(lib, symbol) for symbol in _SYMBOLS):
        return None
    lib.DftiCreateDescriptor_s_1d.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_long]
    lib.DftiCommitDescriptor.argtypes = [ctypes.c_void_p]
    lib.DftiComputeForward.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.DftiComputeBackward.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.DftiFreeDescriptor.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    for fn in (lib.DftiCreateDescriptor_s_1d, lib.DftiSetValue, lib.DftiCommitDescriptor, lib.DftiComputeForward,
               lib.DftiComputeBackward, lib.DftiFreeDescriptor):  # fmt: skip
        fn.restype = ctypes.c_long
    return lib


def available() -> bool:
    """Whether torch's MKL FFT can be called here without importing torch."""
    return _library() is not None


def likely() -> bool:
    """Whether :func:`available` is likely, answered without loading the library (a few tenths of a
    second): torch's CPU library is there, on x86-64, whose builds of torch link MKL."""
    return platform.machine().lower() in ("x86_64", "amd64") and _library_path() is not None


def preload() -> None:
    """Start loading torch's CPU library on a background thread (the loader releases the GIL), so that
    work done before the first transform overlaps with it. Nothing to do once it is loaded."""
    if not _load_library.cache_info().currsize:
        threading.Thread(target=_library, name="riffmask-dft-load", daemon=True).start()


def aligned_zeros(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """A C-contiguous zero array whose data starts on a 64-byte boundary, as torch's tensors do."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(nbytes + ALIGNMENT, np.uint8)
    offset = -raw.ctypes.data % ALIGNMENT
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def _check(status: int, what: str) -> None:
    if status != 0:
        raise DftError(f"MKL DFTI {what} failed with status {status}")


class _Plan:
    """A committed DFTI descriptor for ``batch`` real transforms of length ``n``, forward (real ->
    complex) or backward (complex -> real; DFTI reads the distances of a backward-only plan from its input)."""

    def __init__(self, lib: ctypes.CDLL, n: int, batch: int, threads: int | None, backward: bool = False):
        self.lib, self.handle = lib, ctypes.c_void_p()
        long = ctypes.c_long
        _check(lib.DftiCreateDescriptor_s_1d(ctypes.byref(self.handle), _REAL, n), "plan")
        strides = (long * 2)(0, 1)
        real, half = long(n), long(n // 2 + 1)
        settings = [(_PLACEMENT, long(_NOT_INPLACE)), (_NUMBER_OF_TRANSFORMS, long(batch)),
                    (_INPUT_DISTANCE, half if backward else real), (_OUTPUT_DISTANCE, real if backward else half),
                    (_INPUT_STRIDES, strides),
                    (_OUTPUT_STRIDES, strides), (_CONJUGATE_EVEN_STORAGE, long(_COMPLEX_COMPLEX))]  # fmt: skip
        if threads:  # how many threads MKL may use; the result is the same for any number
            settings.append((_THREAD_LIMIT, long(threads)))
        for param, value in settings:
            _check(lib.DftiSetValue(self.handle, ctypes.c_int(param), value), f"setting {param}")
        _check(lib.DftiCommitDescriptor(self.handle), "commit")

    def __del__(self) -> None:
        if self.handle:
            self.lib.DftiFreeDescriptor(ctypes.byref(self.handle))


_plans: dict[tuple[int, int, int | None, bool], _Plan] = {}
_plans_lock = threading.Lock()


def _plan(n: int, batch: int, threads: int | None, backward: bool = False) -> _Plan:
    lib = _library()
    if lib is None:
        raise DftError("torch's CPU library does not export MKL's DFTI here; use torch.fft")
    key = (n, batch, threads, backward)
    with _plans_lock:
        if key not in _plans:
            if len(_plans) >= 8:  # a process sees a few clip shapes; keep the plans of the latest
                _plans.pop(next(iter(_plans)))
            _plans[key] = _Plan(lib, n, batch, threads, backward)
        return _plans[key]


def _check_rows(arrays: tuple[tuple[np.ndarray, type], ...], batch: int, what: str) -> None:
    for array, dtype in arrays:
        if array.dtype != dtype or array.ndim != 2 or not array.flags.c_contiguous or len(array) != batch:
            raise ValueError(f"{what} needs C-contiguous {np.dtype(dtype)} arrays of {batch or 'the same'} rows")
        if array.ctypes.data % ALIGNMENT:
            raise ValueError(f"{what} needs 64-byte aligned arrays (see aligned_zeros)")


def rfft_rows(signal: np.ndarray, threads: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """One-sided FFT of every row of ``signal`` (batch, n), float32 -> complex64 (batch, n // 2 + 1).

    Bit for bit ``torch.fft.rfft`` of the same rows. ``signal`` (and ``out``, where the result goes when
    given) must be C-contiguous and 64-byte aligned (:func:`aligned_zeros`): MKL's choice of kernel
    depends on it.
    """
    batch, n = signal.shape if signal.ndim == 2 else (0, 0)
    out = aligned_zeros((batch, n // 2 + 1), np.complex64) if out is None else out
    _check_rows(((signal, np.float32), (out, np.complex64)), batch, "rfft_rows")
    if out.shape[1] != n // 2 + 1:
        raise ValueError(f"rfft_rows: out needs {n // 2 + 1} columns, has {out.shape[1]}")
    plan = _plan(n, batch, threads)
    _check(plan.lib.DftiComputeForward(plan.handle, signal.ctypes.data, out.ctypes.data), "transform")
    return out


def irfft_rows_unscaled(
    spectrum: np.ndarray, n: int, threads: int | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """``n`` times the inverse of :func:`rfft_rows`: every row of ``spectrum`` (batch, n // 2 + 1),
    complex64, to float32 (batch, n). The imaginary parts of bin 0 (and of bin n / 2 for even ``n``) are
    ignored, as by ``torch.fft.irfft``. The caller scales (e.g. within its window), saving a pass.
    Same layout rules as :func:`rfft_rows`; ``spectrum`` is not changed.
    """
    batch = len(spectrum) if spectrum.ndim == 2 else 0
    out = aligned_zeros((batch, n), np.float32) if out is None else out
    _check_rows(((spectrum, np.complex64), (out, np.float32)), batch, "irfft_rows_unscaled")
    if spectrum.shape[1] != n // 2 + 1 or out.shape[1] != n:
        raise ValueError(f"irfft_rows_unscaled: need {n // 2 + 1} columns in and {n} out")
    plan = _plan(n, batch, threads, backward=True)
    _check(plan.lib.DftiComputeBackward(plan.handle, spectrum.ctypes.data, out.ctypes.data), "inverse transform")
    return out
