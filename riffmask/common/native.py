"""Small C kernels, built once with the system's C compiler into the user's cache folder.

A kernel's library is named by a hash of its source, the compiler, the flags and the machine, so an
edited source or another compiler builds anew; the build is written atomically, so processes that
race to build it never load half a file. Where no compiler works or the folder is not writable, the
caller gets None and uses its Python path, which computes the same numbers.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path

from riffmask.common.cache import cache_dir
from riffmask.common.io import atomic_path

#: No fused multiply-adds: the kernels round every product and sum as their Python twins do.
FLAGS = ("-O2", "-fPIC", "-shared", "-ffp-contract=off")
log = logging.getLogger(__name__)


def native_library(source: Path, flags: tuple[str, ...] = FLAGS) -> ctypes.CDLL | None:
    """``source`` built (once per source, compiler, flags and machine) and loaded; None where it cannot be."""
    compiler = os.environ.get("CC") or "cc"
    recipe = source.read_bytes() + " ".join((compiler, *flags, platform.machine(), platform.system())).encode()
    path = cache_dir() / "native" / f"{source.stem}-{hashlib.sha256(recipe).hexdigest()[:20]}.so"
    if not path.is_file():
        if shutil.which(compiler) is None:
            return None
        try:
            with atomic_path(path, suffix=".so") as tmp:
                subprocess.run([compiler, *flags, "-o", str(tmp), str(source), "-lm"], check=True,
                               capture_output=True, timeout=120)  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("cannot build %s with %s (%s)", source.name, compiler, exc)
            return None
    try:
        return ctypes.CDLL(str(path))
    except OSError as exc:
        log.debug("cannot load %s (%s)", path, exc)
        return None
