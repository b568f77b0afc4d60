"""Genre folders -> a training dataset of spectrogram clips (``riffmask prep``).

Layout of ``OUT_DIR`` (both ``datasets.load_from_disk`` and ``load_dataset("imagefolder")`` read it)::

    config.yaml  report.json  dataset_dict.json
    train/       <id>.png <id>.wav ... metadata.jsonl   data-*.arrow state.json dataset_info.json
    validation/  (the same)
    .riffmask/   per-source manifests (hidden: both loaders skip it)

Crash safety: every file is written atomically; a source file counts as done only once its manifest
(``.riffmask/sources/<key>.json``, holding its clip records) exists, and it is written after the clips.
Clip names are deterministic, so redoing a file interrupted half-way overwrites the same names. The
per-split metadata and the Arrow dataset are rebuilt from the manifests at the end of every run that
changed something, and files that no record names (left-overs of a crash) are removed then.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
from riffmask.data_prep.clips import clip_starts, cut_clips, rms_db
from riffmask.data_prep.sources import Source, format_caption, scan_genres

from riffmask.common.config import ConfigError, option, save_config
from riffmask.common.errors import RiffmaskError
from riffmask.common.io import inside, safe_stem, write_json_atomic, write_text_atomic
from riffmask.core.audio import AudioError, load_audio, write_wav
from riffmask.core.params import SpectrogramParams

log = logging.getLogger(__name__)

SPLITS = ("train", "validation")
STATE_DIR = ".riffmask"
_ARROW_FILES = ("state.json", "dataset_info.json")
COLUMNS = ("image", "caption", "genre", "source", "offset", "max_volume", "audio", "id")
#: Testing hook: a process that has written this many clips stops (sleeps) so a test can kill it.
STALL_ENV = "RIFFMASK_PREP_STALL_AFTER_CLIPS"


@dataclass
class PrepConfig:
    """Options of ``riffmask prep`` (configs/prep.yaml)."""

    width: int = option(512, help="image width in pixels = clip length in 10 ms frames (512 = 5.11 s)")
    num_frequencies: int = option(512, help="mel bands = image height")
    mode: Literal["paper", "riffusion"] = option("paper", help="pixel scaling: paper (ceil) or riffusion")
    hop_seconds: float | None = option(
        None, help="start-to-start distance of clips; unset: clip length minus overlap_seconds"
    )
    overlap_seconds: float = option(0.0, help="overlap of consecutive clips when hop_seconds is not set")
    min_tail_fraction: float = option(
        0.5, help="a last partial clip at least this fraction of a clip long is kept, zero-padded"
    )
    silence_db: float = option(-50.0, help="clips whose RMS level (dBFS) is below this are dropped as near-silent")
    min_sample_rate: int = option(
        22050, help="files recorded below this rate are rejected (the images reach 10 kHz); 0 accepts all"
    )
    caption_template: str = option("{genre}", help="caption of a clip; fields {genre} and {stem} (file name)")
    txt_captions: bool = option(True, help="a song.txt beside song.mp3 gives that file's caption")
    validation_fraction: float = option(0.1, help="share of source files (not clips) held out for validation")
    split_seed: int = option(0, help="seed of the file-level train/validation split")
    png_compress_level: int = option(
        1, help="zlib level of the PNGs (0-9): 1 encodes 3x faster than 6, files a sixth larger"
    )
    num_proc: int = option(1, help="worker processes preparing files in parallel")

    def validate(self) -> None:
        if self.width < 2 or self.num_frequencies < 1:
            raise ConfigError("width must be >= 2 and num_frequencies >= 1")
        if self.hop_seconds is not None and self.overlap_seconds:
            raise ConfigError("set hop_seconds or overlap_seconds, not both")
        if not 0 <= self.overlap_seconds < self.clip_seconds:
            raise ConfigError(f"overlap_seconds must be in [0, {self.clip_seconds:.2f}) (the clip length)")
        if self.hop_samples < 1:
            raise ConfigError("hop_seconds must be positive")
        if not 0 < self.min_tail_fraction <= 1:
            raise ConfigError("min_tail_fraction must be in (0, 1]")
        if not 0 <= self.validation_fraction < 1:
            raise ConfigError("validation_fraction must be in [0, 1)")
        if not 0 <= self.png_compress_level <= 9:
            raise ConfigError("png_compress_level must be 0..9")
        if self.num_proc < 1:
            raise ConfigError("num_proc must be >= 1")
        try:
            format_caption(self.caption_template, "genre", "stem")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"caption_template {self.caption_template!r}: use only {{genre}} and {{stem}} ({exc})"
            ) from None

    @property
    def params(self) -> SpectrogramParams:
        return SpectrogramParams(num_frequencies=self.num_frequencies)

    @property
    def clip_samples(self) -> int:
        """Samples per clip: exactly what an image ``width`` pixels wide decodes to."""
        return self.params.samples_for(self.width)

    @property
    def clip_seconds(self) -> float:
        return self.clip_samples / self.params.sample_rate

    @property
    def hop_samples(self) -> int:
        seconds = self.clip_seconds - self.overlap_seconds if self.hop_seconds is None else self.hop_seconds
        return int(round(seconds * self.params.sample_rate))

    def content_settings(self) -> dict[str, Any]:
        """The options that shape the clip files; an output folder keeps the ones it was made with."""
        free = {"caption_template", "txt_captions", "num_proc", "png_compress_level"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in free}


# --------------------------------------------------------------------------- one source file
_clips_written = 0  # per process, for the stall hook


def _stall_hook(written: int) -> None:
    limit = os.environ.get(STALL_ENV)
    if limit and written >= int(limit):
        print(f"prep: stalled after {written} clips ({STALL_ENV})", file=sys.stderr, flush=True)
        while True:
            time.sleep(60)


def clip_id(source: Source, index: int) -> str:
    """Stable, unique and file-name-safe: genre, file stem, a hash of the path, clip number."""
    return f"{safe_stem(source.genre)}-{safe_stem(Path(source.rel).stem)[:40]}-{source.key[:8]}-{index:04d}"


def _probe_rate(path: Path) -> int:
    try:
        return sf.info(str(path)).samplerate
    except Exception as exc:  # libsndfile raises several types for files it cannot parse
        raise AudioError(path, f"not a readable audio file ({exc})") from None


def prepare_source(source: Source, cfg: PrepConfig, out_dir: Path) -> dict[str, Any]:
    """Cut one file into clips, write their PNG + WAV, then its manifest (the done-marker).

    Unusable files (:class:`AudioError`) get a manifest saying why, so a rerun does not read them again.
    """
    from riffmask.core.codec import image_from_mel, max_volume_of, mel_spectrogram, save_image

    global _clips_written
    manifest: dict[str, Any] = {"source": source.rel, "genre": source.genre, "signature": source.signature()}
    split = source.split(cfg.validation_fraction, cfg.split_seed)
    params = cfg.params
    try:
        rate = _probe_rate(source.path)
        if rate < cfg.min_sample_rate:
            raise AudioError(source.path, f"sample rate {rate} Hz is below min_sample_rate {cfg.min_sample_rate}")
        audio = load_audio(source.path, params.sample_rate)
        min_tail = int(cfg.min_tail_fraction * cfg.clip_samples)
        if len(audio) < min_tail:
            raise AudioError(
                source.path,
                f"too short ({len(audio) / params.sample_rate:.2f} s < {min_tail / params.sample_rate:.2f} s)",
            )
    except AudioError as exc:
        manifest.update(status="rejected", reason=exc.problem, clips=[], dropped=[], seconds=0.0)
        write_json_atomic(_manifest_path(out_dir, source), manifest)
        return manifest
    records, dropped = [], []
    for clip in cut_clips(audio, cfg.clip_samples, cfg.hop_samples, min_tail):
        offset = round(clip.start / params.sample_rate, 4)
        level = rms_db(clip.audio[: clip.length])
        if level < cfg.silence_db:
            dropped.append({"offset": offset, "reason": "near-silent", "rms_db": round(max(level, -200.0), 1)})
            continue
        mel = mel_spectrogram(clip.audio, params)
        max_volume = max_volume_of(mel, cfg.mode, params.power_for_image)
        name = clip_id(source, clip.index)
        save_image(
            image_from_mel(mel, params, cfg.mode, max_volume),
            inside(out_dir / split, f"{name}.png"),
            cfg.png_compress_level,
        )
        write_wav(inside(out_dir / split, f"{name}.wav"), clip.audio, params.sample_rate)
        records.append(
            {
                "id": name,
                "split": split,
                "genre": source.genre,
                "source": source.rel,
                "offset": offset,
                "max_volume": max_volume,
                "image": f"{split}/{name}.png",
                "audio": f"{split}/{name}.wav",
            }
        )
        _clips_written += 1
        _stall_hook(_clips_written)
    manifest.update(status="done", clips=records, dropped=dropped, seconds=len(audio) / params.sample_rate)
    write_json_atomic(_manifest_path(out_dir, source), manifest)
    return manifest


def _manifest_path(out_dir: Path, source: Source) -> Path:
    return out_dir / STATE_DIR / "sources" / f"{source.key}.json"


def _read_manifest(out_dir: Path, source: Source) -> dict[str, Any] | None:
    """The manifest of a source if it is complete and matches the file as it is now."""
    path = _manifest_path(out_dir, source)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("source") != source.rel or manifest.get("signature") != source.signature():
        return None
    return manifest


def warm_codec(params: SpectrogramParams) -> None:
    """Build the codec's filter banks (cached per process) now, e.g. before forking workers."""
    from riffmask.core.codec import mel_spectrogram

    mel_spectrogram(np.zeros(params.n_fft, np.float32), params)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _prepare_task(task: tuple[Source, PrepConfig, Path]) -> dict[str, Any]:
    """:func:`prepare_source`, turning an unexpected failure into a report entry instead of a crash.

    Such a file gets no manifest, so the next run tries it again.
    """
    source = task[0]
    try:
        return prepare_source(*task)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
        log.exception("unexpected failure on %s", source.rel)
        reason = f"unexpected error, will retry next run ({type(exc).__name__}: {exc})"
        return {
            "source": source.rel,
            "genre": source.genre,
            "status": "failed",
            "reason": reason,
            "clips": [],
            "dropped": [],
            "seconds": 0.0,
        }


# --------------------------------------------------------------------------- the whole run
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

    ``progress``: show a progress bar (``None``: only on a terminal).
    """
    started = time.perf_counter()
    genre_root, out_dir = Path(genre_root), Path(out_dir)
    sources, ignored = scan_genres(genre_root)
    if not dry_run:
        _check_settings(out_dir, cfg)
    done = {s.rel: m for s in sources if (m := _read_manifest(out_dir, s)) is not None}
    pending = [s for s in sources if s.rel not in done]
    if dry_run:
        return PrepResult(out_dir, _plan(sources, pending, ignored, cfg))
    if not pending and _finalized_matches(out_dir, sources, done, cfg):
        return PrepResult(out_dir, json.loads((out_dir / "report.json").read_text(encoding="utf-8")), up_to_date=True)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(pending), unit="file", desc="prep", disable=None if progress is None else not progress)
    new = [(s, cfg, out_dir) for s in pending]
    if cfg.num_proc > 1 and len(new) > 1:
        threads = max(1, (os.cpu_count() or 1) // cfg.num_proc)
        warm_codec(cfg.params)
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with ctx.Pool(min(cfg.num_proc, len(new)), initializer=_init_worker, initargs=(threads,)) as pool:
            for manifest in pool.imap(_prepare_task, new):
                done[manifest["source"]] = manifest
                bar.update()
    else:
        for task in new:
            done[task[0].rel] = _prepare_task(task)
            bar.update()
    bar.close()
    report = _finalize(genre_root, out_dir, sources, done, ignored, cfg)
    report["run"] = {"files_prepared": len(pending), "seconds": round(time.perf_counter() - started, 2)}
    audio_seconds = sum(done[s.rel]["seconds"] for s in pending)
    report["run"]["x_real_time"] = round(audio_seconds / max(report["run"]["seconds"], 1e-9), 1)
    write_json_atomic(out_dir / "report.json", report)
    return PrepResult(out_dir, report)


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


def _plan(sources: list[Source], pending: list[Source], ignored: list[dict], cfg: PrepConfig) -> dict[str, Any]:
    """What a run would do, from file headers only (``--dry-run``)."""
    files, seconds, estimate, rejected = [], 0.0, 0, []
    min_tail = int(cfg.min_tail_fraction * cfg.clip_samples)
    for source in pending:
        try:
            info = sf.info(str(source.path))
        except Exception as exc:  # noqa: BLE001 - any parse failure means "would be rejected"
            rejected.append({"source": source.rel, "reason": f"not a readable audio file ({exc})"})
            continue
        files.append({"source": source.rel, "seconds": round(info.duration, 2), "sample_rate": info.samplerate})
        seconds += info.duration
        samples = int(round(info.duration * cfg.params.sample_rate))
        estimate += len(clip_starts(samples, cfg.clip_samples, cfg.hop_samples, min_tail))
    return {
        "dry_run": True,
        "files_found": len(sources),
        "files_done": len(sources) - len(pending),
        "files_to_prepare": files,
        "seconds_to_prepare": round(seconds, 2),
        "clips_estimate": estimate,
        "rejected": rejected,
        "ignored": ignored,
    }


# --------------------------------------------------------------------------- rebuild from manifests
def _records(sources: list[Source], done: dict[str, dict], cfg: PrepConfig) -> list[dict[str, Any]]:
    """Every clip record in deterministic order (source path, then offset), with its caption."""
    rows = []
    for source in sources:
        caption = source.caption(cfg.caption_template, cfg.txt_captions)
        rows.extend({**r, "caption": caption} for r in done[source.rel]["clips"])
    return rows


def _content_hash(rows: list[dict], cfg: PrepConfig) -> str:
    text = json.dumps([rows, cfg.content_settings()], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _finalized_matches(out_dir: Path, sources: list[Source], done: dict, cfg: PrepConfig) -> bool:
    try:
        state = json.loads((out_dir / STATE_DIR / "finalized.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = ("report.json", "dataset_dict.json")
    return state.get("hash") == _content_hash(_records(sources, done, cfg), cfg) and all(
        (out_dir / f).is_file() for f in files
    )


def _finalize(
    genre_root: Path, out_dir: Path, sources: list[Source], done: dict, ignored: list[dict], cfg: PrepConfig
) -> dict[str, Any]:
    rows = _records(sources, done, cfg)
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
    report = _report(genre_root, out_dir, sources, done, ignored, by_split)
    write_json_atomic(out_dir / STATE_DIR / "finalized.json", {"hash": _content_hash(rows, cfg)})
    return report


def _metadata_row(row: dict[str, Any]) -> dict[str, Any]:
    """A metadata.jsonl line: imagefolder's ``file_name`` (relative to the split folder) + the columns."""
    out = {"file_name": Path(row["image"]).name}
    out.update((k, row[k]) for k in COLUMNS if k != "image")
    return out


def _features():
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


def _write_arrow(out_dir: Path, by_split: dict[str, list[dict]]) -> None:
    """Save the DatasetDict (PNG bytes embedded) beside the images, replacing the previous one file by file."""
    import datasets

    features = _features()
    columns = {
        split: {k: [str(out_dir / r["image"]) if k == "image" else r[k] for r in rows] for k in COLUMNS}
        for split, rows in by_split.items()
    }
    staging = out_dir / STATE_DIR / "arrow"
    shutil.rmtree(staging, ignore_errors=True)
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        # datasets cannot save or load a split of 0 rows: an empty split is left out (load_prepared adds it).
        dd = datasets.DatasetDict(
            {s: datasets.Dataset.from_dict(c, features=features) for s, c in columns.items() if by_split[s]}
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


def _report(
    genre_root: Path, out_dir: Path, sources: list[Source], done: dict, ignored: list[dict], by_split: dict
) -> dict[str, Any]:
    manifests = [done[s.rel] for s in sources]
    read = [m for m in manifests if m["status"] == "done"]
    dropped = [{"source": m["source"], **d} for m in read for d in m["dropped"]]
    clips = [r for rows in by_split.values() for r in rows]
    warnings = []
    if not by_split["validation"] and len(read) > 1:
        warnings.append("the validation split is empty: raise validation_fraction or add files")
    if not clips:
        warnings.append("no clips were written: every file was rejected or silent")
    return {
        "genre_root": str(genre_root),
        "out_dir": str(out_dir),
        "files_found": len(sources),
        "files_read": len(read),
        "seconds_read": round(sum(m["seconds"] for m in read), 2),
        "clips_written": len(clips),
        "clips_per_split": {s: len(rows) for s, rows in by_split.items()},
        "clips_per_genre": dict(sorted(Counter(r["genre"] for r in clips).items())),
        "dropped": {"count": len(dropped), "by_reason": dict(Counter(d["reason"] for d in dropped)), "clips": dropped},
        "rejected": [{"source": m["source"], "reason": m["reason"]} for m in manifests if m["status"] != "done"],
        "ignored": ignored,
        "warnings": warnings,
        "fingerprint": dataset_fingerprint(out_dir),
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


# --------------------------------------------------------------------------- readers
def _require_prepared(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        raise RiffmaskError(f"{path}: not a dataset written by `riffmask prep` (no dataset_dict.json)")
    return path


def load_prepared(path: str | os.PathLike):
    """The prepared dataset as a ``datasets.DatasetDict`` with splits ``train`` and ``validation``."""
    import datasets

    path = _require_prepared(path)
    dd = datasets.load_from_disk(str(path))
    for split in SPLITS:
        if split not in dd:
            dd[split] = datasets.Dataset.from_dict({k: [] for k in COLUMNS}, features=_features())
    return datasets.DatasetDict({split: dd[split] for split in SPLITS})


def dataset_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 over every split's metadata lines and the bytes of the images they name.

    Equal for datasets with the same clips, captions and pixels, wherever they are stored.
    """
    path = _require_prepared(path)
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
