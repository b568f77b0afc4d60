"""Rebuilding a prepared dataset from its per-source manifests: metadata, Arrow files, the report.

Run at the end of every ``riffmask prep`` that changed something; files that no record names
(left-overs of a crash) are removed then.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from riffmask.common.config import save_config
from riffmask.common.io import inside, write_json_atomic, write_text_atomic
from riffmask.data_prep.config import PrepConfig
from riffmask.data_prep.readers import COLUMNS, SPLITS, STATE_DIR, dataset_fingerprint, features
from riffmask.data_prep.sources import Scan, Source

_ARROW_FILES = ("state.json", "dataset_info.json")


def _records(sources: list[Source], done: dict[str, dict], cfg: PrepConfig) -> list[dict[str, Any]]:
    """Every clip record in deterministic order (source path, then offset), with its caption."""
    rows = []
    for source in sources:
        caption = source.caption(cfg.caption_template, cfg.txt_captions)
        rows.extend({**r, "caption": caption} for r in done[source.rel]["clips"])
    return rows


def _content_hash(scan: Scan, done: dict[str, dict], cfg: PrepConfig) -> str:
    """Of everything the folder's files and report show: clips, settings and what the scan found."""
    text = json.dumps([_records(scan.sources, done, cfg), cfg.content_settings(), scan.findings()], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def finalized_matches(out_dir: Path, scan: Scan, done: dict, cfg: PrepConfig) -> bool:
    """Whether the folder was last finalized from the same clips, settings and findings."""
    try:
        state = json.loads((out_dir / STATE_DIR / "finalized.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = ("report.json", "dataset_dict.json")
    return state.get("hash") == _content_hash(scan, done, cfg) and all((out_dir / f).is_file() for f in files)


def finalize(genre_root: Path, out_dir: Path, scan: Scan, done: dict, cfg: PrepConfig) -> dict[str, Any]:
    """Rewrite metadata, Arrow files and config from the manifests and return the report; the caller
    writes it, then :func:`mark_finalized`."""
    rows = _records(scan.sources, done, cfg)
    by_split = {split: [r for r in rows if r["split"] == split] for split in SPLITS}
    for split, split_rows in by_split.items():
        folder = out_dir / split
        folder.mkdir(parents=True, exist_ok=True)
        meta = folder / "metadata.jsonl"
        if split_rows:
            lines = (json.dumps(_metadata_row(r), ensure_ascii=False) for r in split_rows)
            write_text_atomic(meta, "".join(line + "\n" for line in lines))
        elif meta.exists():
            meta.unlink()
    _write_arrow(out_dir, by_split)
    _remove_strays(out_dir, rows)
    save_config(cfg, out_dir / "config.yaml")
    return _report(genre_root, out_dir, scan, done, by_split)


def mark_finalized(out_dir: Path, scan: Scan, done: dict, cfg: PrepConfig) -> None:
    """Record what the folder now holds; written last, so that a run stopped before it finalizes again."""
    write_json_atomic(out_dir / STATE_DIR / "finalized.json", {"hash": _content_hash(scan, done, cfg)})


def _metadata_row(row: dict[str, Any]) -> dict[str, Any]:
    """A metadata.jsonl line: imagefolder's ``file_name`` (relative to the split folder) + the columns."""
    out = {"file_name": Path(row["image"]).name}
    out.update((k, row[k]) for k in COLUMNS if k != "image")
    return out


def _write_arrow(out_dir: Path, by_split: dict[str, list[dict]]) -> None:
    """Save the DatasetDict (PNG bytes embedded) beside the images, replacing the previous one file by file."""
    import datasets

    schema = features()
    columns = {
        split: {k: [str(inside(out_dir, r["image"])) if k == "image" else r[k] for r in rows] for k in COLUMNS}
        for split, rows in by_split.items()
    }
    staging = out_dir / STATE_DIR / "arrow"
    shutil.rmtree(staging, ignore_errors=True)
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        # datasets cannot save or load a split of 0 rows: an empty split is left out (load_prepared adds it).
        dd = datasets.DatasetDict(
            {s: datasets.Dataset.from_dict(c, features=schema) for s, c in columns.items() if by_split[s]}
        )
        dd.save_to_disk(str(staging))
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    for split in SPLITS:
        new = {p.name for p in (staging / split).iterdir()} if (staging / split).is_dir() else set()
        for old in (out_dir / split).iterdir():
            if old.name in _ARROW_FILES or (old.name.startswith("data-") and old.suffix == ".arrow"):
                if old.name not in new:
                    old.unlink()
        for name in sorted(new):
            os.replace(staging / split / name, out_dir / split / name)
    os.replace(staging / "dataset_dict.json", out_dir / "dataset_dict.json")
    shutil.rmtree(staging, ignore_errors=True)


def _remove_strays(out_dir: Path, rows: list[dict]) -> None:
    """Delete clip files no record names and temporary files of interrupted writes."""
    keep = {r[k] for r in rows for k in ("image", "audio")}
    for split in SPLITS:
        for path in (out_dir / split).iterdir():
            rel = f"{split}/{path.name}"
            stray_clip = path.suffix in (".png", ".wav") and rel not in keep
            temporary = path.name.startswith(".") and path.is_file()
            if stray_clip or temporary:
                path.unlink()


def _report(genre_root: Path, out_dir: Path, scan: Scan, done: dict, by_split: dict) -> dict[str, Any]:
    manifests = [done[s.rel] for s in scan.sources]
    read = [m for m in manifests if m["status"] == "done"]
    dropped = [{"source": m["source"], **d} for m in read for d in m["dropped"]]
    clips = [r for rows in by_split.values() for r in rows]
    report = {
        "genre_root": str(genre_root),
        "out_dir": str(out_dir),
        "files_found": len(scan.sources),
        "files_read": len(read),
        "seconds_read": round(sum(m["seconds"] for m in read), 2),
        "clips_written": len(clips),
        "clips_per_split": {s: len(rows) for s, rows in by_split.items()},
        "clips_per_genre": dict(sorted(Counter(r["genre"] for r in clips).items())),
        "dropped": {"count": len(dropped), "by_reason": dict(Counter(d["reason"] for d in dropped)), "clips": dropped},
        # Unreadable entries are listed as failures, never retried as sources.
        "rejected": [{"source": m["source"], "reason": m["reason"]} for m in manifests if m["status"] != "done"]
        + scan.unreadable,
        "ignored": scan.ignored,
        "warnings": [],
        "fingerprint": dataset_fingerprint(out_dir),
    }
    if not by_split["validation"] and len(read) > 1:
        report["warnings"].append("the validation split is empty: raise validation_fraction or add files")
    if not clips:
        report["warnings"].append("no clips were written: every file was rejected or silent")
    if scan.duplicates:
        report["duplicates"] = scan.duplicates
        report["warnings"].append(
            f"{len(scan.duplicates)} file(s) hold the same audio as another (see duplicates): each is kept in its "
            "twin's split, so that no sound is both trained on and validated against"
        )
    report["warnings"] += scan_warnings(scan)
    return report


def scan_warnings(scan: Scan) -> list[str]:
    """Warnings from the scan alone (a dry run shows them too)."""
    return [
        f"genre folder {genre}/ holds no audio files: the genre {genre!r} is not in the dataset"
        for genre in scan.empty_genres
    ]
