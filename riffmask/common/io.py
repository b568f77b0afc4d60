"""Small file-system helpers shared by every stage: atomic writes and safe output names."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from riffmask.common.errors import RiffmaskError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    A crash or an exception leaves ``path`` as it was (absent or the previous version), never half
    written. ``suffix`` keeps the extension for writers that pick the format from the name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); give it the permissions any new file would get.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(name: str, fallback: str = "item") -> str:
    """A file-name stem made from untrusted text that cannot leave its folder or hide itself."""
    stem = _UNSAFE.sub("_", Path(str(name)).name).strip("._")
    return stem[:120] or fallback


def inside(folder: str | os.PathLike, name: str) -> Path:
    """``folder / name`` after checking that the result stays inside ``folder``."""
    folder = Path(folder).resolve()
    target = (folder / name).resolve()
    if folder != target and folder not in target.parents:
        raise ValueError(f"output name {name!r} would escape {folder}")
    return target


def output_folder(path: str | os.PathLike, option: str) -> Path:
    """``path`` ready to be written into (created if missing), else a one-line error naming ``option``.

    Commands call it before loading a model, so that a bad output costs nothing.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RiffmaskError(f"{option}: {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RiffmaskError(f"{option}: cannot create the folder {path} ({exc.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RiffmaskError(f"{option}: the folder {path} is not writable")
    return path


def output_file(
    path: str | os.PathLike,
    option: str,
    suffix: str | None = None,
    keep: dict[str, str | os.PathLike] | None = None,
) -> Path:
    """``path`` ready to be written (its folder created if missing), else a one-line error naming ``option``.

    ``suffix``: the extension of the format written (``.png``), so that no file is misnamed. ``keep``: the
    command's other files by name (its inputs, its other outputs), which ``path`` must not replace: not
    the same path, link or hard link, nor for a folder (a model) a file inside it.
    """
    path = Path(path)
    if path.is_dir():
        raise RiffmaskError(f"{option}: {path} is a folder, not a file")
    if suffix is not None and path.suffix.lower() != suffix:
        raise RiffmaskError(f"{option}: {path} would hold {suffix[1:].upper()} data; give a name ending in {suffix}")
    for name, other in (keep or {}).items():
        if _replaces(path, Path(other)):
            raise RiffmaskError(f"{option}: {path} would replace {name} ({other}); choose another file")
    if path.exists() and not os.access(path, os.W_OK):
        raise RiffmaskError(f"{option}: {path} is not writable")
    output_folder(path.parent, option)
    return path


def _replaces(path: Path, other: Path) -> bool:
    """Whether writing ``path`` would replace ``other``, or for a folder ``other`` a file inside it."""
    if path.resolve() == other.resolve():
        return True
    if not path.exists() or not other.exists():
        return False
    return os.path.samefile(path, other) or (other.is_dir() and other.resolve() in path.resolve().parents)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_held: dict[Path, int] = {}  # folders this process holds the lock of: holding is re-entrant


@contextlib.contextmanager
def locked(out_dir: str | os.PathLike, command: str, option: str = "out") -> Iterator[Path]:
    """Hold the writer lock of ``out_dir`` (created if missing, a bad one named as ``option``) for the block;
    refuse if another run holds it (``command``: what the refusal calls that run).

    The lock is ``flock`` on the folder itself: no lock file to leave behind, and the kernel releases
    it when the process ends, however it ends.
    """
    created = not Path(out_dir).exists()
    out_dir = output_folder(out_dir, option)
    key = out_dir.resolve()
    if key in _held:
        yield out_dir
        return
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RiffmaskError(
            f"another {command} is writing to {out_dir}; wait for it to finish or choose another output folder"
        ) from None
    _held[key] = fd
    try:
        yield out_dir
    finally:
        del _held[key]
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a run that stopped before writing anything leaves no trace
        os.close(fd)
