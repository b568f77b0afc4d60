"""Throughput of ``riffmask prep`` on synthetic mp3 (target: >= 100x real time on 2 cores).

Writes minutes of built-in genres as 60 s mp3 files, prepares them at the paper's size (512x512)
with one and with two worker processes, and profiles where one clip's time goes.
Usage: ``python -m bench.bench_prep [MINUTES]`` (default 10).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

from bench.common import best_of, write_result
from riffmask.common.config import load_config
from riffmask.core.audio import load_audio, write_wav
from riffmask.data_prep import synth
from riffmask.data_prep.config import PrepConfig
from riffmask.data_prep.dataset import prepare_dataset
from riffmask.data_prep.source_file import warm_codec


def write_mp3s(root: Path, minutes: float) -> float:
    """``minutes`` of built-in genres as 60 s mp3 files; returns the seconds written."""
    genres = list(synth.GENRES)
    count = max(1, int(round(minutes)))
    for k in range(count):
        genre = genres[k % len(genres)]
        folder = root / genre
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(str(folder / f"{genre}_{k}.mp3"), synth.genre_clip(genre, k, 60.0 * minutes / count), synth.SR)
    return 60.0 * minutes


def stage_times(path: Path, cfg: PrepConfig) -> dict[str, float]:
    """Seconds per 512-px clip of each step, on one thread (what one worker spends)."""
    import torch

    from riffmask.core.codec import image_from_mel, mel_spectrogram

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        audio = load_audio(path)
        clips = len(audio) // cfg.clip_samples
        clip = audio[: cfg.clip_samples]
        mel = mel_spectrogram(clip, cfg.params)
        image = image_from_mel(mel, cfg.params, cfg.mode)
        with tempfile.TemporaryDirectory() as tmp:
            png, wav = Path(tmp) / "a.png", Path(tmp) / "a.wav"
            times = {
                "decode_mp3": best_of(lambda: load_audio(path))[0] / clips,
                "mel": best_of(lambda: mel_spectrogram(clip, cfg.params))[0],
                "image": best_of(lambda: image_from_mel(mel, cfg.params, cfg.mode))[0],
                "png": best_of(lambda: image.save(png, format="PNG", compress_level=cfg.png_compress_level))[0],
                "wav": best_of(lambda: write_wav(wav, clip))[0],
            }
            times["png_bytes"] = png.stat().st_size
    finally:
        torch.set_num_threads(threads)
    return {k: round(v, 4) for k, v in times.items()}


def main(minutes: float = 10.0) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "genres"
        seconds = write_mp3s(root, minutes)
        runs = {}
        start = time.perf_counter()
        warm_codec(load_config(PrepConfig, "paper").params)  # once per run (filter banks): timed apart
        warmup = time.perf_counter() - start
        for num_proc in (1, 2):
            cfg = load_config(PrepConfig, "paper", [f"num_proc={num_proc}"])
            start = time.perf_counter()
            result = prepare_dataset(root, Path(tmp) / f"out{num_proc}", cfg, progress=False)
            took = time.perf_counter() - start
            runs[f"num_proc_{num_proc}"] = {
                "seconds": round(took, 2),
                "x_real_time": round(seconds / took, 1),
                "clips": result.report["clips_written"],
                "seconds_per_clip": round(took / result.report["clips_written"], 4),
            }
            print(f"num_proc={num_proc}: {runs[f'num_proc_{num_proc}']}", flush=True)
        stages = stage_times(next(root.rglob("*.mp3")), cfg)
    print("per clip, one thread:", stages)
    write_result(
        "prep",
        {
            "audio": f"{seconds / 60:.1f} min of synthetic mp3 (60 s files), 512x512 clips, paper mode",
            "audio_seconds": seconds,
            "target_x_real_time": 100,
            "runs": runs,
            "per_clip_one_thread_s": stages,
            "codec_warmup_s": round(warmup, 2),
            "png_compress_level": cfg.png_compress_level,
            "note": "whole runs incl. worker start and dataset build, after the one-time codec warm-up",
        },
    )


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0)
