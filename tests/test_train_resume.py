"""Exact resume: a run killed with SIGKILL and resumed ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import time

import test_train_support as support
import torch
from safetensors.torch import load_file
from test_train_support import launch, overrides, run_train

prepared_dir = support.prepared_dir  # the shared session fixture


def test_resume_after_kill_9_equals_an_uninterrupted_run(tmp_path, tiny_model_dir, prepared_dir):
    # LoRA dropout draws from the global RNG, accumulation spans micro-steps, cosine warm-up moves the
    # learning rate each step, and the text-encoder adapters train too: each must be restored exactly.
    settings = dict(mode="lora", rank=2, lora_dropout=0.1, train_text_encoder=True, gradient_accumulation_steps=2,
                    lr_scheduler="cosine", lr_warmup_steps=3, max_train_steps=60, checkpointing_steps=4,
                    checkpoints_total_limit=2, learning_rate=1e-2, text_encoder_learning_rate=1e-2)
    killed = overrides(prepared_dir, tiny_model_dir, tmp_path / "killed", **settings)
    proc = launch(killed, wait=False)
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 240
    while not (checkpoints / "checkpoint-8").is_dir():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "pytorch_lora_weights.safetensors").exists()  # it really died mid-run

    resumed = run_train(**{**killed, "resume": "latest"})  # one thread, as the killed subprocess
    reference = run_train(**overrides(prepared_dir, tiny_model_dir, tmp_path / "reference", **settings))
    got = load_file(str(resumed / "pytorch_lora_weights.safetensors"))
    want = load_file(str(reference / "pytorch_lora_weights.safetensors"))
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    steps = [json.loads(line)["step"] for line in (resumed / "training_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 61))  # lines the killed run wrote past its checkpoint were dropped
    assert len(list(checkpoints.glob("checkpoint-*"))) == 2  # keep-last-K
