"""One source file -> its clips (PNG + WAV) and its manifest, in the main process or a pool worker.

Crash safety: every file is written atomically; a source file counts as done only once its manifest
(``.riffmask/sources/<key>.json``, holding its clip records) exists, and it is written after the clips.
Clip names are deterministic, so redoing a file interrupted half-way overwrites the same names.
"""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Any

from riffmask.common.io import inside, safe_stem, write_json_atomic
from riffmask.core.audio import AudioError, audio_header, load_audio, write_wav
from riffmask.core.params import SpectrogramParams
from riffmask.data_prep.clips import cut_clips, rms_db
from riffmask.data_prep.config import PrepConfig
from riffmask.data_prep.readers import STATE_DIR
from riffmask.data_prep.sources import Source

log = logging.getLogger(__name__)


def clip_id(source: Source, index: int) -> str:
    """Stable, unique and file-name-safe: genre, file stem, a hash of the path, clip number."""
    return f"{safe_stem(source.genre)}-{safe_stem(Path(source.rel).stem)[:40]}-{source.key[:8]}-{index:04d}"


def check_rate(path: Path, rate: int, cfg: PrepConfig) -> None:
    """:class:`AudioError` for a file recorded below ``min_sample_rate``."""
    if rate < cfg.min_sample_rate:
        raise AudioError(
            path,
            f"sample rate {rate} Hz is below min_sample_rate {cfg.min_sample_rate}: its clips would be empty "
            f"above {rate // 2} Hz; add min_sample_rate={rate} to use it anyway",
        )


def check_length(path: Path, samples: int, cfg: PrepConfig) -> None:
    """:class:`AudioError` for a file too short for one clip (``samples`` at the format's rate)."""
    if samples < cfg.min_tail_samples:
        rate = cfg.params.sample_rate
        raise AudioError(path, f"too short ({samples / rate:.2f} s < {cfg.min_tail_samples / rate:.2f} s)")


def prepare_source(source: Source, cfg: PrepConfig, out_dir: Path) -> dict[str, Any]:
    """Cut one file into clips, write their PNG + WAV, then its manifest (the done-marker).

    Unusable files (:class:`AudioError`) get a manifest saying why, so a rerun does not read them again.
    """
    from riffmask.core.forward import mel_array
    from riffmask.core.image import image_from_mel, max_volume_of, save_image

    manifest: dict[str, Any] = {
        "source": source.rel,
        "genre": source.genre,
        "signature": source.signature(),
        # The limit this file was judged by: a rerun under another one judges it again (see _judged_otherwise).
        "min_sample_rate": cfg.min_sample_rate,
        "sample_rate": None,
    }
    split = source.split(cfg.validation_fraction, cfg.split_seed)
    params = cfg.params
    try:
        manifest["sample_rate"] = audio_header(source.path).samplerate
        check_rate(source.path, manifest["sample_rate"], cfg)
        audio = load_audio(source.path, params.sample_rate)
        check_length(source.path, len(audio), cfg)
    except AudioError as exc:
        manifest.update(status="rejected", reason=exc.problem, clips=[], dropped=[], seconds=0.0)
        write_json_atomic(manifest_path(out_dir, source), manifest)
        return manifest
    records, dropped = [], []
    for clip in cut_clips(audio, cfg.clip_samples, cfg.hop_samples, cfg.min_tail_samples):
        offset = round(clip.start / params.sample_rate, 4)
        level = rms_db(clip.audio[: clip.length])
        if level < cfg.silence_db:
            dropped.append({"offset": offset, "reason": "near-silent", "rms_db": round(max(level, -200.0), 1)})
            continue
        mel = mel_array(clip.audio, params, _fft_threads)
        max_volume = max_volume_of(mel, cfg.spectrogram.spectrogram_mode, params.power_for_image)
        name = clip_id(source, clip.index)
        save_image(
            image_from_mel(mel, params, cfg.spectrogram.spectrogram_mode, max_volume),
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
    manifest.update(status="done", clips=records, dropped=dropped, seconds=len(audio) / params.sample_rate)
    write_json_atomic(manifest_path(out_dir, source), manifest)
    return manifest


def manifest_path(out_dir: Path, source: Source) -> Path:
    return out_dir / STATE_DIR / "sources" / f"{source.key}.json"


def read_manifest(out_dir: Path, source: Source, cfg: PrepConfig) -> dict[str, Any] | None:
    """The manifest of a source if it is complete, matches the file as it is now, its clip files are all
    there and ``cfg`` would accept or reject the file as it did."""
    path = manifest_path(out_dir, source)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("source") != source.rel or manifest.get("signature") != source.signature():
        return None
    try:  # a manifest is data read back: the files it names must lie inside the output folder
        files = [inside(out_dir, clip[kind]) for clip in manifest["clips"] for kind in ("image", "audio")]
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("%s: ignored, it names files outside %s or is malformed (%s); preparing again", path, out_dir, exc)
        return None
    if missing := next((f for f in files if not f.is_file()), None):
        log.warning("%s is missing: preparing %s again", missing, source.rel)
        return None
    return None if _judged_otherwise(manifest, cfg) else manifest


def _judged_otherwise(manifest: dict[str, Any], cfg: PrepConfig) -> bool:
    """Whether ``cfg.min_sample_rate`` accepts a file its manifest's limit rejected, or the reverse.

    The limit only decides which files are used, so it may change between runs of one folder; the
    files it does not concern are kept as they are.
    """
    rate = manifest.get("sample_rate")
    if rate is None:  # the header was unreadable: rejected under any limit
        return False
    return (rate < manifest["min_sample_rate"]) != (rate < cfg.min_sample_rate)


def warm_codec(params: SpectrogramParams) -> None:
    """Load the codec's FFT library and filter banks (cached per process) now, e.g. before forking workers."""
    from riffmask.core.forward import warm

    warm(params)


#: FFT threads of this process's clips (None: the library's default); a pool worker's share of the cores.
_fft_threads: int | None = None


def init_worker(threads: int) -> None:
    """Pool initializer: give each clip's FFT ``threads`` threads (torch is imported only if it runs the FFT).

    A worker ignores Ctrl-C: the terminal sends it to every process of the run, and the main process
    stops the workers itself (a worker's KeyboardInterrupt would only be this file's result, and the
    queue would go on).
    """
    global _fft_threads
    from riffmask.core import dft

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _fft_threads = threads
    if not dft.available():
        import torch

        torch.set_num_threads(threads)


def prepare_task(task: tuple[Source, PrepConfig, Path]) -> dict[str, Any]:
    """:func:`prepare_source`, turning an unexpected failure into a report entry instead of a crash.

    Such a file gets no manifest, so the next run tries it again.
    """
    source = task[0]
    try:
        return prepare_source(*task)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
        log.exception("unexpected failure on %s", source.rel)
        return failed_manifest(source, f"unexpected error, will retry next run ({type(exc).__name__}: {exc})")


def failed_manifest(source: Source, reason: str) -> dict[str, Any]:
    """The report entry of a file that failed in a way a rerun may not repeat (it gets no manifest file)."""
    return {
        "source": source.rel,
        "genre": source.genre,
        "status": "failed",
        "reason": reason,
        "clips": [],
        "dropped": [],
        "seconds": 0.0,
    }
