"""Scale and speed on this CPU: whole-process times of the one-shot commands, and generation throughput
of the tiny model across processes (``accelerate launch``) and with ``--batch-size``.

* ``riffmask spectrogram`` / ``audio`` / ``mask`` on one 5.11 s real clip, each a fresh process (what a
  user waits for), wall and CPU seconds, median of 5 runs with the caches filled; ``python -c "import
  torch"`` for scale. ``--before REF`` times the same commands of another commit (``git archive``, run
  with PYTHONPATH) alternately with this tree's, so that both see the same load.
* ``riffmask generate`` on the six real sounds (5.11 s each, tiny random model at 512 px): clips per
  second of the whole command for 1 and 2 processes and ``--batch-size`` 1 and 4.
Usage: ``python -m bench.bench_scale [--part one-shot|generate] [--before REF] [STEPS]`` (default: both
parts, 10 scheduler steps; the paper's 50 scale alike). One part alone replaces only its own entries of ``scale.json``.
The load average (``os.getloadavg``, what ``uptime`` prints) is recorded before and after each run: the
machine is shared, so read ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import statistics
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


def wall(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=cwd)
    return time.perf_counter() - started


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of a whole process: CPU (user + system, all its threads) is what the command
    costs on a quiet machine better than wall time does on a busy one."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = wall(cmd, env, cwd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def checkout(ref: str, folder: Path) -> Path:
    """The tree of ``ref`` laid out as the installed package (pyproject's package-dir), for PYTHONPATH."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(root), "archive", ref], check=True, capture_output=True).stdout
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    section = (folder / "pyproject.toml").read_text().split("[tool.setuptools.package-dir]")[1].split("\n[")[0]
    for package, path in re.findall(r'^"([\w.]+)" = "([\w/]+)"', section, re.MULTILINE):
        (folder / package.replace(".", "/")).symlink_to(folder / path, target_is_directory=True)
    return folder


def one_shot_times(tmp: Path, before: str | None = None, repeat: int = 5) -> dict:
    """Whole-process wall and CPU seconds of the one-shot commands (median of ``repeat`` runs each, caches
    filled by a first run not counted); with ``before`` (a git ref) the same commands of that commit too,
    run alternately with these so that both see the same load."""
    clip = tmp / "clip.wav"
    write_wav(clip, load_audio(real_sounds()[1])[:PAPER_CLIP_SAMPLES])
    riffmask = [sys.executable, "-m", "riffmask.cli"]
    commands = {
        "spectrogram": [*riffmask, "spectrogram", str(clip), str(tmp / "a.png")],
        "audio": [*riffmask, "audio", str(tmp / "a.png"), str(tmp / "a.wav")],
        "mask": [*riffmask, "mask", str(tmp / "a.png"), str(tmp / "m.png")],
        "import_torch": [sys.executable, "-c", "import torch"],
    }
    trees = {"after": dict(os.environ)}
    if before:
        path = checkout(before, tmp / "before")
        trees = {"before": dict(os.environ, PYTHONPATH=str(path)), **trees}
    for name, env in trees.items():
        env[CACHE_ENV] = str(tmp / f"cache-{name}")
        for cmd in commands.values():  # fills the caches (filter bank, compiled kernels)
            wall(cmd, env, tmp)
    runs: dict = {tree: {name: {"wall": [], "cpu": []} for name in commands} for tree in trees}
    loads = [load_average()]
    for name, cmd in commands.items():
        for _ in range(repeat):
            for tree, env in trees.items():
                seconds, cpu = timed(cmd, env, tmp)  # not the checkout: `-m` puts the working folder first
                runs[tree][name]["wall"].append(round(seconds, 2))
                runs[tree][name]["cpu"].append(round(cpu, 2))
        loads.append(load_average())
    result = {
        tree: {name: {"median_s": statistics.median(r["wall"]), "cpu_median_s": statistics.median(r["cpu"]),
                      "runs_s": r["wall"]} for name, r in commands_runs.items()}
        for tree, commands_runs in runs.items()
    }  # fmt: skip
    if before:
        result["before_ref"] = subprocess.run(["git", "rev-parse", "--short", before], check=True, capture_output=True,
                                              text=True).stdout.strip()  # fmt: skip
    result["load_before_each_command_and_at_end"] = loads
    return result


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
    parser.add_argument("--before", metavar="REF", help="also time the one-shot commands of this git commit")
    args = parser.parse_args(argv)
    # One part alone keeps the other part's entries of the last run.
    previous = RESULTS / "scale.json"
    result = json.loads(previous.read_text()) if args.part and previous.is_file() else {}
    result.pop("machine", None)
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in (None, "one-shot"):
            result["one_shot_whole_process"] = one_shot_times(Path(tmp), args.before)
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
