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


def fit_deepspeed(plugin, cfg, num_processes: int) -> bool:
    """Make DeepSpeed's config follow the recipe; return whether it offloads the optimizer to the CPU.

    The recipe has no dataloader for accelerate to read a batch size from, and its batch, accumulation
    and clipping settings are the ones that count: the accelerate config's copies are overwritten.
    """
    ds = plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = cfg.train_batch_size
    ds["gradient_accumulation_steps"] = cfg.gradient_accumulation_steps
    ds["train_batch_size"] = cfg.train_batch_size * cfg.gradient_accumulation_steps * num_processes
    ds["gradient_clipping"] = cfg.max_grad_norm
    offload = ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none") not in ("none", None)
    if offload:
        if cfg.optimizer != "adamw":
            raise ConfigError(f"optimizer: {cfg.optimizer} does not combine with DeepSpeed's optimizer offload; "
                              "set optimizer=adamw (DeepSpeed's CPU Adam keeps the states in RAM)")
        # accelerate would swap in its own CPU Adam with only lr and weight decay: make_optimizer builds one
        # with the recipe's betas and epsilon, and this keeps accelerate from replacing it.
        ds["zero_force_ds_cpu_optimizer"] = False
    return offload


def restore_fp32_weights(model: torch.nn.Module, names: list[str]) -> None:
    """Put DeepSpeed's fp32 weights of ``names`` back into ``model`` (call it on every process: it gathers).

    Under mixed precision DeepSpeed trains a half-precision copy of the module and keeps the fp32
    weights in its optimizer; the saved model must be the latter, as it is without DeepSpeed.
    """
    from deepspeed.utils import safe_get_full_fp32_param

    params = dict(model.named_parameters())
    for name in names:
        params[name].data = safe_get_full_fp32_param(params[name]).to(params[name].device)


def make_optimizer(cfg, groups: list[dict], cpu_offload: bool = False):
    """AdamW from torch, bitsandbytes' 8-bit (optionally paged) AdamW, or DeepSpeed's CPU AdamW for offload."""
    kwargs = dict(betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)
    if cpu_offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, adamw_mode=True, **kwargs)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, **kwargs)
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ConfigError(f"optimizer: {cfg.optimizer} needs bitsandbytes (pip install riffmask[train])") from None
    cls = bnb.optim.AdamW8bit if cfg.optimizer == "adamw8bit" else bnb.optim.PagedAdamW8bit
    return cls(groups, **kwargs)
