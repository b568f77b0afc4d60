"""A diffusers SD 1.x pipeline as one original-layout (CompVis/LDM) ``.safetensors`` checkpoint.

AUTOMATIC1111, ComfyUI and diffusers' ``from_single_file`` read SD 1.x models as one file with
``model.diffusion_model.`` (UNet), ``first_stage_model.`` (VAE) and ``cond_stage_model.transformer.``
(CLIP text encoder) keys. diffusers ships only the reading direction; this module writes it, so a
fine-tune made by ``riffmask train`` (mode: full) can be used there too. LoRA fine-tunes already
have their WebUI file (``lora_kohya.safetensors``).

The mapping follows the block layout of the UNet's config (``layers_per_block``, which blocks have
attention), so it holds for Riffusion v1 and for the tiny test model alike. The scheduler is not
part of the format: a fine-tune with ``prediction_type: v_prediction`` needs the matching config
in the tool that loads it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from riffmask.common.errors import RiffmaskError
from riffmask.common.io import atomic_path, output_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model.transformer."

_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_FIXED = {"conv_norm_out": "norm_out"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_first(rest: str, table: dict[str, str]) -> str:
    """``rest`` with its leading module name (one or two dotted parts) replaced through ``table``."""
    for old, new in table.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old) :]
    return rest


def unet_key(key: str, layers_per_block: int, up_attention: set[int]) -> str:
    """The LDM name of a diffusers UNet2DConditionModel (SD 1.x) parameter."""
    per_block = layers_per_block + 1
    fixed = _rename_first(key, _UNET_FIXED)
    if fixed != key:
        return fixed
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        side, block, kind, layer, rest = m[1], int(m[2]), m[3], int(m[4]), m[5]
        # LDM numbers input blocks after conv_in (input_blocks.0); output blocks from 0.
        name, index = ("input_blocks", 1) if side == "down" else ("output_blocks", 0)
        index += block * per_block + layer
        if kind == "resnets":
            return f"{name}.{index}.0.{_rename_first(rest, _UNET_RESNET)}"
        return f"{name}.{index}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{1 + int(m[1]) * per_block + layers_per_block}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_rename_first(m[2], _UNET_RESNET)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        block = int(m[1])
        # The upsampler follows the block's last resnet, and its attention when the block has one.
        slot = 2 if block in up_attention else 1
        return f"output_blocks.{block * per_block + layers_per_block}.{slot}.conv.{m[2]}"
    raise ValueError(f"UNet parameter {key!r} has no SD 1.x checkpoint name (not an SD 1.x UNet?)")


def vae_key(key: str, num_blocks: int) -> str:
    """The LDM name of a diffusers AutoencoderKL parameter."""
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        return f"{m[1]}.mid.attn_1.{_rename_first(m[2], _VAE_ATTENTION)}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_vae_resnet(m[3])}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{_vae_resnet(m[3])}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    # The LDM decoder counts its up blocks from the lowest resolution: diffusers' order reversed.
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"decoder.up.{num_blocks - 1 - int(m[1])}.block.{m[2]}.{_vae_resnet(m[3])}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        return f"decoder.up.{num_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out|conv_norm_out)\.(.+)", key):
        return f"{m[1]}.{_VAE_FIXED.get(m[2], m[2])}.{m[3]}"
    if re.fullmatch(r"(post_)?quant_conv\.(weight|bias)", key):
        return key
    raise ValueError(f"VAE parameter {key!r} has no SD 1.x checkpoint name (not an SD 1.x VAE?)")


def _vae_resnet(rest: str) -> str:
    return _rename_first(rest, {"conv_shortcut": "nin_shortcut"})


def original_state_dict(unet, vae, text_encoder) -> dict[str, torch.Tensor]:
    """The three models' weights under their original (LDM) names, as one flat state dict."""
    return {
        **unet_to_original(unet.state_dict(), unet.config),
        **vae_to_original(vae.state_dict(), vae.config),
        **{TEXT_ENCODER_PREFIX + clip_name(k): v for k, v in text_encoder.state_dict().items()},
    }


def unet_to_original(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """A UNet2DConditionModel state dict (SD 1.x) under its LDM names, with the ``model.diffusion_model.`` prefix."""
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise ValueError(f"layers_per_block={layers!r}: SD 1.x UNets have one number for all blocks")
    up_attention = {i for i, t in enumerate(config["up_block_types"]) if "CrossAttn" in t}
    return {UNET_PREFIX + unet_key(k, layers, up_attention): v for k, v in state.items()}


def vae_to_original(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """An AutoencoderKL state dict under its LDM names, with the ``first_stage_model.`` prefix."""
    num_blocks = len(config["block_out_channels"])
    out = {}
    for key, value in state.items():
        name = vae_key(key, num_blocks)
        if ".mid.attn_1." in name and name.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        out[VAE_PREFIX + name] = value
    return out


def clip_name(key: str) -> str:
    """The original CLIP name of a text-encoder parameter (``text_model.…``).

    transformers 5 flattened ``CLIPTextModel`` (no ``text_model`` wrapper); WebUIs and checkpoints
    keep the wrapper's prefix.
    """
    return key if key.startswith("text_model.") else "text_model." + key


def _refuse_model_files(model: str | os.PathLike, out: Path) -> None:
    """Refuse an ``out`` inside the model folder ``model`` or onto a file it links to:
    the export would replace or sit among the weights it reads (a model's unet file written over in the
    checkpoint's layout no longer loads)."""
    folder = Path(model)
    if not folder.is_dir():
        return  # a Hub id: its files are in the Hub cache, which riffmask does not write into
    # Where the file lands: the atomic write replaces a link named OUT, not what it points to.
    placed, folder = out.parent.resolve() / out.name, folder.resolve()
    if folder in placed.parents:
        raise RiffmaskError(f"OUT: {out} is inside the model folder {model}: write the checkpoint elsewhere")
    # A model folder may hold links to its weights (a Hub cache snapshot links to blobs).
    if any(placed == f.resolve() for f in folder.rglob("*") if f.is_file()):
        raise RiffmaskError(f"OUT: {out} is a file of the model {model}: write the checkpoint elsewhere")


def export_single_file(
    model: str | os.PathLike, out: str | os.PathLike, dtype: str = "float16", revision: str | None = None
) -> Path:
    """Write the SD 1.x pipeline ``model`` (diffusers folder or Hub id) as one ``.safetensors`` file.

    ``dtype``: "float16" (default; the 2 GB file WebUIs share for inference), "bfloat16", or "float32"
    (exact weights, e.g. to train on). The file appears only when complete. ``out`` is checked before
    the model loads; one inside ``model`` (or onto a file of it) is refused.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    out = Path(out)
    _refuse_model_files(model, out)
    out = output_file(out, "OUT", ".safetensors", keep={"MODEL": model})  # before the minutes of loading
    common = {"revision": revision, "use_safetensors": True}
    try:
        unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", **common)
        vae = AutoencoderKL.from_pretrained(model, subfolder="vae", **common)
        text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", revision=revision)
    except (OSError, ValueError) as exc:
        raise RiffmaskError(f"{model}: not a diffusers SD 1.x pipeline with safetensors weights ({exc})") from None
    try:
        state = original_state_dict(unet, vae, text_encoder)
    except ValueError as exc:
        raise RiffmaskError(f"{model}: {exc}") from None
    cast = getattr(torch, dtype)
    tensors = {k: (v.to(cast) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "source": str(model)})
    return out
