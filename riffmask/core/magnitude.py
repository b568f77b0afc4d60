"""``|z|`` of complex64 values rounded exactly as torch's CPU ``abs`` rounds them, with numpy.

torch computes a complex magnitude with SLEEF's ``hypotf_u05`` (AVX2 build, fused multiply-adds)
over vectors of 8, and with the C library's ``hypotf`` for the few elements after the last whole
vector of a row. Both are within 0.5001 ULP of the exact ``sqrt(re² + im²)``, so both give its
correctly rounded float32 except where the exact value lies next to a midpoint between two floats.
Here every value gets the correctly rounded result, computed in float64 (whose error is ~10⁻⁸ ULP of
a float32), except those within about :data:`HARD` ULP of a midpoint, a few in a thousand: those are
computed again by SLEEF's own algorithm (double-float arithmetic), with every fused multiply-add
rounded exactly, or by ``np.hypot`` (the C library's) for a row's tail.

:func:`torch_abs_transposed` does the common case in one pass of a small C kernel (``magnitude.c``,
built on first use like the PGHI kernel) where a C compiler is found: a third of the time of a
spectrogram goes to these magnitudes in numpy.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np

from riffmask.common.native import native_library

#: Distance from a midpoint (in ULP of the result, up to twice this) below which a value is recomputed
#: exactly: ten times the error bound of SLEEF's hypotf_u05 beyond half an ULP.
HARD = 0.001
_F32, _F64 = np.float32, np.float64
#: Elements per SLEEF vector in torch's AVX2 complex kernel (a row's remainder is done one by one).
VECTOR = 8


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 ``a * b + c`` rounded once, as the hardware's fused multiply-add."""
    p = a.astype(_F64) * b  # exact: 24 + 24 bits
    c64 = c.astype(_F64)
    s = p + c64
    virtual = s - p
    error = (p - (s - virtual)) + (c64 - virtual)  # s + error == p + c exactly (TwoSum)
    r = s.astype(_F32)
    # Rounding to float64 first cannot cross a float32 midpoint, but can land on one: then the
    # error says which neighbour the exact sum is nearer to.
    other = np.nextafter(r, np.where(s > r, np.inf, -np.inf).astype(_F32))
    tie = (s == (r.astype(_F64) + other) / 2) & (error != 0)
    return np.where(tie, np.where(error > 0, np.maximum(r, other), np.minimum(r, other)), r)


def _sleef_hypot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SLEEF ``xhypotf_u05`` with ENABLE_FMA_SP (sleefsimdsp.c, df.h), step by step in float32."""
    one, zero = _F32(1), np.zeros_like(x)
    x, y = np.abs(x), np.abs(y)
    low, high = np.minimum(x, y), np.maximum(x, y)
    tiny = high < np.finfo(_F32).tiny
    n = np.where(tiny, low * _F32(1 << 24), low)
    d = np.where(tiny, high * _F32(1 << 24), high)
    # dfdiv((n, 0), (d, 0))
    t = one / d
    s = n * t
    u = _fma(t, n, -s)
    v = _fma(-zero, t, _fma(-d, t, np.full_like(x, one)))
    qx, qy = s, _fma(s, v, _fma(zero, t, u))
    # dfsqu(q)
    sx = qx * qx
    sy = _fma(qx + qx, qy, _fma(qx, qx, -sx))
    # dfadd2(sq, 1)
    ax = sx + one
    w = ax - sx
    ay = ((sx - (ax - w)) + (one - w)) + sy
    # dfsqrt((ax, ay)): dfscale(dfmul(dfadd2((ax, ay), dfmul(r, r)), dfrec(r)), 0.5)
    r = np.sqrt(ax + ay)
    mx = r * r
    my = _fma(r, r, -mx)
    bx = ax + mx
    w = bx - ax
    by = ((ax - (bx - w)) + (mx - w)) + (ay + my)
    cx = one / r
    cy = cx * _fma(-r, cx, np.full_like(x, one))
    ex = bx * cx
    ey = _fma(bx, cy, _fma(by, cx, _fma(bx, cx, -ex)))
    ex, ey = ex * _F32(0.5), ey * _F32(0.5)
    # dfmul((ex, ey), high)
    fx = ex * high
    fy = _fma(ey, high, _fma(ex, high, -fx))
    out = fx + fy
    out = np.where(np.isnan(out), _F32(np.inf), out)
    out = np.where(low == 0, high, out)
    out = np.where(np.isnan(x) | np.isnan(y), _F32(np.nan), out)
    return np.where(np.isinf(x) | np.isinf(y), _F32(np.inf), out)


#: Near a midpoint, nudging the exact value by this fraction of itself changes how it rounds.
_NUDGE = HARD * 2.0**-23
#: Rows of a numpy pass of :func:`torch_abs_transposed`: its float64 temporaries then stay in cache.
_ROWS = 64


def torch_abs(z: np.ndarray) -> np.ndarray:
    """float32 ``|z|`` of a complex64 array (…, row), equal to ``torch.abs`` of it bit for bit."""
    re, im = z.real, z.imag
    exact = np.square(re, dtype=_F64)  # in place from here: temporaries of 16 MB per clip cost as much
    exact += np.square(im, dtype=_F64)
    np.sqrt(exact, out=exact)
    out = exact.astype(_F32)
    nudged = exact * (1 + _NUDGE)
    above = nudged.astype(_F32)
    np.multiply(exact, 1 - _NUDGE, out=nudged)
    hard = above != nudged.astype(_F32)
    if hard.any():
        index = np.nonzero(hard)
        out[index] = _hard_values(z, index)
    return out


def _hard_values(z: np.ndarray, index: tuple[np.ndarray, ...]) -> np.ndarray:
    """``|z[index]|`` computed as torch computes it: SLEEF in whole vectors of a row, libc after them."""
    values = np.empty(len(index[-1]), _F32)
    tail = index[-1] >= z.shape[-1] - z.shape[-1] % VECTOR  # elements after the last whole vector
    vector = tuple(i[~tail] for i in index)
    values[~tail] = _sleef_hypot(z.real[vector], z.imag[vector])
    scalar = tuple(i[tail] for i in index)
    values[tail] = np.hypot(z.real[scalar], z.imag[scalar])
    return values


def torch_abs_transposed(z: np.ndarray) -> np.ndarray:
    """``torch_abs(z).T`` as a C-contiguous (columns, rows) array, for a 2-D complex64 ``z`` whose
    rows are contiguous (a column slice of a larger array is fine)."""
    rows, cols = z.shape
    out = np.empty((cols, rows), _F32)
    kernel = native_kernel()
    if kernel is not None and z.dtype == np.complex64 and z.strides[1] == z.itemsize:
        capacity = rows * cols // 64 + 1024  # a few in a thousand are hard
        hard = np.empty(capacity, np.int64)
        count = kernel(z.ctypes.data, rows, cols, z.strides[0] // z.itemsize, _NUDGE, out, hard, capacity)
        if count <= capacity:
            r, c = np.divmod(hard[:count], cols)
            out[c, r] = _hard_values(z, (r, c))
            return out
    for r in range(0, rows, _ROWS):
        out[:, r : r + _ROWS] = torch_abs(z[r : r + _ROWS]).T
    return out


@functools.cache
def native_kernel() -> ctypes._CFuncPtr | None:
    lib = native_library(Path(__file__).with_name("magnitude.c"))
    if lib is None:
        return None
    kernel = lib.riffmask_magnitude_transposed
    pointer = np.ctypeslib.ndpointer
    kernel.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_double,
        pointer(_F32, flags="C,W"), pointer(np.int64, flags="C,W"), ctypes.c_int64,
    ]  # fmt: skip
    kernel.restype = ctypes.c_int64
    return kernel
