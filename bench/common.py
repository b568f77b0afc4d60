"""Helpers shared by the benchmarks: machine description, timing, the real sounds, result files."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
#: The real everyday sounds of the benchmarks: ``$RIFFMASK_BENCH_DATA`` (a folder holding ``seed-samples/``),
#: by default ``../shared/data`` beside the checkout when it exists.
BENCH_DATA_ENV = "RIFFMASK_BENCH_DATA"
DEFAULT_BENCH_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def machine() -> dict:
    """What the numbers were measured on."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "device": device,
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def best_of(fn: Callable[[], object], repeat: int = 3) -> tuple[float, float]:
    """(best, median) wall seconds of ``repeat`` calls: the best is the least disturbed by other load."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def real_sounds() -> list[Path]:
    """The benchmark's real sounds (``seed-samples/*.wav``), or an exit that says how to provide them."""
    folder = Path(os.environ.get(BENCH_DATA_ENV) or DEFAULT_BENCH_DATA) / "seed-samples"
    sounds = sorted(folder.glob("*.wav"))
    if not sounds:
        raise SystemExit(
            f"benchmark sounds not found in {folder}: set {BENCH_DATA_ENV} to a folder whose seed-samples/ holds "
            "the WAVs (the six everyday sounds published with the paper, 44.1 kHz, about 5.1 s each: clock tick, "
            "cuckoo, geese, honking, a kart game, a passing train; any short everyday recordings work)"
        )
    return sounds


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
    print(f"wrote {path}")
    return path
