"""Input/output pairs from folders, and their SSIM and chroma similarity (``riffmask eval pairs``).

Two folders pair files by name: ``a.png`` in the input folder goes with ``a.png`` (or ``a.wav``) in
the output folder; the suffixes ``_input`` and ``_output`` that ``riffmask generate`` writes are
ignored, so ``x_input.png`` pairs with ``x_output.png``. One generation folder pairs through its
sidecars (``NAME.json`` -> ``files.input_image`` / ``files.output_image``). Audio files are turned
into spectrogram images first (paper mode), so both sides are always scored as images.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from riffmask.common.errors import RiffmaskError
from riffmask.common.io import inside
from riffmask.core.audio import is_audio_file, load_audio
from riffmask.core.codec import audio_to_image, load_image
from riffmask.core.decode import DecodeConfig
from riffmask.core.params import SpectrogramParams
from riffmask.metrics.results import Row, summarize
from riffmask.metrics.similarity import PAPER_DECODE, pair_metrics

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_ROLE_SUFFIXES = ("_input", "_output")
#: Metrics that ``eval pairs`` computes, in column order.
PAIR_METRICS = ("ssim", "chroma")


@dataclass(frozen=True)
class Pair:
    """One input and the output made from it."""

    name: str
    input_path: Path
    output_path: Path


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _key(path: Path) -> str:
    stem = path.stem
    for suffix in _ROLE_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _index(folder: Path) -> dict[str, Path]:
    """Usable files by pairing key; an image wins over audio of the same name."""
    if not folder.is_dir():
        raise RiffmaskError(f"{folder}: not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not (_is_image(path) or is_audio_file(path)):
            continue
        key = _key(path)
        if key not in found or (_is_image(path) and not _is_image(found[key])):
            found[key] = path
    return found


def find_pairs(input_dir: str | os.PathLike, output_dir: str | os.PathLike) -> tuple[list[Pair], list[Path]]:
    """Pairs of files with matching names, and the files found on one side only."""
    inputs, outputs = _index(Path(input_dir)), _index(Path(output_dir))
    pairs = [Pair(k, inputs[k], outputs[k]) for k in sorted(inputs.keys() & outputs.keys())]
    unmatched = sorted(
        [inputs[k] for k in inputs.keys() - outputs.keys()] + [outputs[k] for k in outputs.keys() - inputs.keys()]
    )
    return pairs, unmatched


def read_sidecars(out_dir: str | os.PathLike) -> list[tuple[str, dict]]:
    """``(name, sidecar)`` for every ``NAME.json`` of a generation folder that lists its files."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise RiffmaskError(f"{out_dir}: not a folder")
    found = []
    for path in sorted(out_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("%s: skipped, not readable JSON (%s)", path, exc)
            continue
        if isinstance(data, dict) and isinstance(data.get("files"), dict):
            found.append((path.stem, data))
    return found


def sidecar_file(out_dir: str | os.PathLike, sidecar: dict, role: str) -> Path | None:
    """The file a sidecar names for ``role`` (e.g. ``output_image``), kept inside ``out_dir``."""
    name = sidecar.get("files", {}).get(role)
    if not name:
        return None
    try:
        path = inside(out_dir, str(name))
    except ValueError:
        log.warning("%s: sidecar names %r outside the folder; ignored", out_dir, name)
        return None
    return path if path.is_file() else None


def generation_pairs(out_dir: str | os.PathLike) -> list[Pair]:
    """Input/output spectrogram pairs of a ``riffmask generate`` folder, from its sidecars."""
    pairs = []
    for name, sidecar in read_sidecars(out_dir):
        src = sidecar_file(out_dir, sidecar, "input_image")
        dst = sidecar_file(out_dir, sidecar, "output_image")
        if src and dst:
            pairs.append(Pair(name, src, dst))
    if not pairs:
        raise RiffmaskError(f"{out_dir}: no sidecars (NAME.json naming input and output images) found")
    return pairs


def load_pair_images(pair: Pair, params: SpectrogramParams = SpectrogramParams()) -> tuple[Image.Image, Image.Image]:
    """Both sides as spectrogram images; audio sides are cut to the shorter sound, then encoded
    in ``params``' format (paper mode)."""
    if _is_image(pair.input_path) and _is_image(pair.output_path):
        return load_image(pair.input_path), load_image(pair.output_path)
    images: list[Image.Image | None] = [None, None]
    sounds = {}
    for i, path in enumerate((pair.input_path, pair.output_path)):
        if _is_image(path):
            images[i] = load_image(path)
        else:
            sounds[i] = load_audio(path)
    shortest = min(len(s) for s in sounds.values())
    for i, sound in sounds.items():
        images[i] = audio_to_image(sound[:shortest], params)
    return images[0], images[1]


def evaluate_pairs(
    pairs: Sequence[Pair],
    decode: DecodeConfig = PAPER_DECODE,
    seed: int = 0,
    progress: Callable[[Pair], None] | None = None,
    params: SpectrogramParams = SpectrogramParams(),
) -> tuple[list[Row], Row]:
    """SSIM and chroma per pair (a failing pair gets an ``error`` and the batch goes on)."""
    rows: list[Row] = []
    for pair in pairs:
        row: Row = {"name": pair.name, "input": str(pair.input_path), "output": str(pair.output_path)}
        try:
            row.update(pair_metrics(*load_pair_images(pair, params), decode, seed))
            row["error"] = ""
        except RiffmaskError as exc:  # names the unreadable file itself
            row.update({m: None for m in PAIR_METRICS}, error=str(exc))
        except ValueError as exc:
            problem = f"{pair.input_path} vs {pair.output_path}: {exc}"
            row.update({m: None for m in PAIR_METRICS}, error=problem)
        if row["error"]:
            log.warning("%s", row["error"])
        rows.append(row)
        if progress:
            progress(pair)
    return rows, summarize(rows, PAIR_METRICS)
