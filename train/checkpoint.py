"""Atomic, exactly resumable checkpoints.

A checkpoint is ``checkpoints/checkpoint-<step>/``: the trained weights (safetensors, only the
parameters that train: the whole UNet for a full fine-tune, the adapters for LoRA), the optimizer,
learning-rate scheduler and per-process RNG states (``accelerator.save_state``), and
``trainer_state.json`` (step, dataset fingerprint). It is written under a temporary name and renamed
when complete, so a ``checkpoint-*`` folder is always loadable and "latest" (the highest step) can
never be a half-written one. Data order and noise are functions of the step (see ``train.data``), so
the step counter is all the data pipeline needs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from riffmask.common.config import ConfigError
from riffmask.common.io import write_json_atomic

log = logging.getLogger(__name__)
_NAME = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temporary folders are ignored)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def resolve_resume(resume: str | None, root: Path) -> Path | None:
    """The checkpoint to resume from: None, the latest under ``root`` (None if there is none) or a path."""
    if resume is None:
        return None
    if resume == "latest":
        found = checkpoint_dirs(root)
        if not found:
            log.warning("resume=latest: no checkpoint in %s yet; starting from scratch", root)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise ConfigError(f"resume: {resume!r} is not a checkpoint folder (no {STATE_FILE})")
    return path


def read_state(path: Path) -> dict:
    return json.loads((path / STATE_FILE).read_text(encoding="utf-8"))


def trainable_state(model: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {name: params[name].detach().contiguous().cpu() for name in names}


def register_hooks(accelerator, trained: dict[str, tuple[torch.nn.Module, list[str]]]) -> None:
    """Make ``save_state``/``load_state`` write/read only the trained parameters, as safetensors.

    ``trained`` maps a name to (unwrapped model, names of its trained parameters).
    """

    def name_of(model) -> str:
        unwrapped = accelerator.unwrap_model(model)
        return next(name for name, (m, _) in trained.items() if m is unwrapped)

    def save_hook(models, weights, output_dir):
        for model in models:
            name = name_of(model)
            module, names = trained[name]
            if accelerator.is_main_process:
                save_file(trainable_state(module, names), os.path.join(output_dir, f"{name}.safetensors"))
        weights.clear()  # the frozen base weights are not part of a checkpoint

    def load_hook(models, input_dir):
        while models:
            name = name_of(models.pop())
            module, names = trained[name]
            state = load_file(os.path.join(input_dir, f"{name}.safetensors"))
            if sorted(state) != sorted(names):
                raise ConfigError(f"{input_dir}: {name} weights do not match this run's trained parameters")
            params = dict(module.named_parameters())
            with torch.no_grad():
                for key, value in state.items():
                    params[key].copy_(value)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save_checkpoint(accelerator, root: Path, step: int, extra: dict, keep: int | None) -> Path:
    """Write ``root/checkpoint-<step>`` atomically (every process calls this), then prune old ones."""
    final = root / f"checkpoint-{step}"
    tmp = root / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process:
        for stale in root.glob(".tmp-checkpoint-*"):  # left by a crash during an earlier save
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(tmp / STATE_FILE, {"step": step, **extra})
        _fsync_tree(tmp)
        if final.exists():  # the same step saved by an earlier, interrupted run: replace it whole
            shutil.rmtree(final)
        os.replace(tmp, final)
        _prune(root, keep)
        log.info("saved %s", final)
    accelerator.wait_for_everyone()
    return final


def _fsync_tree(folder: Path) -> None:
    """Flush the files to disk before the rename publishes them (a power cut must not expose zeros)."""
    for path in folder.rglob("*"):  # DeepSpeed writes its engine state into a subfolder
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _prune(root: Path, keep: int | None) -> None:
    if keep is None:
        return
    for old in checkpoint_dirs(root)[:-keep]:
        shutil.rmtree(old)
