"""Scale and speed on this CPU: whole-process times of the one-shot commands, and generation throughput
of the tiny model across processes (``accelerate launch``) and with ``--batch-size``.

* ``riffmask spectrogram`` / ``audio`` / ``mask`` on one 5.11 s real clip, each a fresh process (what a
  user waits for), best of a few runs: with an empty codec cache (the bank and its inverse built, as
  before the cache existed) and with the cache filled; ``python -c "import torch"`` as the floor.
* ``riffmask generate`` on the six real sounds (5.11 s each, tiny random model at 512 px): clips per
  second of the whole command for 1 and 2 processes and ``--batch-size`` 1 and 4.
Usage: ``python -m bench.bench_scale [--part one-shot|generate] [STEPS]`` (default: both parts, 10 scheduler
steps; the paper's 50 scale alike). One part alone replaces only its own entries of ``scale.json``.
The load average (``os.getloadavg``, what ``uptime`` prints) is recorded before and after each run: the
machine is shared, so read ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, real_sounds, write_result
from riffmask.common.cache import CACHE_ENV
from riffmask.core.audio import load_audio, write_wav
from riffmask.core.params import PAPER_CLIP_SAMPLES
from riffmask.infer.tiny import save_tiny_pipeline


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return [round(x, 2) for x in os.getloadavg()]


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
            load_before = load_average()
            seconds = wall(cmd, env)
            runs[f"processes_{processes}_batch_{batch}"] = {
                "seconds": round(seconds, 1), "clips_per_s": round(count / seconds, 3), "clips": count,
                "load_before": load_before, "load_after": load_average(),
            }  # fmt: skip
            print(runs, flush=True)
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("steps", nargs="?", type=int, default=10, help="scheduler steps of the generate runs")
    parser.add_argument("--part", choices=("one-shot", "generate"), help="run one part only (default: both)")
    args = parser.parse_args(argv)
    # One part alone keeps the other part's entries of the last run.
    previous = RESULTS / "scale.json"
    result = json.loads(previous.read_text()) if args.part and previous.is_file() else {}
    result.pop("machine", None)
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in (None, "one-shot"):
            result["one_shot_whole_process"] = one_shot_times(Path(tmp))
            result["one_shot_target_s"] = 1.5
            result["one_shot_load"] = load_average()
            result["note"] = "measured on a machine shared with other jobs: read ratios within one run"
            print(result["one_shot_whole_process"], flush=True)
        if args.part in (None, "generate"):
            result["generate_tiny_cpu"] = throughput(Path(tmp), args.steps)
            result["generate_settings"] = (
                f"tiny random pipeline, 512 px, {args.steps} steps at strength 0.8, six 5.11 s real sounds; whole "
                "commands incl. process start and model load; 2 processes: one torch thread each, 1 process: all cores"
            )
            result["generate_note"] = (
                "measured on a machine shared with other jobs (2 CPU cores; load averages beside each run): read "
                "ratios within this run"
            )
    write_result("scale", result)


if __name__ == "__main__":
    main()
