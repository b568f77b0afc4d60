"""Throughput of ``riffmask prep`` with its defaults on a mixed folder of real sounds (target: >= 100x
real time on this 2-core machine), beside one worker process, beside the defaults with the FFT run
by torch in every worker as before the torch-free forward path (``riffmask.core.forward``), and beside
the defaults where no C compiler builds the magnitude kernel (``riffmask.core.magnitude``): the same
run, so the ratios hold whatever else the machine does. The datasets' fingerprints (every pixel) must
be equal.

The folder is built from the six real everyday sounds (``bench.common.real_sounds``): each file a
different mix of them, 10 to 60 s long, as mp3, ogg and wav at 24, 32, 44.1 and 48 kHz, so that
decoding and resampling cost what they cost on a user's folder. The clips are the paper's 512x512.
Usage: ``python -m bench.bench_prep [FILES]`` (default 18).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import soundfile as sf
import soxr

from bench.common import best_of, real_sounds, write_result
from riffmask.common.config import load_config
from riffmask.core import dft, magnitude
from riffmask.core.audio import load_audio, write_wav
from riffmask.core.forward import mel_array
from riffmask.data_prep.config import PrepConfig
from riffmask.data_prep.dataset import prepare_dataset
from riffmask.data_prep.readers import dataset_fingerprint
from riffmask.data_prep.source_file import warm_codec

FORMATS = (("mp3", 44100), ("mp3", 24000), ("ogg", 48000), ("wav", 32000), ("mp3", 48000), ("ogg", 24000))
GENRES = ("ambient", "rock", "jazz")


def write_mixed_folder(root: Path, files: int) -> dict[str, float]:
    """``files`` files made of the real sounds, spread over genres, formats, rates and lengths.

    Returns the seconds of audio written per format.
    """
    sounds = [load_audio(p) for p in real_sounds()]
    seconds: dict[str, float] = {}
    for k in range(files):
        fmt, rate = FORMATS[k % len(FORMATS)]
        length = 10 + 50 * ((k * 7) % files) / max(files - 1, 1)  # 10-60 s, shuffled over the files
        order = np.random.default_rng(k).permutation(len(sounds))
        pieces, total = [], 0
        while total < length * 44100:
            piece = sounds[order[len(pieces) % len(order)]]
            pieces.append(piece)
            total += len(piece)
        audio = soxr.resample(np.concatenate(pieces)[: int(length * 44100)], 44100, rate).astype(np.float32)
        folder = root / GENRES[k % len(GENRES)]
        folder.mkdir(parents=True, exist_ok=True)
        with sf.SoundFile(str(folder / f"mix_{k:02d}_{rate}.{fmt}"), "w", rate, 1) as f:
            for block in range(0, len(audio), 8192):  # libsndfile's mp3 encoder crashes on long single writes
                f.write(audio[block : block + 8192])
        key = f"{fmt} {rate // 1000} kHz"
        seconds[key] = seconds.get(key, 0.0) + len(audio) / rate
    return seconds


def stage_times(path: Path, cfg: PrepConfig) -> dict[str, float]:
    """Seconds per 512-px clip of each step, on one thread (what one worker spends): ``mel`` by the
    torch-free path, ``mel_torch`` by torch."""
    import torch

    from riffmask.core.codec import image_from_mel, mel_spectrogram

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        audio = load_audio(path)
        clips = len(audio) // cfg.clip_samples
        clip = audio[: cfg.clip_samples]
        mel = mel_spectrogram(clip, cfg.params)
        image = image_from_mel(mel, cfg.params, cfg.spectrogram.spectrogram_mode)
        with tempfile.TemporaryDirectory() as tmp:
            png, wav = Path(tmp) / "a.png", Path(tmp) / "a.wav"
            times = {
                "decode_mp3": best_of(lambda: load_audio(path))[0] / clips,
                "mel": best_of(lambda: mel_array(clip, cfg.params, threads=1))[0],
                "mel_torch": best_of(lambda: mel_spectrogram(clip, cfg.params))[0],
                "image": best_of(lambda: image_from_mel(mel, cfg.params, cfg.spectrogram.spectrogram_mode))[0],
                "png": best_of(lambda: image.save(png, format="PNG", compress_level=cfg.png_compress_level))[0],
                "wav": best_of(lambda: write_wav(wav, clip))[0],
            }
            times["png_bytes"] = png.stat().st_size
    finally:
        torch.set_num_threads(threads)
    return {k: round(v, 4) for k, v in times.items()}


def main(files: int = 18) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "genres"
        per_format = write_mixed_folder(root, files)
        seconds = sum(per_format.values())
        warm_codec(load_config(PrepConfig, "paper").params)  # filter banks (disk cache) before timing
        runs, fingerprints = {}, set()
        load = os.getloadavg()[0]
        variants = {  # the workers inherit the patches (fork)
            "defaults_torch_fft": mock.patch.object(dft, "available", lambda: False),
            "defaults_no_c_compiler": mock.patch.object(magnitude, "native_kernel", lambda: None),
        }
        for name, overrides in (("defaults", []), ("one_process", ["num_proc=1"]), ("defaults_torch_fft", []),
                                ("defaults_no_c_compiler", [])):
            cfg = load_config(PrepConfig, "paper", overrides)
            start = time.perf_counter()
            with variants.get(name, contextlib.nullcontext()):
                result = prepare_dataset(root, Path(tmp) / name, cfg, progress=False)
            took = time.perf_counter() - start
            fingerprints.add(dataset_fingerprint(Path(tmp) / name))
            runs[name] = {
                "num_proc": cfg.workers,
                "seconds": round(took, 2),
                "x_real_time": round(seconds / took, 1),
                "clips": result.report["clips_written"],
                "seconds_per_clip": round(took / result.report["clips_written"], 4),
            }
            print(f"{name}: {runs[name]}", flush=True)
        # The whole command as a user runs it: process start and imports included (no torch in it).
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "riffmask.cli", "prep", str(root), str(Path(tmp) / "cli")], check=True,
                       capture_output=True)  # fmt: skip
        took = time.perf_counter() - start
        fingerprints.add(dataset_fingerprint(Path(tmp) / "cli"))
        runs["riffmask_prep_command"] = {"seconds": round(took, 2), "x_real_time": round(seconds / took, 1)}
        print(f"riffmask prep: {runs['riffmask_prep_command']}", flush=True)
        stages = stage_times(next(root.rglob("*.mp3")), cfg)
    print("per clip, one thread:", stages)
    if len(fingerprints) != 1:
        raise SystemExit(f"the runs made different datasets: {sorted(fingerprints)}")
    write_result(
        "prep",
        {
            "audio": f"{files} files, {seconds / 60:.1f} min mixed from the six real sounds, 512x512 clips, paper mode",
            "audio_seconds": round(seconds, 1),
            "seconds_per_format": {k: round(v, 1) for k, v in sorted(per_format.items())},
            "target_x_real_time": 100,
            "runs": runs,
            "speedup_vs_torch_fft": round(runs["defaults_torch_fft"]["seconds"] / runs["defaults"]["seconds"], 2),
            "same_pixels_all_runs": True,
            "load_average_at_start": round(load, 2),
            "per_clip_one_thread_s": stages,
            "png_compress_level": cfg.png_compress_level,
            "note": "whole runs incl. worker start and dataset build; 2 CPU cores",
        },
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 18)
