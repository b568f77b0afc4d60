"""One training run per ``output_dir``: another run's weights, log and checkpoints are never mixed in.

A folder that holds a run (its ``training_config.yaml``, checkpoints or log) takes only the same run
again: the same settings and data, resumed or extended (``resume``, ``max_train_steps``, checkpoint
and validation cadence may change). Anything else refuses before a model loads, unless
``overwrite=true``, which first removes the old run's files.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from riffmask.common.config import ConfigError, config_dict, read_yaml, without_local
from riffmask.common.errors import RiffmaskError
from riffmask.common.io import output_folder
from riffmask.train.config import TrainConfig

log = logging.getLogger(__name__)
CONFIG_FILE = "training_config.yaml"
FINGERPRINT_FILE = "dataset_fingerprint.json"
#: What a run writes (state, log, media, weights of either mode), removed by ``overwrite=true``.
RUN_STATE = (
    "checkpoints", "logs", "validation", "training_log.jsonl", CONFIG_FILE, FINGERPRINT_FILE,
    "pytorch_lora_weights.safetensors", "lora_kohya.safetensors", "model_index.json",
    "unet", "text_encoder", "vae", "tokenizer", "scheduler", "feature_extractor", "safety_checker",
)  # fmt: skip
#: Keys that may change when the same run is resumed or extended.
CONTINUABLE = frozenset(
    {"resume", "max_train_steps", "checkpointing_steps", "checkpoints_total_limit", "validation_steps", "report_to"}
)


def _differences(cfg: TrainConfig, out: Path, fingerprint: str) -> list[str]:
    """Why the run in ``out`` is not ``cfg``'s (empty: the same run, or no run there)."""
    if not (out / CONFIG_FILE).is_file():
        traces = [name for name in RUN_STATE if (out / name).exists()]
        return [f"its {', '.join(traces)} without {CONFIG_FILE}"] if traces else []
    try:
        saved = without_local(TrainConfig, read_yaml(out / CONFIG_FILE), str(out / CONFIG_FILE))
    except ConfigError as exc:
        return [f"its {CONFIG_FILE} is not this version's ({exc})"]
    now = without_local(TrainConfig, config_dict(cfg))
    keys = sorted(k for k in saved.keys() | now.keys() if k not in CONTINUABLE and saved.get(k) != now.get(k))
    found = [f"{k}: {saved.get(k)!r} there, {now.get(k)!r} now" for k in keys]
    try:
        before = json.loads((out / FINGERPRINT_FILE).read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        before = None
    if before is not None and before != fingerprint:
        found.append("the dataset's content changed")
    return found


def check_run_folder(cfg: TrainConfig, fingerprint: str, main_process: bool = True) -> None:
    """Refuse an ``output_dir`` that cannot take this run (before any model loads); clear it on ``overwrite``."""
    out = output_folder(cfg.output_dir, "output_dir")
    found = _differences(cfg, out, fingerprint)
    if not found:
        return
    if not cfg.overwrite:
        raise RiffmaskError(
            f"output_dir: {out} holds another training run ({'; '.join(found[:3])}); resume it with its "
            "settings, choose another output_dir, or set overwrite=true to replace it"
        )
    if main_process:
        log.warning("output_dir: replacing the run in %s (%s)", out, "; ".join(found[:3]))
        for name in RUN_STATE:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
