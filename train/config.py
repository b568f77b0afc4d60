"""Every option of the DreamBooth recipe, declared once.

Keys carry the names of diffusers' ``examples/dreambooth`` scripts wherever one exists
(``pretrained_model_name_or_path``, ``train_batch_size``, ``checkpointing_steps`` ...), so habits
carry over; riffmask's own are ``dataset``, ``mode``, ``optimizer``, ``resume``, ``captions`` and the
text-encoder schedule. ``validate`` runs before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from riffmask.common.config import ConfigError, option
from riffmask.core.decode import DecodeConfig
from riffmask.infer.config import SamplingConfig
from riffmask.infer.mask import MaskParams


@dataclass
class ValidationConfig:
    """How validation generates: ``riffmask generate``'s own sections (``validation.sampling.steps=20``,
    ``validation.mask.downshift=40``...). An empty prompt means the first training caption; the
    scheduler steps also make the class images of prior preservation."""

    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(prompt=[], steps=20))
    mask: MaskParams = field(default_factory=MaskParams)
    decode: DecodeConfig = field(default_factory=lambda: DecodeConfig(iterations=32, phase_start="input"))


@dataclass
class TrainConfig:
    PRESETS: ClassVar[str] = "train"

    # ------------------------------------------------------------------ model and data
    dataset: str = option(help="folder written by `riffmask prep` (instance clips)")
    pretrained_model_name_or_path: str = option(
        "riffusion/riffusion-model-v1", help="base pipeline: Hub id or local diffusers folder"
    )
    revision: str | None = option(None, help="Hub revision of the base model")
    output_dir: str = option("runs/dreambooth", local=True, help="where checkpoints, weights, logs and media go")
    overwrite: bool = option(
        False, local=True, help="replace another run held in output_dir (its weights, log, checkpoints)"
    )
    mode: Literal["full", "lora"] = option("full", help="full fine-tune or LoRA adapters")
    resolution: int = option(512, help="spectrogram height and width in pixels (multiple of 8)")
    captions: Literal["dataset", "template", "instance_prompt"] = option(
        "dataset", help="dataset: each clip's caption; template: instance_template; instance_prompt: one prompt"
    )
    instance_template: str = option("a sks {genre} song", help="caption template ({genre} is filled in)")
    instance_prompt: str = option("a sks song", help="the single prompt used when captions=instance_prompt")
    balance_genres: bool = option(
        False, help="draw the genres in turn, each as often as the others (unbalanced genre folders)"
    )
    # ------------------------------------------------------------------ prior preservation
    with_prior_preservation: bool = option(False, help="add a class-prior loss (DreamBooth)")
    class_data_dir: str | None = option(None, help="prepared dataset of class clips; None: generate them")
    class_prompt: str = option("music", help="caption of the class clips (and prompt when generating them)")
    num_class_images: int = option(50, help="class clips to generate when class_data_dir is None")
    prior_loss_weight: float = option(1.0, help="weight of the class-prior loss")
    # ------------------------------------------------------------------ optimisation
    seed: int = option(0, help="seed for data order, noise, timesteps and LoRA init")
    train_batch_size: int = option(1, help="clips per process per micro-step")
    max_train_steps: int = option(1500, help="optimizer steps in total (text-encoder phase included)")
    gradient_accumulation_steps: int = option(1, help="micro-steps per optimizer step (all trained models)")
    learning_rate: float = option(2e-6, help="UNet learning rate")
    train_text_encoder: bool = option(False, help="also train the text encoder")
    text_encoder_steps: int = option(
        0, help="0: train the text encoder alongside the UNet; N>0: the text encoder alone first for N steps"
    )
    text_encoder_learning_rate: float = option(1e-6, help="text-encoder learning rate")
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = option(
        "constant", help="learning-rate curve of each phase"
    )
    lr_warmup_steps: int = option(0, help="warm-up steps of each phase")
    optimizer: Literal["adamw", "adamw8bit", "paged_adamw8bit"] = option("adamw", help="AdamW or bitsandbytes'")
    adam_beta1: float = option(0.9, help="AdamW beta1")
    adam_beta2: float = option(0.999, help="AdamW beta2")
    adam_weight_decay: float = option(1e-2, help="AdamW decoupled weight decay")
    adam_epsilon: float = option(1e-8, help="AdamW epsilon")
    max_grad_norm: float = option(1.0, help="gradient clipping (0 disables)")
    mixed_precision: Literal["no", "fp16", "bf16"] = option("no", help="autocast dtype; trained weights stay fp32")
    gradient_checkpointing: bool = option(False, help="recompute activations in backward to save memory")
    snr_gamma: float | None = option(None, help="min-SNR loss weighting gamma (5.0 recommended); None: off")
    noise_offset: float = option(0.0, help="offset noise strength (0.05-0.1 helps very loud/quiet clips)")
    prediction_type: Literal["epsilon", "v_prediction"] | None = option(
        None, help="training target; None: the base model's scheduler setting"
    )
    # ------------------------------------------------------------------ LoRA
    rank: int = option(4, help="LoRA rank")
    lora_alpha: float | None = option(None, help="LoRA alpha; None: equal to rank")
    lora_dropout: float = option(0.0, help="dropout on the LoRA input while training (exports ship 0)")
    lora_target_modules: list[str] = option(["to_k", "to_q", "to_v", "to_out.0"], help="UNet modules with adapters")
    text_encoder_lora_target_modules: list[str] = option(
        ["q_proj", "k_proj", "v_proj", "out_proj"], help="text-encoder modules"
    )
    kohya_export: bool = option(True, help="also write a Kohya/A1111-format LoRA file")
    # ------------------------------------------------------------------ checkpoints
    checkpointing_steps: int = option(500, help="save a resumable checkpoint every N steps (0: never)")
    checkpoints_total_limit: int | None = option(None, help="keep only the last K checkpoints")
    resume: str | None = option(None, help="'latest' or a checkpoint folder")
    # ------------------------------------------------------------------ validation and logging
    validation_steps: int = option(0, help="generate validation audio and held-out loss every N steps (0: off)")
    validation_sounds: list[str] = option([], help="everyday-sound files; empty: the built-in synthetic sound")
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    validation_genre_pairs: int = option(
        16, help="(timestep, noise) pairs per held-out clip and genre of the validation genre accuracy"
    )
    report_to: Literal["none", "tensorboard", "wandb"] = option("tensorboard", help="tracker")
    tracker_project_name: str = option("riffmask-dreambooth", help="wandb project / tensorboard run name")
    # ------------------------------------------------------------------ publishing
    push_to_hub: bool = option(False, local=True, help="upload the outputs and a model card at the end")
    hub_model_id: str | None = option(None, local=True, help="owner/name on the Hub")
    hub_private: bool = option(False, local=True, help="create the Hub repository as private")

    def validate(self) -> None:
        """Reject configs that cannot work, naming the key (runs before any model loads)."""
        if self.resolution <= 0 or self.resolution % 8:
            raise ConfigError(f"resolution: {self.resolution} is not a positive multiple of 8 (the VAE downscale)")
        _require_dataset("dataset", self.dataset)
        if self.with_prior_preservation and self.class_data_dir is not None:
            _require_dataset("class_data_dir", self.class_data_dir)
        for key in ("train_batch_size", "max_train_steps", "gradient_accumulation_steps", "rank",
                    "validation_genre_pairs"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be at least 1, got {getattr(self, key)}")
        if self.text_encoder_steps < 0 or self.text_encoder_steps >= self.max_train_steps:
            raise ConfigError(
                f"text_encoder_steps: {self.text_encoder_steps} must be in [0, max_train_steps={self.max_train_steps})"
            )
        if self.text_encoder_steps and not self.train_text_encoder:
            raise ConfigError("text_encoder_steps is set but train_text_encoder is false")
        if self.push_to_hub and not self.hub_model_id:
            raise ConfigError("push_to_hub: set hub_model_id (owner/name) too")
        missing = [p for p in self.validation_sounds if not Path(p).is_file()]
        if missing:
            raise ConfigError(f"validation_sounds: {', '.join(missing)} not found")
        if "{genre}" not in self.instance_template and self.captions == "template":
            raise ConfigError(f"instance_template: {self.instance_template!r} has no {{genre}} placeholder")

    @property
    def alpha(self) -> float:
        return float(self.rank if self.lora_alpha is None else self.lora_alpha)


def _require_dataset(key: str, path: str) -> None:
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"{key}: dataset folder {path!r} does not exist (make one with `riffmask prep`)")
    if not (folder / "dataset_dict.json").is_file():
        raise ConfigError(f"{key}: {path!r} is not a dataset written by `riffmask prep` (no dataset_dict.json)")
