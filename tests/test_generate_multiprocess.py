"""``accelerate launch -m riffmask.cli generate`` on two real CPU processes makes what one process makes.

As in test_train_multiprocess: ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2``
runs torchrun's processes on the CPU with the gloo backend.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import soundfile as sf
from conftest import SMALL_FLAGS, SR, tone

TIMING = ("seconds", "model_seconds", "started")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _generate(launcher: list[str], *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", ACCELERATE_USE_CPU="1")
    cmd = [sys.executable, *launcher, "-m", "riffmask.cli", "generate", *args, *SMALL_FLAGS]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _contents(folder) -> dict[str, object]:
    """Every file's bytes; sidecars and the summary as data without the run's timings and output folder."""
    found: dict[str, object] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            if path.name == "summary.json":
                data = {k: sorted(map(json.dumps, v)) if isinstance(v, list) else v for k, v in data.items()}
            data["config"]["output"].pop("out")
            found[path.name] = {k: v for k, v in data.items() if k not in TIMING}
        elif path.suffix != ".yaml":
            found[path.name] = path.read_bytes()
    return found


def test_two_processes_make_the_one_process_outputs_and_go_past_a_bad_input(tiny_model_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k, freq in enumerate((220, 440, 880)):
        sf.write(inputs / f"s{k}.wav", tone(freq, 0.4) + tone(3 * freq, 0.4, amp=0.1), SR)
    (inputs / "bad.wav").write_bytes(b"not audio" * 40)
    common = ["--model", str(tiny_model_dir), str(inputs), "--num-variations", "2", "--batch-size", "2"]
    two = _generate(["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                     "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())],
                    *common, "--out", str(tmp_path / "two"))  # fmt: skip
    assert two.returncode != 0 and "1 failed" in two.stdout, two.stderr[-3000:]  # the bad input, reported
    for k in range(3):  # each input was made by one process only: the inputs were split, not repeated
        assert two.stderr.count(f"s{k}.wav -> ") == 1, two.stderr[-3000:]
    one = _generate([], *common, "--out", str(tmp_path / "one"))
    assert one.returncode == 1, one.stderr[-3000:]
    got, want = _contents(tmp_path / "two"), _contents(tmp_path / "one")
    assert sorted(got) == sorted(want) and len([n for n in want if n.endswith("_output.png")]) == 6
    for name in want:
        assert got[name] == want[name], name
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert [f["input"] for f in summary["failed"]] == [str(inputs / "bad.wav")]

    rerun = _generate(["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
                       "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                       str(_free_port())], *common, "--out", str(tmp_path / "two"))  # fmt: skip
    assert "0 generated, 6 skipped" in rerun.stdout, rerun.stderr[-3000:]  # finished items are not made again
