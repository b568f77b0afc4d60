"""Fréchet Audio Distance between embedding sets, with FAD-infinity (SPEC §4).

``FAD = |mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr((C1 C2)^(1/2))`` between Gaussians fitted to the
embedding frames (covariance with N - 1). The trace of the matrix square root is computed from
symmetric eigen-decompositions only: with ``S = C1^(1/2)`` (from ``eigh``), ``C1 C2`` is similar to
the positive semi-definite ``S C2 S``, so ``tr((C1 C2)^(1/2)) = sum(sqrt(eig(S C2 S)))``. Tiny
negative eigenvalues from rounding are clipped to zero; nothing complex ever appears, unlike
``scipy.linalg.sqrtm``.

Reference statistics use fadtk's ``.npz`` layout: arrays ``<model>.mu`` and ``<model>.cov``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from riffmask.common.errors import RiffmaskError
from riffmask.common.io import atomic_path

log = logging.getLogger(__name__)


@dataclass
class GaussianStats:
    """Mean and covariance of embedding frames, with how many frames (and files) they came from."""

    mu: np.ndarray
    cov: np.ndarray
    frames: int | None = None
    files: int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def dims(self) -> int:
        return int(self.mu.shape[0])


def gaussian_stats(frames: np.ndarray, files: int | None = None) -> GaussianStats:
    """Fit a Gaussian to ``frames`` (N x D): mean and unbiased covariance (N - 1)."""
    x = np.asarray(frames, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise RiffmaskError(f"need at least 2 embedding frames as an (N, D) array, got shape {x.shape}")
    return GaussianStats(
        x.mean(axis=0),
        np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1]),
        frames=int(x.shape[0]),
        files=files,
    )


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(c1: np.ndarray, c2: np.ndarray) -> float:
    """``tr((C1 C2)^(1/2))`` for symmetric positive semi-definite C1, C2, via ``eigh`` only."""
    root = _psd_sqrt(np.asarray(c1, dtype=np.float64))
    inner = root @ np.asarray(c2, dtype=np.float64) @ root
    values = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    """Fréchet distance between two Gaussians (clipped at 0 against rounding)."""
    if a.mu.shape != b.mu.shape:
        raise RiffmaskError(f"embedding sizes differ: {a.dims} vs {b.dims} dimensions (different models?)")
    diff = a.mu - b.mu
    value = diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2.0 * trace_sqrt_product(a.cov, b.cov)
    return max(float(value), 0.0)


# --------------------------------------------------------------------------- reference statistics
def load_reference_stats(path: str | os.PathLike, model: str | None = None) -> GaussianStats:
    """``<model>.mu`` / ``<model>.cov`` from an ``.npz`` (fadtk's layout); ``model`` may be omitted
    when the file holds exactly one model. Only plain arrays are read (no pickle)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise RiffmaskError(f"{path}: not a readable .npz of statistics ({exc})") from None
    names = (k.removesuffix(".mu") for k in arrays if k.endswith(".mu"))
    models = sorted(m for m in names if f"{m}.cov" in arrays)
    if not models and {"mu", "cov"} <= arrays.keys():  # plain mu/cov arrays: one unnamed model
        arrays = {f"{model or ''}.{k}": v for k, v in arrays.items()}
        models = [model or ""]
    if model is None:
        if len(models) != 1:
            raise RiffmaskError(f"{path}: holds statistics for {models or 'no model'}; name one")
        model = models[0]
    if model not in models:
        found = models or "none"
        raise RiffmaskError(f"{path}: no arrays '{model}.mu' and '{model}.cov' (models in the file: {found})")
    mu, cov = arrays[f"{model}.mu"].astype(np.float64), arrays[f"{model}.cov"].astype(np.float64)
    if mu.ndim != 1 or cov.shape != (mu.shape[0], mu.shape[0]):
        raise RiffmaskError(f"{path}: '{model}' has mu of shape {mu.shape} and cov of shape {cov.shape}")
    frames = arrays.get(f"{model}.n")
    return GaussianStats(mu, cov, frames=int(frames) if frames is not None else None, meta={"model": model})


def save_stats(path: str | os.PathLike, stats: GaussianStats, model: str) -> None:
    """Write statistics in fadtk's layout (plus ``<model>.n``, the frame count), atomically."""
    arrays = {f"{model}.mu": stats.mu, f"{model}.cov": stats.cov}
    if stats.frames is not None:
        arrays[f"{model}.n"] = np.asarray(stats.frames)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


# --------------------------------------------------------------------------- scores
def of_size(embeddings: Mapping[str, np.ndarray], dims: int | None = None) -> tuple[dict[str, np.ndarray], list[dict]]:
    """The embeddings of ``dims`` dimensions (default: the most common size), and a failure (``{"name",
    "error"}``) for each other one: a file from another embedding model must not stop the batch."""
    if dims is None and embeddings:
        sizes = [np.atleast_2d(e).shape[1] for e in embeddings.values()]
        dims = max(set(sizes), key=sizes.count)
    kept, odd = {}, []
    for name, frames in embeddings.items():
        size = np.atleast_2d(frames).shape[1]
        if size == dims:
            kept[name] = frames
        else:
            odd.append({"name": name, "error": f"{name}: {size}-dimensional embedding, the others have {dims} "
                                               "(another embedding model?)"})
            log.warning("%s", odd[-1]["error"])
    return kept, odd


def stack_frames(embeddings: Mapping[str, np.ndarray]) -> np.ndarray:
    """All frames of all files as one (N, D) array."""
    if not embeddings:
        raise RiffmaskError("no embeddings to score")
    return np.concatenate([np.atleast_2d(e) for e in embeddings.values()], axis=0)


def set_fad(embeddings: Mapping[str, np.ndarray], reference: GaussianStats) -> dict:
    """FAD of a whole set against the reference, with its sample counts."""
    frames = stack_frames(embeddings)
    return {
        "fad": frechet_distance(gaussian_stats(frames), reference),
        "files": len(embeddings),
        "frames": int(frames.shape[0]),
    }


def per_file_fad(embeddings: Mapping[str, np.ndarray], reference: GaussianStats) -> list[dict]:
    """One FAD per file (its own frames against the reference); NaN with a note below 2 frames."""
    rows = []
    for name, frames in embeddings.items():
        frames = np.atleast_2d(frames)
        row = {"name": name, "frames": int(frames.shape[0])}
        if frames.shape[0] < 2:
            row.update(fad=math.nan, error="fewer than 2 embedding frames")
        else:
            row.update(fad=frechet_distance(gaussian_stats(frames), reference), error="")
        rows.append(row)
    return rows


def fad_infinity(
    frames: np.ndarray,
    reference: GaussianStats,
    sizes: Sequence[int] | None = None,
    repeats: int = 3,
    replace: bool = False,
    seed: int = 0,
) -> dict:
    """FAD-infinity (Chong & Forsyth, 2020): FAD of random subsets of n frames at several n, a least-squares
    line ``FAD = a / n + b``, and ``b`` (the value at n -> infinity) reported with the fit.

    By default subsets are drawn without replacement, as fadtk does; ``sizes`` defaults to 10
    values spread from a fifth of the frames (at least ``D + 2``) up to all of them.
    """
    x = np.asarray(frames, dtype=np.float64)
    total, dims = x.shape
    if sizes is None:
        low = min(max(dims + 2, total // 5), total)
        sizes = sorted(set(np.linspace(low, total, 10).astype(int).tolist()))
    sizes = [int(n) for n in sizes]
    if len(set(sizes)) < 2 or min(sizes) < 2 or (not replace and max(sizes) > total):
        raise RiffmaskError(f"FAD-infinity needs at least two sample sizes in [2, {total}], got {sizes}")
    rng = np.random.default_rng(seed)
    points = []
    for n in sizes:
        # Without replacement a full-size draw is always the same set: one draw is enough.
        draws = 1 if (n == total and not replace) else repeats
        for _ in range(draws):
            idx = rng.choice(total, size=n, replace=replace)
            points.append((n, frechet_distance(gaussian_stats(x[idx]), reference)))
    inv_n = np.array([1.0 / n for n, _ in points])
    values = np.array([v for _, v in points])
    design = np.stack([inv_n, np.ones_like(inv_n)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(design, values, rcond=None)
    fitted = design @ np.array([slope, intercept])
    spread = float(((values - values.mean()) ** 2).sum())
    r2 = 1.0 - float(((values - fitted) ** 2).sum()) / spread if spread > 0 else 1.0
    return {
        "fad_inf": float(intercept),
        "slope": float(slope),
        "r2": r2,
        "frames": int(total),
        "points": [{"n": n, "fad": v} for n, v in points],
    }
