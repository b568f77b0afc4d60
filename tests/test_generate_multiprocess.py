"""``accelerate launch -m riffmask.cli generate|sweep|eval`` on two real CPU processes makes what one process makes.

As in test_train_multiprocess: ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2``
runs torchrun's processes on the CPU with the gloo backend.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf
from conftest import SMALL_FLAGS, SR, STALLING_GENERATE, killed_when_stalled, tone

from riffmask.metrics.results import read_csv
from riffmask.metrics.tiny import save_tiny_clap

TIMING = ("seconds", "model_seconds", "started")
ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_USE_CPU": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes() -> list[str]:
    """``accelerate launch`` of two CPU processes, on a port of their own."""
    return ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]  # fmt: skip


def _riffmask(launcher: list[str], *args: str) -> subprocess.CompletedProcess:
    """``riffmask ARGS`` as a whole process (``launcher``: [] for one process, or :func:`_two_processes`)."""
    cmd = [sys.executable, *launcher, "-m", "riffmask.cli", *args]
    return subprocess.run(cmd, env=dict(os.environ, **ENV), capture_output=True, text=True, timeout=600)


def _generate(launcher: list[str], *args: str) -> subprocess.CompletedProcess:
    return _riffmask(launcher, "generate", *args, *SMALL_FLAGS)


def _contents(folder) -> dict[str, object]:
    """Every file's bytes (the reports' time stamps aside); sidecars and summaries as data without the run's
    timings and output folder."""
    found: dict[str, object] = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            if path.name == "summary.json":
                data = {k: sorted(map(json.dumps, v)) if isinstance(v, list) else v for k, v in data.items()}
            data.get("config", {}).get("output", {}).pop("out", None)
            found[name] = {k: v for k, v in data.items() if k not in TIMING}
        elif path.suffix not in (".yaml", ".html"):
            found[name] = path.read_bytes()
    return found


def _assert_same_folders(got, want) -> None:
    got, want = _contents(got), _contents(want)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], name


def test_two_processes_make_the_one_process_outputs_and_go_past_a_bad_input(tiny_model_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k, freq in enumerate((220, 440, 880)):
        sf.write(inputs / f"s{k}.wav", tone(freq, 0.4) + tone(3 * freq, 0.4, amp=0.1), SR)
    (inputs / "bad.wav").write_bytes(b"not audio" * 40)
    common = ["--model", str(tiny_model_dir), str(inputs), "--num-variations", "2", "--batch-size", "2"]
    two = _generate(_two_processes(), *common, "--out", str(tmp_path / "two"))
    assert two.returncode != 0 and "1 failed" in two.stdout, two.stderr[-3000:]  # the bad input, reported
    for k in range(3):  # each input was made by one process only: the inputs were split, not repeated
        assert two.stderr.count(f"s{k}.wav -> ") == 1, two.stderr[-3000:]
    one = _generate([], *common, "--out", str(tmp_path / "one"))
    assert one.returncode == 1, one.stderr[-3000:]
    assert len(list((tmp_path / "one").glob("*_output.png"))) == 6
    _assert_same_folders(tmp_path / "two", tmp_path / "one")
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert [f["input"] for f in summary["failed"]] == [str(inputs / "bad.wav")]

    rerun = _generate(_two_processes(), *common, "--out", str(tmp_path / "two"))
    assert "0 generated, 6 skipped" in rerun.stdout, rerun.stderr[-3000:]  # finished items are not made again




def test_a_distributed_run_killed_with_kill_9_is_finished_by_a_rerun_making_nothing_twice(tiny_model_dir, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for k, freq in enumerate((220, 330, 440, 550)):  # process 0: s0, s2; process 1: s1, s3
        sf.write(inputs / f"s{k}.wav", tone(freq, 0.3), SR)
    script = tmp_path / "stalling_generate.py"
    script.write_text(STALLING_GENERATE)
    args = ["--model", str(tiny_model_dir), str(inputs), "--out", str(out), *SMALL_FLAGS]
    launch = [sys.executable, *_two_processes()]
    # Process 1 stalls writing s3's output image once s2 (process 0's last input) is complete.
    env = dict(os.environ, **ENV, STALL_ON="s3_output.png", AFTER="s2.json")
    stalled = killed_when_stalled([*launch, str(script), "generate", *args], "generate: stalled", timeout=600, env=env)
    with stalled as launcher:
        # The whole launch dies at once, as when a job is killed: the launcher and both processes (which
        # torchrun starts in sessions of their own), kill -9 each.
        for proc in [psutil.Process(launcher.pid), *psutil.Process(launcher.pid).children(recursive=True)]:
            os.kill(proc.pid, signal.SIGKILL)
    assert sorted(p.name for p in out.glob("s3*")) == ["s3_input.png", "s3_mask.png"]
    assert (out / ".s3.claim").is_file() and list(out.glob(".s3_output.png.*"))  # what kill -9 left
    assert not (out / "summary.json").exists()
    made = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if not p.name.startswith((".", "s3"))}
    assert len(made) == 3 * 6  # s0, s1 and s2 complete

    rerun = _generate(_two_processes(), *args[:-len(SMALL_FLAGS)])
    assert rerun.returncode == 0 and "1 generated, 3 skipped" in rerun.stdout, rerun.stderr[-3000:]
    assert rerun.stderr.count(" -> ") == 1 and "s3.wav -> s3" in rerun.stderr  # only the killed item, once
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in made} == made  # the rest untouched
    assert not list(out.glob(".*"))  # no claim, no temporary file
    assert len(list(out.glob("s?.json"))) == 4 and sf.info(out / "s3.wav").frames == round(0.3 * SR)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == ["s3"] and len(summary["skipped"]) == 3 and summary["runs"] == []


def test_a_sweep_on_two_processes_makes_the_one_process_sweep_and_goes_past_a_bad_input(tiny_model_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name, freq in (("a", 300), ("b", 700)):
        sf.write(inputs / f"{name}.wav", tone(freq, 0.3), SR)
    (inputs / "bad.wav").write_bytes(b"RIFF junk")  # unreadable: reported by both processes, the rest goes on
    args = ["sweep", str(inputs), "--model", str(tiny_model_dir), "--downshift", "0,255", "--chroma-iterations", "2"]
    args += SMALL_FLAGS
    two = _riffmask(_two_processes(), *args, "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    for name in ("a", "b"):  # each of the 4 items made by one process only
        for combination in ("downshift_0", "downshift_255"):
            assert two.stderr.count(f"sweep: {name} {combination} ") == 1, two.stderr[-3000:]
    rows = read_csv(tmp_path / "two" / "sweep.csv")
    assert [(r["input"], r["downshift"], bool(r["error"])) for r in rows] == [
        ("a", 0, False), ("a", 255, False), ("b", 0, False), ("b", 255, False), ("bad", 0, True), ("bad", 255, True)
    ]  # fmt: skip
    assert not list((tmp_path / "two").glob("sweep.part-*"))  # merged into sweep.csv
    one = _riffmask([], *args, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    _assert_same_folders(tmp_path / "two", tmp_path / "one")
    assert (tmp_path / "two" / "report.html").is_file()

    rerun = _riffmask(_two_processes(), *args, "--out", str(tmp_path / "two"))
    assert rerun.returncode == 0 and "sweep: a " not in rerun.stderr and "sweep: b " not in rerun.stderr
    assert read_csv(tmp_path / "two" / "sweep.csv") == rows  # nothing made again; the bad input tried again


def test_eval_embeddings_on_two_processes_equal_one_process(tmp_path):
    clap = save_tiny_clap(tmp_path / "clap")
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    rng = np.random.default_rng(0)
    for folder, count in ((gen, 3), (ref, 2)):
        folder.mkdir()
        for k in range(count):
            sf.write(folder / f"{folder.name}{k}.wav", 0.1 * rng.standard_normal(int(1.2 * SR)), SR)
    (gen / "broken.wav").write_bytes(b"RIFF junk")
    results = {}
    for label, launcher in (("one", []), ("two", _two_processes())):
        fad = ["eval", "fad", str(gen), "--reference", str(ref), "--clap-model", str(clap), "--no-fad-inf"]
        fad += ["--embeddings", str(tmp_path / f"emb-{label}"), "--json", str(tmp_path / f"fad-{label}.json")]
        clap_score = ["eval", "clap", str(gen), "--prompt", "ambient", "--clap-model", str(clap)]
        clap_score += ["--json", str(tmp_path / f"clap-{label}.json")]
        for argv in (fad, clap_score):
            done = _riffmask(launcher, *argv)
            assert done.returncode == 1 and "broken.wav" in done.stderr, done.stderr[-3000:]  # reported, not fatal
        results[label] = {kind: json.loads((tmp_path / f"{kind}-{label}.json").read_text()) for kind in ("fad", "clap")}
    assert results["two"] == results["one"]  # every score, in the same order
    assert [r["name"] for r in results["one"]["clap"]["items"]] == ["gen0", "gen1", "gen2", "broken"]
    for k in range(3):  # the embeddings each process stored, to the bit
        stored = [np.load(tmp_path / f"emb-{label}" / f"gen{k}.npy") for label in ("one", "two")]
        np.testing.assert_array_equal(*stored)
