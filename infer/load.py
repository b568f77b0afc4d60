"""Loading a checkpoint for generation: a Hub id, a diffusers folder or one .safetensors file, plus LoRAs,
scheduler, device and dtype, as a :class:`~riffmask.infer.pipeline.MaskedRiffusionPipeline`.

Pickle weights are refused unless ``allow_pickle``; nothing is ever downloaded with remote code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from riffmask.common.errors import RiffmaskError, hub_errors
from riffmask.infer.config import GenerateConfig

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def pick_device(device: str | None, dtype: str | None) -> tuple[str, Any]:
    """(device, torch dtype): CUDA in fp16 when present, else CPU in fp32, unless told otherwise."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = dtype or ("float16" if device.startswith("cuda") else "float32")
    return device, getattr(torch, name)


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before anything loads."""
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise RiffmaskError(f"device: {device!r} is not a torch device (cpu, cuda, cuda:1, mps ...)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise RiffmaskError(f"device: {device} asked for, but this torch sees no CUDA GPU; use --device cpu")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise RiffmaskError(f"device: {device} asked for, but MPS is not available here; use --device cpu")


def _check_weights(path: Path, allow_pickle: bool, what: str) -> None:
    """Refuse pickle weights unless allowed (pickle can run code when loaded) and unreadable safetensors files."""
    from safetensors import SafetensorError, safe_open

    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.suffix in WEIGHT_SUFFIXES]
    if path.is_file() and path.suffix not in WEIGHT_SUFFIXES:
        raise RiffmaskError(f"{path}: not a weights file (the {what} must be one of {', '.join(WEIGHT_SUFFIXES)})")
    for file in (p for p in files if p.suffix == ".safetensors"):
        try:
            with safe_open(str(file), framework="pt"):  # reads the header only
                pass
        except (SafetensorError, OSError) as exc:
            raise RiffmaskError(f"{file}: not a readable .safetensors file ({_first_line(exc)})") from None
    if allow_pickle or not files or any(p.suffix == ".safetensors" for p in files):
        return
    raise RiffmaskError(
        f"{path}: {what} has only pickle weights ({', '.join(sorted({p.suffix for p in files}))}); pickle can run "
        "code when loaded, so it needs --allow-pickle (only for files you trust)"
    )


def _load_base(cfg: GenerateConfig, torch_dtype: Any):
    """The checkpoint as a StableDiffusionPipeline without safety checker (never downloaded)."""
    from diffusers import StableDiffusionPipeline

    common = {"dtype": torch_dtype, "safety_checker": None, "feature_extractor": None}
    source = Path(cfg.checkpoint.model).expanduser()
    use_safetensors = None if cfg.checkpoint.allow_pickle else True
    try:
        if source.is_file():
            _check_weights(source, cfg.checkpoint.allow_pickle, "checkpoint")
            # Pickle was refused above unless allowed; the file's suffix decides how it is read.
            config = cfg.checkpoint.single_file_config
            return StableDiffusionPipeline.from_single_file(str(source), config=config, **common)
        if source.is_dir():
            _check_weights(source, cfg.checkpoint.allow_pickle, "model folder")
        return StableDiffusionPipeline.from_pretrained(
            str(source) if source.is_dir() else cfg.checkpoint.model,
            revision=cfg.checkpoint.revision,
            use_safetensors=use_safetensors,
            requires_safety_checker=False,
            **common,
        )
    except RiffmaskError:
        raise
    except (OSError, ValueError) as exc:
        raise RiffmaskError(_load_hint(cfg, source, exc)) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_hint(cfg: GenerateConfig, source: Path, exc: Exception) -> str:
    first = _first_line(exc)
    if source.is_file():
        return (
            f"{source}: cannot load this single-file checkpoint ({first}). Its pipeline configs come from the "
            "Hugging Face Hub, which may be unreachable: pass --single-file-config with a local diffusers "
            "folder of the same architecture (e.g. a downloaded riffusion/riffusion-model-v1)"
        )
    if source.exists():
        return f"{source}: not a loadable diffusers pipeline folder ({first})"
    return (
        f"cannot load model {cfg.checkpoint.model!r} ({first}). A Hub id needs the network or the Hugging Face cache; "
        "otherwise pass a local diffusers folder or a .safetensors file"
    )


def load_lora(pipe, ref: str, adapter_name: str, allow_pickle: bool) -> None:
    """Add the LoRA ``ref`` (file, folder or Hub id) to ``pipe`` as adapter ``adapter_name``.

    Pickle weights are refused unless ``allow_pickle``; a LoRA that cannot be loaded raises
    :class:`RiffmaskError` naming it. Used by :func:`load_pipeline` and the app's model cache.
    """
    path = Path(ref).expanduser()
    kwargs: dict[str, Any] = {"adapter_name": adapter_name}
    if not allow_pickle:
        kwargs["use_safetensors"] = True
    if path.exists():
        _check_weights(path, allow_pickle, "LoRA")
    elif not _could_be_hub_id(ref):
        raise RiffmaskError(f"{ref}: no such LoRA file or folder")
    if path.is_file():
        ref, kwargs["weight_name"] = str(path.parent), path.name
    try:
        pipe.load_lora_weights(str(ref), **kwargs)
    except (OSError, ValueError, KeyError, *hub_errors()) as exc:
        hint = "" if path.exists() else "; a Hub id needs the network or the Hugging Face cache"
        raise RiffmaskError(f"{ref}: cannot load LoRA ({_first_line(exc)}){hint}") from None


def _could_be_hub_id(ref: str) -> bool:
    """``owner/name``: not a weights file name, not a path that starts at a folder."""
    return ref.count("/") == 1 and not ref.startswith(("/", ".", "~")) and not ref.endswith(WEIGHT_SUFFIXES)


def activate_loras(pipe, names: list[str], scales: list[float]) -> None:
    """Make the adapters ``names`` the active ones, weighted by ``scales`` (one for all, or one each;
    none: 1.0)."""
    scales = scales or [1.0]
    pipe.set_adapters(names, adapter_weights=scales * len(names) if len(scales) == 1 else scales)


def _load_loras(pipe, cfg: GenerateConfig) -> None:
    checkpoint = cfg.checkpoint
    names = [f"lora_{k}" for k in range(len(checkpoint.lora))]
    for ref, name in zip(checkpoint.lora, names, strict=True):
        load_lora(pipe, ref, name, checkpoint.allow_pickle)
    if names:
        activate_loras(pipe, names, checkpoint.lora_scale)


def set_scheduler(pipe, name: str | None) -> None:
    """Swap in a diffusers scheduler by class name, configured from the checkpoint's own."""
    if not name:
        return
    import diffusers
    from diffusers import SchedulerMixin

    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        known = sorted(n for n in dir(diffusers) if n.endswith("Scheduler") and "Flow" not in n)
        raise RiffmaskError(f"unknown scheduler {name!r}; diffusers offers: {', '.join(known)}")
    pipe.scheduler = cls.from_config(pipe.scheduler.config)


def load_pipeline(cfg: GenerateConfig):
    """A ready :class:`MaskedRiffusionPipeline` for ``cfg``: model, LoRAs, scheduler, device and dtype."""
    from riffmask.infer.pipeline import MaskedRiffusionPipeline

    device, torch_dtype = pick_device(cfg.checkpoint.device, cfg.checkpoint.dtype)
    check_device(device)
    base = _load_base(cfg, torch_dtype)
    pipe = MaskedRiffusionPipeline(**{name: base.components[name] for name in MaskedRiffusionPipeline.component_names})
    pipe.register_to_config(_name_or_path=base.name_or_path)
    _load_loras(pipe, cfg)
    set_scheduler(pipe, cfg.checkpoint.scheduler)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    speed_up(pipe, cfg.checkpoint.compile)
    return pipe


def speed_up(pipe, compile_modules: bool) -> None:
    """GPU throughput settings: channels-last convolutions on CUDA; ``compile``: torch.compile the UNet
    and the VAE's encode and decode (diffusers' documented way). On CPU, results stay bit for bit the same.

    Compiling costs its time on the first call (minutes for the full-size UNet) and again for each new
    image width or batch size; it pays off over long runs. Untested on a GPU so far (README).
    """
    import torch

    if pipe.device.type == "cuda":
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if compile_modules:
        pipe.unet = torch.compile(pipe.unet)
        pipe.vae.encode = torch.compile(pipe.vae.encode)
        pipe.vae.decode = torch.compile(pipe.vae.decode)
