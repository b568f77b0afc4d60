"""Scale and speed on this CPU: whole-process times of the one-shot commands, and generation throughput
of the tiny model across processes (``accelerate launch``) and with ``--batch-size``.

* ``riffmask spectrogram`` / ``audio`` / ``mask`` on one 5.11 s real clip, each a fresh process (what a
  user waits for), best of a few runs: with an empty codec cache (the bank and its inverse built, as
  before the cache existed) and with the cache filled; ``python -c "import torch"`` as the floor.
* ``riffmask generate`` on the six real sounds (5.11 s each, tiny random model at 512 px): clips per
  second of the whole command for 1 and 2 processes and ``--batch-size`` 1 and 4.
Usage: ``python -m bench.bench_scale [STEPS]`` (default 10 scheduler steps; the paper's 50 scale alike).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import real_sounds, write_result
from riffmask.common.cache import CACHE_ENV
from riffmask.core.audio import load_audio, write_wav
from riffmask.core.params import PAPER_CLIP_SAMPLES
from riffmask.infer.tiny import save_tiny_pipeline


def wall(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def one_shot_times(tmp: Path, repeat: int = 3) -> dict[str, dict[str, float]]:
    clip = tmp / "clip.wav"
    write_wav(clip, load_audio(real_sounds()[1])[:PAPER_CLIP_SAMPLES])
    riffmask = [sys.executable, "-m", "riffmask.cli"]
    commands = {
        "spectrogram": [*riffmask, "spectrogram", str(clip), str(tmp / "a.png")],
        "audio": [*riffmask, "audio", str(tmp / "a.png"), str(tmp / "a.wav")],
        "mask": [*riffmask, "mask", str(tmp / "a.png"), str(tmp / "m.png")],
        "import_torch": [sys.executable, "-c", "import torch"],
    }
    times: dict[str, dict[str, float]] = {}
    for cache in ("cold", "warm"):
        for name, cmd in commands.items():
            runs = []
            for k in range(repeat):
                folder = tmp / f"cache-{cache}-{name}-{k}" if cache == "cold" else tmp / "cache-warm"
                runs.append(wall(cmd, dict(os.environ, **{CACHE_ENV: str(folder)})))
            times.setdefault(name, {})[f"{cache}_cache_best_s"] = round(min(runs), 2)
    return times


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def throughput(tmp: Path, steps: int) -> dict[str, dict[str, float]]:
    model = save_tiny_pipeline(tmp / "tiny")
    sounds = tmp / "sounds"
    sounds.mkdir()
    for path in real_sounds():
        write_wav(sounds / path.name, load_audio(path)[:PAPER_CLIP_SAMPLES])
    count = len(real_sounds())
    runs = {}
    for processes in (1, 2):
        for batch in (1, 4):
            out = tmp / f"out-{processes}-{batch}"
            launcher = [sys.executable]
            threads = os.cpu_count() or 1
            if processes > 1:
                threads = max(1, threads // processes)
                launcher += ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                             "--main_process_port", str(_free_port())]  # fmt: skip
            env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS=str(threads))
            cmd = [*launcher, "-m", "riffmask.cli", "generate", "--model", str(model), str(sounds), "--out", str(out),
                   "--batch-size", str(batch), f"steps={steps}"]  # fmt: skip
            seconds = wall(cmd, env)
            runs[f"processes_{processes}_batch_{batch}"] = {
                "seconds": round(seconds, 1), "clips_per_s": round(count / seconds, 3), "clips": count,
            }  # fmt: skip
            print(runs, flush=True)
    return runs


def main(steps: int = 10) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        shots = one_shot_times(Path(tmp))
        print(shots, flush=True)
        runs = throughput(Path(tmp), steps)
    write_result("scale", {
        "one_shot_whole_process": shots,
        "one_shot_target_s": 1.5,
        "generate_tiny_cpu": runs,
        "generate_settings": f"tiny random pipeline, 512 px, {steps} steps at strength 0.8, six 5.11 s real sounds; "
                             "whole commands incl. process start and model load",
        "note": "2 CPU cores shared with other jobs while measured: read ratios within this run",
    })  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
