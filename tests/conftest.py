"""Shared test fixtures: synthetic audio made in the test, nothing from the network or ../shared."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator

import numpy as np
import pytest

SR = 44100


#: Generation settings that keep the tiny pipeline's runs at milliseconds (64-px windows, 4 steps).
SMALL = {"num_frequencies": 64, "window": 64, "overlap": 16, "steps": 4, "iterations": 2}
SMALL_FLAGS = [f"{k}={v}" for k, v in SMALL.items()]


def small_config(model, **kwargs):
    """A GenerateConfig for ``model`` with the SMALL settings."""
    from riffmask.common.config import build_config
    from riffmask.infer.config import GenerateConfig

    return build_config(GenerateConfig, ("test", {"model": str(model), **SMALL, **kwargs}))


def tone(freq: float, seconds: float, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random pipeline folder of the Riffusion architecture, built once per test session."""
    from riffmask.infer.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny_model") / "pipe", seed=0)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory):
    """The codec's disk cache in a folder of this session (child processes inherit it), not the user's."""
    from riffmask.common.cache import CACHE_ENV

    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("riffmask_cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session", autouse=True)
def single_torch_thread():
    """One torch thread for the whole suite, restored after.

    Tiny models gain nothing from a second thread, and on a shared 2-core machine OpenMP threads
    that wait for each other make such tests ten times slower whenever other processes run.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


#: ``riffmask ARGS`` whose generate stalls for good inside the atomic write of the first image whose name ends
#: with STALL_ON (once the file AFTER, if set, exists beside it), having printed "generate: stalled": the state
#: in which a test kills it with kill -9 (:func:`killed_when_stalled`).
STALLING_GENERATE = """
import os, sys, time
from pathlib import Path
import riffmask.cli as c
from riffmask.common.io import atomic_path
from riffmask.infer import files
save_image = files.save_image
def stalling(image, path):
    path = Path(path)
    if path.name.endswith(os.environ["STALL_ON"]):
        while os.environ.get("AFTER") and not (path.parent / os.environ["AFTER"]).exists():
            time.sleep(0.05)
        with atomic_path(path):
            print("generate: stalled", file=sys.stderr, flush=True)
            while True:
                time.sleep(60)
    save_image(image, path)
files.save_image = stalling
sys.exit(c.main(sys.argv[1:]))
"""


@contextlib.contextmanager
def killed_when_stalled(cmd: list[str], marker: str, timeout: float = 120, **popen) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` until it prints ``marker`` on stderr (a test-made stall), hand it to the block, then
    ``kill -9`` it; a process that exits first, or hangs without the marker for ``timeout`` seconds,
    fails the test."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, **popen)
    watchdog = threading.Timer(timeout, proc.kill)  # a hang fails the test instead of blocking the suite
    watchdog.start()
    try:
        for line in proc.stderr:
            if marker in line:
                break
        else:
            pytest.fail(f"{cmd[:3]} exited (status {proc.wait()}) before stalling")
        yield proc
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
