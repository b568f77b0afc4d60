"""Genre folders -> a training dataset of spectrogram clips (``riffmask prep``): the whole run.

Sources are found (:mod:`~riffmask.data_prep.sources`), each pending one becomes clips and a manifest
(:mod:`~riffmask.data_prep.source_file`, in a pool of ``num_proc`` processes, by default one per core),
and the folder is rebuilt from the manifests (:mod:`~riffmask.data_prep.writers`);
:mod:`~riffmask.data_prep.readers` holds the layout and the readers. Safe to interrupt (even ``kill -9``) and rerun.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from riffmask.common.config import ConfigError
from riffmask.common.errors import RiffmaskError
from riffmask.common.io import locked, write_json_atomic
from riffmask.core.audio import AudioError, audio_header
from riffmask.data_prep.clips import clip_starts
from riffmask.data_prep.config import PrepConfig, available_cores
from riffmask.data_prep.readers import STATE_DIR
from riffmask.data_prep.source_file import (
    check_length,
    check_rate,
    failed_manifest,
    init_worker,
    prepare_task,
    read_manifest,
    warm_codec,
)
from riffmask.data_prep.sources import Scan, Source, scan_genres
from riffmask.data_prep.writers import finalize, finalized_matches, mark_finalized, scan_warnings


@dataclass
class PrepResult:
    """What a run did; ``report`` is what report.json holds."""

    out_dir: Path
    report: dict[str, Any]
    up_to_date: bool = False


def prepare_dataset(
    genre_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: PrepConfig,
    dry_run: bool = False,
    progress: bool | None = None,
) -> PrepResult:
    """Prepare (or bring up to date) the dataset of ``genre_root`` in ``out_dir``; see the module doc.

    ``progress``: show a progress bar (``None``: only on a terminal). One run at a time per folder: a second
    one refuses while the first holds the folder's lock. Ctrl-C stops the workers; finished files are kept.
    """
    started = time.perf_counter()
    genre_root, out_dir = Path(genre_root), Path(out_dir)
    if out_dir.resolve().is_relative_to(genre_root.resolve()):
        raise RiffmaskError(
            f"OUT_DIR: {out_dir} lies inside the genre root {genre_root}; its clips would be read back as a "
            "genre on every rerun: choose a folder outside it"
        )
    scan = scan_genres(genre_root)
    if dry_run:
        return PrepResult(out_dir, _plan(scan, _done(out_dir, scan, cfg), cfg))
    with locked(out_dir, "riffmask prep", "OUT_DIR"):
        _check_settings(out_dir, cfg)
        done = _done(out_dir, scan, cfg)
        pending = [s for s in scan.sources if s.rel not in done]
        if not pending and finalized_matches(out_dir, scan, done, cfg):
            report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
            return PrepResult(out_dir, report, up_to_date=True)
        done.update(_prepare(pending, cfg, out_dir, progress))
        report = finalize(genre_root, out_dir, scan, done, cfg)
        report["run"] = {"files_prepared": len(pending), "seconds": round(time.perf_counter() - started, 2)}
        audio_seconds = sum(done[s.rel]["seconds"] for s in pending)
        report["run"]["x_real_time"] = round(audio_seconds / max(report["run"]["seconds"], 1e-9), 1)
        write_json_atomic(out_dir / "report.json", report)
        mark_finalized(out_dir, scan, done, cfg)
    return PrepResult(out_dir, report)


def _done(out_dir: Path, scan: Scan, cfg: PrepConfig) -> dict[str, dict]:
    """The manifests of the sources already prepared, by source path."""
    return {s.rel: m for s in scan.sources if (m := read_manifest(out_dir, s, cfg)) is not None}


def _prepare(pending: list[Source], cfg: PrepConfig, out_dir: Path, progress: bool | None) -> dict[str, dict]:
    """Prepare ``pending`` (in a pool of workers when there are several) and return their manifests."""
    from tqdm.auto import tqdm

    new = [(s, cfg, out_dir) for s in pending]
    with tqdm(total=len(new), unit="file", desc="prep", disable=None if progress is None else not progress) as bar:
        if cfg.workers > 1 and len(new) > 1:
            return _in_pool(new, cfg, bar)
        done = {}
        for task in new:
            done[task[0].rel] = prepare_task(task)
            bar.update()
        return done


def _in_pool(new: list[tuple[Source, PrepConfig, Path]], cfg: PrepConfig, bar) -> dict[str, dict]:
    """The manifests of ``new``, made by a pool of workers (``bar`` counts them as they finish).

    On Ctrl-C the queued files are cancelled and the workers stopped at once (their files in flight
    have no manifest yet, so a rerun prepares them); the KeyboardInterrupt goes on to the caller.
    """
    threads = max(1, available_cores() // cfg.workers)
    warm_codec(cfg.params)
    # Longest first: the workers then finish together instead of one waiting on a long last file.
    new = sorted(new, key=lambda task: _seconds(task[0]), reverse=True)
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    workers = min(cfg.workers, len(new))
    done = {}
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker, initargs=(threads,)) as pool:
        try:
            running = {pool.submit(prepare_task, task): task[0] for task in new}
            # The dataset writer's import (most of a second) while the workers work, not after them.
            threading.Thread(target=importlib.import_module, args=("datasets",), daemon=True).start()
            for future in as_completed(running):
                try:
                    manifest = future.result()
                except BrokenProcessPool:  # a worker died (killed, out of memory, a crash in a decoder)
                    manifest = failed_manifest(running[future], WORKER_DIED)
                done[manifest["source"]] = manifest
                bar.update()
        except KeyboardInterrupt:
            # No public way to stop a pool's workers before Python 3.14 (terminate_workers); shutdown forgets them.
            processes = list(pool._processes.values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
            raise
    return done


#: Why the files in flight when a worker process died are not prepared; the finished ones are kept.
WORKER_DIED = (
    "a worker process died while this file was queued or being prepared (killed, out of memory, or a crash "
    "in the audio decoder); finished files are kept, run prep again to retry it"
)


def _seconds(source: Source) -> float:
    """The file's length from its header; 0 where it cannot be read (its worker reports why)."""
    try:
        return audio_header(source.path).duration
    except AudioError:  # reported when the file is prepared
        return 0.0


def _check_settings(out_dir: Path, cfg: PrepConfig) -> None:
    """An output folder is only ever extended with clips made the same way."""
    path = out_dir / STATE_DIR / "settings.json"
    wanted = cfg.content_settings()
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = [f"{k}: {before.get(k)!r} -> {v!r}" for k, v in wanted.items() if before.get(k) != v]
        if changed:
            raise ConfigError(
                f"{out_dir} was prepared with other settings ({'; '.join(changed)}); "
                "use a new output folder, or delete this one to start over"
            )
        return
    if out_dir.is_dir() and any(p.name != STATE_DIR for p in out_dir.iterdir()):
        raise RiffmaskError(f"{out_dir} is not empty and holds no riffmask dataset; choose an empty folder")
    write_json_atomic(path, wanted)


def _plan(scan: Scan, done: dict[str, dict], cfg: PrepConfig) -> dict[str, Any]:
    """What a run would do, from file headers only (``--dry-run``)."""
    files, seconds, estimate, rejected = [], 0.0, 0, []
    pending = [s for s in scan.sources if s.rel not in done]
    for source in pending:
        try:
            info = audio_header(source.path)
            samples = int(round(info.duration * cfg.params.sample_rate))
            check_rate(source.path, info.samplerate, cfg)
            check_length(source.path, samples, cfg)
        except AudioError as exc:
            rejected.append({"source": source.rel, "reason": exc.problem})
            continue
        files.append({"source": source.rel, "seconds": round(info.duration, 2), "sample_rate": info.samplerate})
        seconds += info.duration
        estimate += len(clip_starts(samples, cfg.clip_samples, cfg.hop_samples, cfg.min_tail_samples))
    return {
        "dry_run": True,
        "files_found": len(scan.sources),
        "files_done": len(done),
        "files_to_prepare": files,
        "seconds_to_prepare": round(seconds, 2),
        "clips_estimate": estimate,
        "rejected": rejected + scan.unreadable,
        "ignored": scan.ignored,
        "warnings": scan_warnings(scan),
    }


def summary_lines(result: PrepResult) -> list[str]:
    """The printed summary of a run (or of a dry run's plan)."""
    r = result.report
    if r.get("dry_run"):
        lines = [
            f"dry run: {r['files_found']} files found, {r['files_done']} already prepared, "
            f"{len(r['files_to_prepare'])} to prepare ({r['seconds_to_prepare']:.1f} s of audio, "
            f"about {r['clips_estimate']} clips); nothing written"
        ]
    else:
        state = "already up to date" if result.up_to_date else f"prepared {r['run']['files_prepared']} new file(s)"
        splits = ", ".join(f"{k} {v}" for k, v in r["clips_per_split"].items())
        reasons = ", ".join(f"{k} {v}" for k, v in r["dropped"]["by_reason"].items())
        lines = [
            f"{result.out_dir}: {state}; {r['files_read']} of {r['files_found']} files read, "
            f"{r['clips_written']} clips written ({splits}), {r['dropped']['count']} dropped"
            + (f" ({reasons})" if reasons else "")
        ]
    lines += [f"  warning: {w}" for w in r["warnings"]]
    lines += [f"  rejected {x['source']}: {x['reason']}" for x in r["rejected"]]
    lines += [f"  ignored {x['file']}: {x['reason']}" for x in r["ignored"]]
    return lines
