"""The layout of a prepared dataset folder and its readers (``load_prepared``, ``dataset_fingerprint``).

Layout of ``OUT_DIR`` (both ``datasets.load_from_disk`` and ``load_dataset("imagefolder")`` read it)::

    config.yaml  report.json  dataset_dict.json
    train/       <id>.png <id>.wav ... metadata.jsonl   data-*.arrow state.json dataset_info.json
    validation/  (the same)
    .riffmask/   per-source manifests (hidden: both loaders skip it)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from riffmask.common.errors import RiffmaskError
from riffmask.common.io import inside

SPLITS = ("train", "validation")
STATE_DIR = ".riffmask"
COLUMNS = ("image", "caption", "genre", "source", "offset", "max_volume", "audio", "id")


def features():
    import datasets

    string = datasets.Value("string")
    return datasets.Features(
        {
            "image": datasets.Image(),
            "caption": string,
            "genre": string,
            "source": string,
            "offset": datasets.Value("float64"),
            "max_volume": datasets.Value("float64"),
            "audio": string,
            "id": string,
        }
    )


def require_prepared(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        raise RiffmaskError(f"{path}: not a dataset written by `riffmask prep` (no dataset_dict.json)")
    return path


def load_prepared(path: str | os.PathLike):
    """The prepared dataset as a ``datasets.DatasetDict`` with splits ``train`` and ``validation``."""
    import datasets

    path = require_prepared(path)
    dd = datasets.load_from_disk(str(path))
    for split in SPLITS:
        if split not in dd:
            dd[split] = datasets.Dataset.from_dict({k: [] for k in COLUMNS}, features=features())
    return datasets.DatasetDict({split: dd[split] for split in SPLITS})


def dataset_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 over every split's metadata lines and the bytes of the images they name.

    Equal for datasets with the same clips, captions and pixels, wherever they are stored.
    """
    path = require_prepared(path)
    digest = hashlib.sha256()
    for split in SPLITS:
        meta = path / split / "metadata.jsonl"
        if not meta.is_file():
            continue
        for line in meta.read_text(encoding="utf-8").splitlines():
            digest.update(f"{split}\n{line}\n".encode())
            image = inside(path / split, json.loads(line)["file_name"])
            digest.update(hashlib.sha256(image.read_bytes()).digest())
    return digest.hexdigest()
