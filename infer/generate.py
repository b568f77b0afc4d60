"""Everyday sounds in, music out: load a checkpoint, make spectrogram + mask, run the masked pipeline.

Any length: the part of a sound to process (``start``, ``duration``, capped at ``max_seconds``) becomes
one spectrogram image, padded with silence to at least one window (512 px = 5.11 s) and to a width
the VAE accepts. Images wider than a window are denoised by :class:`MaskedRiffusionPipeline` as
overlapping windows blended in latent space at every step (MultiDiffusion), so the whole sound is
one latent and there are no seams or rhythm breaks to hide; the VAE encodes and decodes wide images
in blended tiles. A sound of exactly 225 500 samples gives the paper's single 512-px image, draw
for draw. The output is trimmed back to the input's length and peak-normalised.

Per input NAME (``NAME_v{k}`` when there are several prompts or variations) the output folder gets
``NAME_input.png``, ``NAME_mask.png``, ``NAME_output.png``, ``NAME_input.wav``, ``NAME.wav`` and the
sidecar ``NAME.json`` (written last: an item with a sidecar is complete), plus ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from riffmask.infer.config import GenerateConfig
from riffmask.infer.mask import make_mask

from riffmask.common.config import config_dict
from riffmask.common.errors import RiffmaskError
from riffmask.common.io import safe_stem, write_json_atomic
from riffmask.core.audio import AUDIO_EXTENSIONS, load_audio, peak_normalize, write_wav
from riffmask.core.codec import audio_to_image, mel_from_image, mel_to_audio, save_image, with_exif
from riffmask.core.params import SpectrogramParams

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


# --------------------------------------------------------------------------- loading
def pick_device(device: str | None, dtype: str | None) -> tuple[str, Any]:
    """(device, torch dtype): CUDA in fp16 when present, else CPU in fp32, unless told otherwise."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = dtype or ("float16" if device.startswith("cuda") else "float32")
    return device, getattr(torch, name)


def _check_weights(path: Path, allow_pickle: bool, what: str) -> None:
    """Refuse pickle weights unless allowed; pickle can run code when loaded."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.suffix in WEIGHT_SUFFIXES]
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
    source = Path(cfg.model).expanduser()
    use_safetensors = None if cfg.allow_pickle else True
    try:
        if source.is_file():
            _check_weights(source, cfg.allow_pickle, "checkpoint")
            if source.suffix not in WEIGHT_SUFFIXES:
                raise RiffmaskError(f"{source}: not a checkpoint file ({', '.join(WEIGHT_SUFFIXES)})")
            # Pickle was refused above unless allowed; the file's suffix decides how it is read.
            return StableDiffusionPipeline.from_single_file(str(source), config=cfg.single_file_config, **common)
        if source.is_dir():
            _check_weights(source, cfg.allow_pickle, "model folder")
        return StableDiffusionPipeline.from_pretrained(
            str(source) if source.is_dir() else cfg.model,
            revision=cfg.revision,
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
        f"cannot load model {cfg.model!r} ({first}). A Hub id needs the network or the Hugging Face cache; "
        "otherwise pass a local diffusers folder or a .safetensors file"
    )


def _load_loras(pipe, cfg: GenerateConfig) -> None:
    names = []
    for k, ref in enumerate(cfg.lora):
        path = Path(ref).expanduser()
        kwargs: dict[str, Any] = {"adapter_name": f"lora_{k}"}
        if not cfg.allow_pickle:
            kwargs["use_safetensors"] = True
        if path.exists():
            _check_weights(path, cfg.allow_pickle, "LoRA")
        if path.is_file():
            ref, kwargs["weight_name"] = str(path.parent), path.name
        try:
            pipe.load_lora_weights(str(ref), **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            raise RiffmaskError(f"{ref}: cannot load LoRA ({_first_line(exc)})") from None
        names.append(kwargs["adapter_name"])
    if names:
        scales = cfg.lora_scale or [1.0]
        pipe.set_adapters(names, adapter_weights=scales * len(names) if len(scales) == 1 else scales)


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

    device, torch_dtype = pick_device(cfg.device, cfg.dtype)
    base = _load_base(cfg, torch_dtype)
    pipe = MaskedRiffusionPipeline(**{name: base.components[name] for name in MaskedRiffusionPipeline.component_names})
    pipe.register_to_config(_name_or_path=base.name_or_path)
    _load_loras(pipe, cfg)
    set_scheduler(pipe, cfg.scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


# --------------------------------------------------------------------------- one sound
@dataclass
class Generation:
    """One result: the images, the processed input part and the music, in memory."""

    prompt: str
    seed: int
    input_image: Image.Image
    mask_image: Image.Image
    output_image: Image.Image
    input_audio: np.ndarray
    audio: np.ndarray
    model_seconds: float = 0.0  # this item's share of the pipeline call (text encoder, UNet, VAE)


def padded_width(num_samples: int, cfg: GenerateConfig) -> int:
    """Image width for a sound: its frames, at least one window, rounded up to the VAE's multiple of 8."""
    frames = cfg.spectrogram_params.frames_for(num_samples)
    return max(cfg.window, 8 * math.ceil(frames / 8))


def _pad_to_width(audio: np.ndarray, width: int, params: SpectrogramParams) -> np.ndarray:
    """Silence appended so that the image is exactly ``width`` frames (never cut)."""
    target = max(len(audio), params.samples_for(width))
    return np.pad(audio, (0, target - len(audio)))


def _fit(audio: np.ndarray, length: int) -> np.ndarray:
    return audio[:length] if len(audio) >= length else np.pad(audio, (0, length - len(audio)))


def generate_sound(pipe, audio: np.ndarray, cfg: GenerateConfig) -> list[Generation]:
    """Music from mono 44.1 kHz ``audio`` (already cut to the part to process), one per ``cfg.items()``.

    All items go through the UNet as one batch. Used by ``riffmask generate``, the sweep and
    training validation.
    """
    import torch

    if audio.size == 0:
        raise RiffmaskError("no audio to process")
    params = cfg.spectrogram_params
    width = padded_width(len(audio), cfg)
    padded = _pad_to_width(audio, width, params)
    image = audio_to_image(padded, params, cfg.spectrogram_mode)
    mask = make_mask(image, cfg.mask_params)
    items = cfg.items()
    wide = width > cfg.window
    # Wide images: the VAE encodes/decodes in blended tiles (its attention would not fit otherwise).
    (pipe.vae.enable_tiling if wide else pipe.vae.disable_tiling)()
    started = time.perf_counter()
    result = pipe(
        prompt=[p for p, _ in items],
        image=image,
        mask_image=mask,
        strength=cfg.strength,
        num_inference_steps=cfg.steps,
        guidance_scale=cfg.guidance,
        negative_prompt=[cfg.negative_prompt] * len(items) if cfg.negative_prompt else None,
        generator=[torch.Generator().manual_seed(s) for _, s in items],
        window_width=cfg.window if wide else None,
        window_overlap=cfg.overlap,
        windows_per_batch=cfg.windows_per_batch,
        output_type="pil",
    ).images
    model_seconds = (time.perf_counter() - started) / len(items)
    outputs = [with_exif(im.convert("RGB"), image) for im in result]
    music = decode_images(outputs, padded if cfg.phase_init == "input" else None, cfg.griffin_lim_iters)
    return [
        Generation(p, s, image, mask, out, audio, peak_normalize(_fit(m, len(audio))), model_seconds)
        for (p, s), out, m in zip(items, outputs, music, strict=True)
    ]


def decode_images(images: list[Image.Image], init_audio: np.ndarray | None, n_iter: int | None) -> list[np.ndarray]:
    """Audio of same-format spectrogram images, decoded together as one batch."""
    mels, params = zip(*(mel_from_image(im) for im in images), strict=True)
    kwargs: dict[str, Any] = {} if n_iter is None else {"n_iter": n_iter}
    if init_audio is not None:
        kwargs["init_audio"] = np.tile(init_audio, (len(images), 1))
    return list(mel_to_audio(np.stack(mels), params[0], **kwargs))


# --------------------------------------------------------------------------- batch of files
@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files, folders (their audio files, recursively) and globs, in order, without repeats."""
    found: list[Path] = []
    for pattern in filter(None, patterns):
        path = Path(pattern).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        elif glob.has_magic(pattern):
            matches = glob.glob(os.path.expanduser(pattern), recursive=True)
            found += sorted(Path(p) for p in matches if Path(p).is_file())
        else:
            found.append(path)  # a missing file is reported as a failure of that input
    return list(dict.fromkeys(found))


def output_names(inputs: list[Path]) -> dict[Path, str]:
    """A safe, unique output NAME per input (``x``, ``x_2``, ... when stems repeat)."""
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for path in inputs:
        stem = base = safe_stem(path.stem)
        k = 2
        while stem in taken:
            stem, k = f"{base}_{k}", k + 1
        taken.add(stem)
        names[path] = stem
    return names


def item_files(name: str) -> dict[str, str]:
    return {
        "input_image": f"{name}_input.png",
        "mask_image": f"{name}_mask.png",
        "output_image": f"{name}_output.png",
        "input_audio": f"{name}_input.wav",
        "output_audio": f"{name}.wav",
        "sidecar": f"{name}.json",
    }


def item_names(name: str, count: int) -> list[str]:
    return [name] if count == 1 else [f"{name}_v{k}" for k in range(count)]


def model_revision(pipe, cfg: GenerateConfig) -> str | None:
    """The commit the weights came from when known (a Hub cache path holds it), else the asked one."""
    path = Path(pipe.name_or_path or "")
    if path.parent.name == "snapshots":
        return path.name
    return cfg.revision


def _sidecar(gen: Generation, cfg: GenerateConfig, source: Path, files: dict, seconds: float, pipe) -> dict:
    import diffusers
    import torch

    item_cfg = dataclasses.replace(cfg, prompt=[gen.prompt], seed=gen.seed, num_variations=1)
    return {
        "input": str(source),
        "prompt": gen.prompt,
        "seed": gen.seed,
        "model": cfg.model,
        "revision": model_revision(pipe, cfg),
        "scheduler": {"class": type(pipe.scheduler).__name__, **dict(pipe.scheduler.config)},
        "device": str(pipe.device),
        "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "seconds": round(seconds, 3),
        "model_seconds": round(gen.model_seconds, 3),
        "input_seconds": round(len(gen.input_audio) / cfg.spectrogram_params.sample_rate, 3),
        "image_size": list(gen.output_image.size),
        "versions": {"diffusers": diffusers.__version__, "torch": torch.__version__},
        "files": {k: v for k, v in files.items() if k != "sidecar"},
        # Everything riffmask generate needs to make this item again (`riffmask generate --like NAME.json`).
        "config": config_dict(item_cfg),
    }


def write_item(gen: Generation, out_dir: Path, files: dict[str, str], sidecar: dict) -> None:
    """Write one result's files (names from :func:`item_files`) and its sidecar, each atomically."""
    save_image(gen.input_image, out_dir / files["input_image"])
    save_image(gen.mask_image, out_dir / files["mask_image"])
    save_image(gen.output_image, out_dir / files["output_image"])
    write_wav(out_dir / files["input_audio"], gen.input_audio)
    write_wav(out_dir / files["output_audio"], gen.audio)
    write_json_atomic(out_dir / files["sidecar"], sidecar)  # last: its presence marks a complete item


def generate_files(pipe, inputs: list[Path], cfg: GenerateConfig) -> RunSummary:
    """Run every input; one failing input is recorded and the others go on. Writes summary.json."""
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary()
    names = output_names(inputs)
    for source in inputs:
        all_names = item_names(names[source], len(cfg.items()))
        existing = [n for n in all_names if any((out_dir / f).exists() for f in item_files(n).values())]
        if existing and not cfg.overwrite:
            summary.skipped += [{"item": n, "reason": "outputs exist (use --overwrite)"} for n in existing]
            if len(existing) == len(all_names):
                continue
        started = time.perf_counter()
        try:
            audio = read_part(source, cfg)
            generations = generate_sound(pipe, audio, cfg)
        except (RiffmaskError, OSError, ValueError, RuntimeError) as exc:
            log.error("%s", exc)
            summary.failed.append({"input": str(source), "error": str(exc)})
            continue
        seconds = (time.perf_counter() - started) / len(generations)
        for name, gen in zip(all_names, generations, strict=True):
            if name in existing and not cfg.overwrite:
                continue
            files = item_files(name)
            write_item(gen, out_dir, files, _sidecar(gen, cfg, source, files, seconds, pipe))
            summary.done.append(name)
        log.info("%s -> %s", source, ", ".join(all_names))
    write_json_atomic(out_dir / "summary.json", dataclasses.asdict(summary) | {"config": config_dict(cfg)})
    return summary


def read_part(source: Path, cfg: GenerateConfig) -> np.ndarray:
    """The part of ``source`` that ``cfg`` selects (``start``, ``duration``, capped at ``max_seconds``)."""
    duration = cfg.duration
    if cfg.max_seconds is not None:
        duration = min(duration or math.inf, cfg.max_seconds)
    return load_audio(source, cfg.spectrogram_params.sample_rate, start=cfg.start, duration=duration)
