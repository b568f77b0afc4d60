"""The material of a dataset: genre folders of audio files, their captions and their split."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from riffmask.common.errors import RiffmaskError
from riffmask.core.audio import is_audio_file

#: Files next to the audio that are read (captions) rather than reported as ignored.
CAPTION_SUFFIX = ".txt"


@dataclass(frozen=True)
class Source:
    """One audio file of a genre folder, named by its path relative to the genre root."""

    path: Path
    rel: str  # POSIX path relative to the genre root, e.g. "jazz/live/take1.mp3"
    genre: str  # the top-level folder

    @property
    def key(self) -> str:
        """A stable, file-name-safe identifier of the source path."""
        return hashlib.sha1(self.rel.encode("utf-8")).hexdigest()[:16]

    def signature(self) -> list[int]:
        """Size and modification time: a changed file is prepared again."""
        st = self.path.stat()
        return [st.st_size, st.st_mtime_ns]

    def split(self, validation_fraction: float, seed: int) -> str:
        """``train`` or ``validation`` from a hash of the path: every clip of a file lands in the same
        split (no leakage), and adding files never moves the ones already prepared."""
        digest = hashlib.sha256(f"{seed}:{self.rel}".encode()).digest()
        return "validation" if int.from_bytes(digest[:8], "big") / 2**64 < validation_fraction else "train"

    def caption(self, template: str, use_txt: bool) -> str:
        """The file's own caption (``song.txt`` beside ``song.mp3``) when present, else the template."""
        if use_txt:
            text_file = self.path.with_suffix(CAPTION_SUFFIX)
            if text_file.is_file():
                text = " ".join(text_file.read_text(encoding="utf-8", errors="replace").split())
                if text:
                    return text
        return format_caption(template, self.genre, self.path.stem)


def readable_name(name: str) -> str:
    """``lofi_hip-hop`` -> ``lofi hip hop``: folder and file names as words for a caption."""
    return " ".join(name.replace("_", " ").replace("-", " ").split())


def format_caption(template: str, genre: str, stem: str) -> str:
    """Fill ``{genre}`` and ``{stem}`` of a caption template."""
    return template.format(genre=readable_name(genre), stem=readable_name(stem)).strip()


def scan_genres(root: str | os.PathLike) -> tuple[list[Source], list[dict[str, str]]]:
    """The audio files of every genre sub-folder of ``root`` in sorted order, and the files ignored
    (with the reason). Hidden files and folders are skipped silently."""
    root = Path(root)
    if not root.is_dir():
        raise RiffmaskError(f"{root}: genre root is not a folder")
    sources: list[Source] = []
    ignored: list[dict[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if "/" not in rel:
                ignored.append({"file": rel, "reason": "not inside a genre folder"})
            elif is_audio_file(path):
                sources.append(Source(path, rel, rel.split("/", 1)[0]))
            elif path.suffix.lower() != CAPTION_SUFFIX:
                ignored.append({"file": rel, "reason": f"not an audio file extension ({path.suffix or 'none'})"})
    if not any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
        raise RiffmaskError(f"{root}: no genre folders (expected sub-folders such as jazz/, lofi/ holding audio)")
    sources.sort(key=lambda s: s.rel)
    return sources, ignored
