"""The output folder of ``riffmask generate``, safe to run into again and again.

- **One writer at a time**: a run holds an ``flock`` on the folder (:func:`riffmask.common.io.locked`; the
  kernel drops it when the process dies, even by ``kill -9``); a second run into the same folder refuses.
- **Complete or finished later**: :func:`riffmask.infer.files.write_item` writes the item's sidecar-to-be
  as a hidden claim ``.NAME.claim`` first, then the files, then the sidecar ``NAME.json`` (the mark of
  a complete item), then drops the claim. A claim without a sidecar is an incomplete item: a rerun of
  the same input makes it again, removing the temporary files a killed write left.
- **Nothing replaced by mistake**: an item is skipped only when its sidecar shows the same input (path
  and content) and the same settings. Another input with the same stem, or other settings (without
  ``--overwrite``), takes the next free name (``NAME_2``, ...); files riffmask did not write are never
  replaced, with or without ``--overwrite``. Names are given by their files (:func:`plan_input`): no
  item is named onto another item's files or the folder's own (``summary.json``, ``report.html``).
- **Every run recorded**: ``summary.json`` describes the latest run at its top level and keeps the
  earlier ones, oldest first, under ``runs``; a ``summary.json`` that riffmask did not write stops the run.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from riffmask.common.config import ConfigError, without_local
from riffmask.common.errors import RiffmaskError
from riffmask.common.io import write_json_atomic
from riffmask.infer.config import GenerateConfig

SUMMARY = "summary.json"
REPORT = "report.html"  # --report (riffmask.metrics.report)
#: The folder's own files: no item is ever named onto them (an input ``summary.wav`` becomes ``summary_2``).
FOLDER_FILES = frozenset({SUMMARY, REPORT})


def item_files(name: str) -> dict[str, str]:
    """The files of the output item ``name``, by role; the sidecar last."""
    return {
        "input_image": f"{name}_input.png",
        "mask_image": f"{name}_mask.png",
        "output_image": f"{name}_output.png",
        "input_audio": f"{name}_input.wav",
        "output_audio": f"{name}.wav",
        "sidecar": f"{name}.json",
    }


def item_names(name: str, count: int) -> list[str]:
    return [name] if count == 1 else [f"{name}_v{k}" for k in range(count)]


def claim_path(out_dir: Path, name: str) -> Path:
    return out_dir / f".{name}.claim"


def remove_temporaries(out_dir: Path, files: list[str]) -> None:
    """Delete the temporary files (``.FILE.<8 random characters>.<suffix>``) that killed atomic writes of
    ``files`` left: that exact shape, for ``.FILE.*`` also matches the claim and files of an item ``FILE``."""
    for file in files:
        for stray in out_dir.glob(f".{file}.????????.*"):
            stray.unlink(missing_ok=True)


def _record(path: Path) -> dict | None:
    """A sidecar or claim written by riffmask generate, else None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("input"), str) and isinstance(data.get("config"), dict):
        return data
    return None


def settings(config: dict) -> dict | None:
    """What decides a result: a saved item config without its local options (output folder, switches);
    None for a config of another version (its settings cannot be compared)."""
    try:
        return without_local(GenerateConfig, config)
    except ConfigError:
        return None


def item_state(out_dir: Path, name: str, source: str, digest: str, config: dict) -> str:
    """``free``, ``incomplete`` (claimed by ``source`` and never finished, or missing a file since),
    ``same`` (made from ``source`` with this content and these settings), ``changed`` (from ``source``,
    other content or settings) or ``foreign`` (another input's, or files riffmask did not write)."""
    sidecar, claim = out_dir / f"{name}.json", claim_path(out_dir, name)
    if sidecar.exists():
        record = _record(sidecar)
        if record is not None and record["input"] == source:
            claim.unlink(missing_ok=True)  # left by a kill between the sidecar and the claim's removal
    elif claim.exists():
        record = _record(claim)
        return "incomplete" if record is not None and record["input"] == source else "foreign"
    else:
        return "foreign" if any((out_dir / f).exists() for f in item_files(name).values()) else "free"
    if record is None or record["input"] != source:
        return "foreign"
    before = settings(record["config"])
    if not (record.get("input_sha256") == digest and before is not None and before == settings(config)):
        return "changed"
    # A result whose files the user deleted since is made again.
    return "same" if all((out_dir / f).exists() for f in item_files(name).values()) else "incomplete"


def plan_input(
    out_dir: Path, stem: str, source: str, digest: str, configs: list[dict], overwrite: bool, taken: set[str]
) -> tuple[list[str], list[str]]:
    """Item names for one input's results (``configs``, one per item) and the state of each.

    The first of ``stem``, ``stem_2``, ... whose items are all free, incomplete or this input's (with
    other settings only under ``overwrite``) and whose files are nobody else's. Names are chosen by
    their files, not by themselves: item ``kettle`` writes ``kettle_input.wav``, the very file an item
    ``kettle_input`` would make its music in. ``taken`` holds the files of the items an earlier input
    of this run was given (nothing is written until all are planned); this input's are added.
    """
    for k in itertools.count(1):
        names = item_names(stem if k == 1 else f"{stem}_{k}", len(configs))
        files = {f for n in names for f in item_files(n).values()}
        if files & (taken | FOLDER_FILES) or any(_shares_files(out_dir, n) for n in names):
            continue
        states = [item_state(out_dir, n, source, digest, c) for n, c in zip(names, configs, strict=True)]
        if "foreign" in states or ("changed" in states and not overwrite):
            continue
        taken.update(files)
        return names, states
    raise AssertionError("unreachable")


def _shares_files(out_dir: Path, name: str) -> bool:
    """Whether a file of item ``name`` is also a file of another item in the folder (complete or claimed),
    even one whose write was killed before that file appeared."""
    return any(
        _record(out_dir / f"{other}.json") is not None or _record(claim_path(out_dir, other)) is not None
        for file in item_files(name).values()
        for other in _items_writing(file)
        if other != name
    )


def _items_writing(file: str) -> set[str]:
    """The names of the items that :func:`item_files` gives ``file``."""
    return {file.removesuffix(end) for end in item_files("").values() if file.endswith(end) and file != end}


def earlier_runs(out_dir: Path) -> list[dict]:
    """The records of the runs before this one, oldest first, from ``summary.json``."""
    path = out_dir / SUMMARY
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not (isinstance(data, dict) and isinstance(data.get("done"), list) and isinstance(data.get("config"), dict)):
        raise RiffmaskError(f"{path}: not a summary written by riffmask generate; it is kept: choose another --out")
    runs = data.pop("runs", [])
    return [*(runs if isinstance(runs, list) else []), data]


def write_summary(out_dir: Path, run: dict, earlier: list[dict]) -> None:
    """``summary.json``: this run at the top level, the earlier ones under ``runs``."""
    remove_temporaries(out_dir, [SUMMARY])
    write_json_atomic(out_dir / SUMMARY, {**run, "runs": earlier})
