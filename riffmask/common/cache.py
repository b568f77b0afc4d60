"""A small on-disk cache of derived arrays (filter banks, their inverses) in the user's cache folder.

Arrays that take a second to build but never change for given parameters are stored once in
``$RIFFMASK_CACHE`` (default ``$XDG_CACHE_HOME/riffmask``, else ``~/.cache/riffmask``), keyed by a
hash of those parameters, written atomically and checked by a digest when read: a missing, truncated
or altered file is rebuilt, and an unwritable folder only costs the rebuild.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from riffmask.common.io import atomic_path

CACHE_ENV = "RIFFMASK_CACHE"
_DIGEST = "__sha256__"
log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """``$RIFFMASK_CACHE``, else ``$XDG_CACHE_HOME/riffmask``, else ``~/.cache/riffmask``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "riffmask"


def _digest(arrays: dict[str, np.ndarray]) -> np.ndarray:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8)


def cached_arrays(
    name: str, key: dict[str, Any], build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """The arrays ``build()`` returns for ``key``, from the cache when a sound copy is there.

    ``key`` holds everything the arrays depend on (JSON-serialisable); ``name`` says what they are.
    The arrays returned are bit for bit those ``build()`` gives.
    """
    tag = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / f"{name}-{tag}.npz"
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files if k != _DIGEST}
            if np.array_equal(stored[_DIGEST], _digest(arrays)):
                return arrays
        log.debug("cache file %s does not match its digest; rebuilding", path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.debug("cache file %s unusable (%s); rebuilding", path, exc)
    arrays = build()
    try:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **arrays, **{_DIGEST: _digest(arrays)})
    except OSError as exc:  # a read-only or full disk only costs the rebuild next time
        log.debug("cannot write cache file %s (%s)", path, exc)
    return arrays
