"""Two CPU processes under `accelerate launch` train what one process does with the same global batch.

accelerate 1.15 starts several CPU processes only through mpirun when given ``--cpu``; without MPI,
``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2`` runs torchrun's processes on
the CPU with the gloo backend (DistributedType.MULTI_CPU), which is what this test uses.
"""

from __future__ import annotations

import socket

import test_train_support as support
import torch
from test_train_support import launch, overrides, run_train, unet_weights

prepared_dir = support.prepared_dir  # the shared session fixture


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path, tiny_model_dir, prepared_dir):
    # Adam divides by sqrt(v) + eps: where a gradient is ~0, float rounding (the processes' average vs one
    # batch's mean) would decide the sign of a full-size update. A larger eps keeps such noise small.
    settings = dict(max_train_steps=3, learning_rate=1e-3, gradient_accumulation_steps=2, noise_offset=0.05,
                    adam_epsilon=1e-4)
    two = overrides(prepared_dir, tiny_model_dir, tmp_path / "two", train_batch_size=1, **settings)
    output = launch(two, "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                    "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
                    env={"ACCELERATE_USE_CPU": "1"}).output
    assert output.count("2 process(es) x batch 1 x 2 accumulation = 4 clips per step") == 2
    one = run_train(**overrides(prepared_dir, tiny_model_dir, tmp_path / "one", train_batch_size=2, **settings))
    got, want = unet_weights(tmp_path / "two"), unet_weights(one)
    base = support.load_file(str(tiny_model_dir / "unet" / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(want[k], base[k]) for k in want)
    # Equal up to float rounding: within 1% of one step's update (lr = 1e-3).
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5)
