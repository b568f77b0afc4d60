"""Publishing a training output to the Hugging Face Hub, with a model card.

The token is whatever huggingface_hub finds (``HF_TOKEN`` or ``huggingface-cli login``); it is passed
to no function of ours and written nowhere. ``HF_ENDPOINT`` selects another Hub (the tests use a local
server). Checkpoints, logs and caches stay local; weights, config, fingerprint, training log,
validation media and the card are uploaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from riffmask.common.errors import RiffmaskError, hub_errors
from riffmask.common.io import write_text_atomic

#: Local-only parts of an output folder.
IGNORE = ["checkpoints/*", "logs/*", "wandb/*", "class_images/*", ".*", "*/.*"]


def _latest_media(folder: Path) -> list[Path]:
    steps = sorted((p for p in (folder / "validation").glob("step-*") if p.is_dir()),
                   key=lambda p: int(p.name.split("-")[1]))
    return sorted(steps[-1].iterdir()) if steps else []


def _dataset_summary(dataset: str) -> str:
    report = Path(dataset) / "report.json"
    if not report.is_file():
        return f"`{Path(dataset).name}` (prepared with `riffmask prep`)"
    info = json.loads(report.read_text(encoding="utf-8"))
    genres = ", ".join(f"{g} ({n})" for g, n in info.get("clips_per_genre", {}).items())
    return (f"{info.get('clips_written', '?')} spectrogram clips of {info.get('seconds_read', '?')} s of audio; "
            f"genres: {genres or '?'}; splits: {info.get('clips_per_split', {})}")


def model_card(folder: Path, cfg: dict) -> str:
    """The README.md of a training output: what it is, how it was trained, how to use it."""
    lora = cfg["mode"] == "lora"
    fingerprint = {}
    if (folder / "dataset_fingerprint.json").is_file():
        fingerprint = json.loads((folder / "dataset_fingerprint.json").read_text(encoding="utf-8"))
    front = {
        "base_model": cfg["pretrained_model_name_or_path"],
        "library_name": "diffusers",
        "tags": ["riffmask", "riffusion", "text-to-audio", "dreambooth"] + (["lora"] if lora else []),
        "inference": False,
    }
    settings = ["mode", "resolution", "max_train_steps", "train_batch_size", "gradient_accumulation_steps",
                "learning_rate", "train_text_encoder", "text_encoder_steps", "text_encoder_learning_rate",
                "optimizer", "mixed_precision", "lr_scheduler", "snr_gamma", "noise_offset", "prediction_type",
                "with_prior_preservation", "prior_loss_weight", "captions", "seed"]
    if lora:
        settings += ["rank", "lora_alpha", "lora_dropout", "lora_target_modules"]
    rows = "\n".join(f"| `{k}` | `{cfg.get(k)}` |" for k in settings)
    model_flag = (f"--model {cfg['pretrained_model_name_or_path']} --lora REPO_OR_DIR" if lora
                  else "--model REPO_OR_DIR")
    media = []
    for path in _latest_media(folder):
        rel = path.relative_to(folder).as_posix()
        if path.suffix == ".png":
            media.append(f"![{path.stem}]({rel})")
        elif path.suffix == ".wav":
            media.append(f'<audio controls src="{rel}"></audio> {path.stem}')
    files = ("`pytorch_lora_weights.safetensors` (diffusers: `pipe.load_lora_weights`) and "
             "`lora_kohya.safetensors` (AUTOMATIC1111, ComfyUI)" if lora
             else "a diffusers pipeline folder (safetensors)")
    return "\n".join([
        "---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
        f"# {'LoRA' if lora else 'DreamBooth'} fine-tune of {cfg['pretrained_model_name_or_path']} on spectrograms",
        "", "Trained with [riffmask](https://github.com/) to turn everyday sounds into music with mask-based "
        "diffusion on Riffusion spectrograms.", "",
        f"Files: {files}; `training_config.yaml` (every setting), `dataset_fingerprint.json`, "
        "`training_log.jsonl`.", "",
        "## Dataset", "", _dataset_summary(cfg["dataset"]),
        f"Fingerprint: `{fingerprint.get('fingerprint', '?')}`.", "",
        *_genre_lines(folder),
        "## Training settings", "", "| key | value |", "| --- | --- |", rows, "",
        "## Generate", "", "```bash", f'riffmask generate kettle.wav {model_flag} --prompt "{_prompt(cfg)}"',
        "```", "", "## Validation (last step)", "", "\n\n".join(media) or "(no validation media)", "",
    ])


def _genre_lines(folder: Path) -> list[str]:
    """The held-out genre accuracy the run reached, against the base model's (validation/genre.json)."""
    path = folder / "validation" / "genre.json"
    if not path.is_file():
        return []
    steps = json.loads(path.read_text(encoding="utf-8"))["steps"]
    last = max(steps, key=int)
    final, base = steps[last], steps.get("0")
    against = f" (base model: {base['accuracy']:.3f})" if base else ""
    recall = ", ".join(f"{g} {r:.2f}" for g, r in final["recall"].items())
    return ["## Genre accuracy", "",
            f"Held-out genre accuracy at step {last}: **{final['accuracy']:.3f}**{against} on {final['clips']} clips "
            f"of {len(final['genres'])} genres (chance {final['chance']:.3f}), by diffusion classification "
            f"(`riffmask eval genre`). Recall per genre: {recall}.", ""]


def _prompt(cfg: dict) -> str:
    prompts = cfg.get("validation", {}).get("sampling", {}).get("prompt")
    if prompts:
        return prompts[0]
    return cfg["instance_template"].format(genre="GENRE") if cfg["captions"] == "template" else cfg["instance_prompt"]


def write_model_card(folder: Path) -> Path:
    """Write ``folder/README.md`` from the run's resolved config (``training_config.yaml``)."""
    folder = Path(folder)
    config_path = folder / "training_config.yaml"
    if not config_path.is_file():
        raise RiffmaskError(f"{folder}: not a riffmask training output (no training_config.yaml)")
    values = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    write_text_atomic(folder / "README.md", model_card(folder, values))
    return folder / "README.md"


def publish(folder: str | os.PathLike, repo_id: str, private: bool = False) -> str:
    """Create ``repo_id`` (if needed) and upload the output folder with its card; return the repo URL."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "README.md").is_file():
        write_model_card(folder)
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), ignore_patterns=IGNORE,
                          commit_message="Upload riffmask DreamBooth output")
    except hub_errors() as exc:
        raise RiffmaskError(f"publishing to {repo_id} failed: {exc}") from None
    return str(url)
