"""The material of a dataset: genre folders of audio files, their captions and their split."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from riffmask.common.errors import RiffmaskError
from riffmask.common.io import file_sha256
from riffmask.core.audio import is_audio_file

#: Files next to the audio that are read (captions) rather than reported as ignored.
CAPTION_SUFFIX = ".txt"


@dataclass(frozen=True)
class Source:
    """One audio file of a genre folder, named by its path relative to the genre root."""

    path: Path
    rel: str  # POSIX path relative to the genre root, e.g. "jazz/live/take1.mp3"
    genre: str  # the top-level folder
    sha256: str = ""  # of the file's bytes: what decides whether it changed
    same_as: str | None = None  # an earlier source with the very same bytes, whose split this one takes

    @property
    def key(self) -> str:
        """A stable, file-name-safe identifier of the source path."""
        return hashlib.sha1(self.rel.encode("utf-8")).hexdigest()[:16]

    def signature(self) -> list:
        """Content and split group: a changed file (even with its modification time restored), or one
        that gained or lost an identical twin, is prepared again."""
        return [self.path.stat().st_size, self.sha256, self.same_as or self.rel]

    def split(self, validation_fraction: float, seed: int) -> str:
        """``train`` or ``validation`` from a hash of the path (of its identical twin's, if any): every
        clip of a file, and of its copies, lands in the same split (no leakage), and adding files never
        moves the ones already prepared."""
        digest = hashlib.sha256(f"{seed}:{self.same_as or self.rel}".encode()).digest()
        return "validation" if int.from_bytes(digest[:8], "big") / 2**64 < validation_fraction else "train"

    def caption(self, template: str, use_txt: bool) -> str:
        """The file's own caption (``song.txt`` beside ``song.mp3``) when usable, else the template."""
        if use_txt:
            text, _ = caption_text(self.path.with_suffix(CAPTION_SUFFIX))
            if text:
                return text
        return format_caption(template, self.genre, self.path.stem)


def caption_text(path: Path) -> tuple[str | None, str | None]:
    """(caption, None) from a caption file, (None, why not) when it is not plain UTF-8 text, (None, None)
    when there is none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"caption not used: unreadable ({exc.strerror})"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"caption not used: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
    if any(ord(c) < 32 and c not in "\t\n\r" or 0x7F <= ord(c) < 0xA0 for c in text):
        return None, "caption not used: it holds control characters, not plain text"
    return " ".join(text.split()) or None, None


def readable_name(name: str) -> str:
    """``lofi_hip-hop`` -> ``lofi hip hop``: folder and file names as words for a caption."""
    return " ".join(name.replace("_", " ").replace("-", " ").split())


def format_caption(template: str, genre: str, stem: str) -> str:
    """Fill ``{genre}`` and ``{stem}`` of a caption template."""
    return template.format(genre=readable_name(genre), stem=readable_name(stem)).strip()


@dataclass
class Scan:
    """What :func:`scan_genres` found under a genre root."""

    sources: list[Source]
    ignored: list[dict[str, str]]  # entries that are not audio files of a genre, with the reason
    unreadable: list[dict[str, str]]  # audio entries that cannot be read (dangling links, no permission)
    empty_genres: list[str]  # genre folders holding no audio file at all

    @property
    def duplicates(self) -> list[dict[str, str]]:
        return [{"source": s.rel, "same_as": s.same_as} for s in self.sources if s.same_as]

    def findings(self) -> dict[str, list]:
        """What the report lists besides the clips: the same findings leave a finished folder as it is."""
        return {
            "ignored": self.ignored,
            "unreadable": self.unreadable,
            "empty_genres": self.empty_genres,
            "duplicates": self.duplicates,
        }


def scan_genres(root: str | os.PathLike) -> Scan:
    """The audio files of every genre sub-folder of ``root`` in sorted order, the files ignored and
    the audio entries that cannot be read, each with the reason. Folder links are followed (a loop is
    listed as ignored); hidden files and folders are skipped silently. Files with identical bytes are
    linked (``same_as``)."""
    root = Path(root)
    if not root.is_dir():
        raise RiffmaskError(f"{root}: genre root is not a folder")
    sources: list[Source] = []
    ignored: list[dict[str, str]] = []
    unreadable: list[dict[str, str]] = []
    genres: list[str] = []
    for dirpath, dirnames, filenames in _folders(root, ignored):
        if dirpath == str(root):
            genres = dirnames
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if "/" not in rel:
                ignored.append({"file": rel, "reason": "not inside a genre folder"})
            elif is_audio_file(path):
                try:
                    digest = file_sha256(path)
                except OSError as exc:
                    dangling = path.is_symlink() and not path.exists()
                    reason = "a dangling symbolic link" if dangling else f"unreadable ({exc.strerror})"
                    unreadable.append({"source": rel, "reason": reason})
                    continue
                sources.append(Source(path, rel, rel.split("/", 1)[0], digest))
            elif path.suffix.lower() != CAPTION_SUFFIX:
                ignored.append({"file": rel, "reason": f"not an audio file extension ({path.suffix or 'none'})"})
            elif (problem := caption_text(path)[1]) is not None:
                ignored.append({"file": rel, "reason": problem})
    if not genres:
        raise RiffmaskError(f"{root}: no genre folders (expected sub-folders such as jazz/, lofi/ holding audio)")
    sources.sort(key=lambda s: s.rel)
    first: dict[str, str] = {}
    for k, source in enumerate(sources):
        twin = first.setdefault(source.sha256, source.rel)
        if twin != source.rel:
            sources[k] = dataclasses.replace(source, same_as=twin)
    with_audio = {s.genre for s in sources} | {u["source"].split("/", 1)[0] for u in unreadable}
    return Scan(sources, ignored, unreadable, [g for g in genres if g not in with_audio])


def _folders(root: Path, ignored: list[dict[str, str]]) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` of ``root`` without hidden folders, following folder links (a genre may be a link to
    where the sounds live) except one that leads back to a folder it lies in: such a loop is listed in
    ``ignored``."""
    # Real paths of each folder still to visit and of the folders above it.
    chains = {str(root): {os.path.realpath(root)}}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        above = chains.pop(dirpath)
        kept = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            path = os.path.join(dirpath, name)
            real = os.path.realpath(path)
            if real in above:
                rel = Path(path).relative_to(root).as_posix()
                ignored.append({"file": rel, "reason": f"a folder link back to {real}, which holds it: a loop"})
                continue
            chains[path] = above | {real}
            kept.append(name)
        dirnames[:] = kept
        yield dirpath, kept, filenames
