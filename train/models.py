"""Loading the base pipeline's parts for training, precisions, and the optimizer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from riffmask.common.config import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Models:
    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    noise_scheduler: Any  # DDPM, for adding noise in training
    inference_scheduler: Any  # the base model's own scheduler, for validation
    prediction_type: str


def load_models(cfg) -> Models:
    """Tokenizer, text encoder, VAE, UNet and the DDPM training scheduler of the base pipeline."""
    import diffusers
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path, rev = cfg.pretrained_model_name_or_path, cfg.revision
    try:
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", revision=rev)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", revision=rev)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", revision=rev)
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", revision=rev)
        scheduler_config = DDPMScheduler.load_config(path, subfolder="scheduler", revision=rev)
    except OSError as exc:
        raise ConfigError(f"pretrained_model_name_or_path: cannot load {path!r}: {exc}") from None
    saved = scheduler_config.get("prediction_type", "epsilon")
    prediction_type = cfg.prediction_type or saved
    if prediction_type != saved:
        log.warning("training with prediction_type=%s; the base model was saved with %s", prediction_type, saved)
    noise_scheduler = DDPMScheduler.from_config(scheduler_config, prediction_type=prediction_type)
    inference_cls = getattr(diffusers, scheduler_config["_class_name"])
    inference_scheduler = inference_cls.from_config(scheduler_config, prediction_type=prediction_type)
    return Models(tokenizer, text_encoder, vae, unet, noise_scheduler, inference_scheduler, prediction_type)


def weight_dtype(mixed_precision: str) -> torch.dtype:
    """The dtype of frozen weights: half precision under mixed precision, otherwise fp32."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)


def trainable_names(model: torch.nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


def place(model: torch.nn.Module, device, dtype: torch.dtype, trained: list[str]) -> None:
    """Move ``model`` to ``device``; frozen weights in ``dtype``, trained ones kept in fp32.

    Trained weights in half precision are what makes GradScaler fail with "Attempting to unscale FP16
    gradients"; keeping them fp32 under autocast is the standard mixed-precision recipe.
    """
    model.to(device)
    if dtype != torch.float32:
        model.to(dtype)
        params = dict(model.named_parameters())
        for name in trained:
            params[name].data = params[name].data.float()


def make_optimizer(cfg, groups: list[dict]):
    """AdamW from torch, or bitsandbytes' 8-bit (optionally paged) AdamW."""
    kwargs = dict(betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, **kwargs)
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ConfigError(f"optimizer: {cfg.optimizer} needs bitsandbytes (pip install riffmask[train])") from None
    cls = bnb.optim.AdamW8bit if cfg.optimizer == "adamw8bit" else bnb.optim.PagedAdamW8bit
    return cls(groups, **kwargs)
