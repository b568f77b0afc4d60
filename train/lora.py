"""LoRA adapters (PEFT) on the UNet and text encoder, and their two export formats.

``pytorch_lora_weights.safetensors`` is diffusers' format (``pipe.load_lora_weights(dir)``), with the
adapter config (rank, alpha) stored as metadata. The Kohya file (``lora_unet_…``/``lora_te_…`` keys
with ``.alpha`` tensors) is what AUTOMATIC1111, ComfyUI and other WebUIs read.
"""

from __future__ import annotations

from pathlib import Path

import torch

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
KOHYA_WEIGHTS = "lora_kohya.safetensors"


def lora_config(rank: int, alpha: float, dropout: float, target_modules: list[str]):
    from peft import LoraConfig

    return LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, init_lora_weights="gaussian", target_modules=target_modules
    )


def add_adapters(unet, text_encoder, cfg) -> None:
    """Freeze the base weights and add trainable LoRA layers (UNet; text encoder if it trains)."""
    from peft import inject_adapter_in_model

    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.add_adapter(lora_config(cfg.rank, cfg.alpha, cfg.lora_dropout, cfg.lora_target_modules))
    if cfg.train_text_encoder:
        # PEFT directly: transformers 5's own ``add_adapter`` insists on peft >= 0.22.
        config = lora_config(cfg.rank, cfg.alpha, cfg.lora_dropout, cfg.text_encoder_lora_target_modules)
        inject_adapter_in_model(config, text_encoder)


def lora_state(model) -> dict[str, torch.Tensor]:
    """The adapter weights of ``model`` in PEFT naming (``….lora_A.weight``)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().float().contiguous().cpu() for k, v in get_peft_model_state_dict(model).items()}


def save_lora(out_dir: Path, unet, text_encoder, train_text_encoder: bool, alpha: float, kohya: bool) -> list[Path]:
    """Write the diffusers LoRA file (and the Kohya one) for the trained adapters; return the paths."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    unet_state = lora_state(unet)
    te_state = lora_state(text_encoder) if train_text_encoder else None
    # The UNet's adapters stay in PEFT naming: diffusers renames only attention layers to its own, and its
    # loader, seeing PEFT naming on the first key of such a mix, drops every renamed one.
    StableDiffusionPipeline.save_lora_weights(
        out_dir,
        unet_lora_layers=unet_state,
        text_encoder_lora_layers=convert_state_dict_to_diffusers(te_state) if te_state else None,
        unet_lora_adapter_metadata=_inference_config(unet),
        text_encoder_lora_adapter_metadata=_inference_config(text_encoder) if te_state else None,
        safe_serialization=True,
    )
    written = [out_dir / LORA_WEIGHTS]
    if kohya:
        written.append(save_kohya(out_dir / KOHYA_WEIGHTS, unet_state, te_state, alpha))
    return written


def _inference_config(model) -> dict:
    """The adapter config to ship: dropout off, since loaders inject LoRA layers in training mode and
    a dropout rate in the file would make generation random."""
    return {**model.peft_config["default"].to_dict(), "lora_dropout": 0.0}


def save_kohya(path: Path, unet_state: dict, te_state: dict | None, alpha: float) -> Path:
    """Kohya/A1111 format. diffusers' converter writes alpha = rank; we store the alpha that trained."""
    from diffusers.utils import convert_state_dict_to_kohya
    from safetensors.torch import save_file

    from riffmask.train.single_file import clip_name

    peft_state = {f"unet.{k}": v for k, v in unet_state.items()}
    peft_state.update({f"text_encoder.{clip_name(k)}": v for k, v in (te_state or {}).items()})
    # diffusers names the text encoder lora_te1_ (the SDXL convention); SD 1.x files use lora_te_.
    kohya = {k.replace("lora_te1_", "lora_te_", 1): v for k, v in convert_state_dict_to_kohya(peft_state).items()}
    for key in [k for k in kohya if k.endswith(".alpha")]:
        kohya[key] = torch.tensor(float(alpha))
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(path), metadata={"ss_network_alpha": str(alpha)})
    return path
