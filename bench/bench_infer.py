"""Masked generation speed on this machine, with the tiny random pipeline at the paper's 512 px.

* Per-step cost of the masked loop against diffusers' ``StableDiffusionImg2ImgPipeline`` on the same
  modules, image and settings (strength 0.8, guidance 8): the median time between step-end
  callbacks (one UNet call + scheduler step, plus the keep blend in ours), runs interleaved, so that
  prompt encoding, VAE and the load of other processes on the machine weigh as little as possible.
* Seconds per 5.11 s clip of ``riffmask generate`` (paper settings, 50 steps) on the real everyday
  sounds, split into the model (text encoder, UNet, VAE) and everything around it (audio loading,
  spectrogram, mask, Griffin-Lim decode, writing the files).
* How fast and how well the two Griffin-Lim starts reproduce the generated spectrogram (mel spectral convergence,
  lower is better): the input sound's phase (``phase_start: input``) or PGHI from the magnitudes (both 10 iterations).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import real_sounds, write_result
from riffmask.common.config import replace_options
from riffmask.core.audio import load_audio
from riffmask.core.codec import audio_to_image, mel_from_image, mel_spectrogram
from riffmask.core.decode import DecodeConfig
from riffmask.core.params import PAPER_CLIP_SAMPLES, SpectrogramParams
from riffmask.infer.config import GenerateConfig
from riffmask.infer.files import generate_files
from riffmask.infer.generate import decode_images
from riffmask.infer.load import load_pipeline
from riffmask.infer.mask import make_mask
from riffmask.infer.tiny import save_tiny_pipeline

STEPS = 25  # strength 0.8: 20 denoising steps per timed run


def step_intervals(call) -> list[float]:
    """Seconds between consecutive step-end callbacks of one run: one UNet step + scheduler each."""
    marks: list[float] = []

    def mark(pipeline, i, t, tensors):
        if pipeline.device.type == "cuda":
            torch.cuda.synchronize()  # kernels run asynchronously: time their end, not their launch
        marks.append(time.perf_counter())
        return tensors

    call(mark)
    return list(np.diff(marks))


def per_step_seconds(pipe, reference, image, mask) -> dict[str, float]:
    """Median step time of the masked loop and of diffusers' img2img, runs interleaved (noise-robust)."""
    common = {"strength": 0.8, "guidance_scale": 8.0, "output_type": "latent", "num_inference_steps": STEPS}
    intervals: dict[str, list[float]] = {"masked": [], "img2img": []}
    for _ in range(3):
        intervals["masked"] += step_intervals(lambda cb: pipe(
            "jazz", image=image, mask_image=mask, generator=torch.Generator().manual_seed(1040),
            callback_on_step_end=cb, **common))
        intervals["img2img"] += step_intervals(lambda cb: reference(
            "jazz", image=image, generator=torch.Generator().manual_seed(1040), callback_on_step_end=cb, **common))
    masked, plain = float(np.median(intervals["masked"])), float(np.median(intervals["img2img"]))
    blend = blend_seconds(pipe, image, mask)
    return {"masked_s_per_step": masked, "img2img_s_per_step": plain, "ratio": masked / plain,
            "blend_s_per_step": blend, "blend_share_of_img2img_step": blend / plain,
            "steps_timed": len(intervals["masked"])}


def blend_seconds(pipe, image, mask, repeat: int = 200) -> float:
    """What the masked loop adds to a step, timed alone: threshold the mask, noise the input, blend."""
    from riffmask.infer.pipeline import mask_to_latent

    device = pipe.device
    pipe.scheduler.set_timesteps(50)
    t = pipe.scheduler.timesteps[20]
    original = torch.randn(1, 4, image.height // 8, image.width // 8, device=device, dtype=pipe.unet.dtype)
    noise, latents = torch.randn_like(original), torch.randn_like(original)
    latent_mask = mask_to_latent(mask, original.shape[-2:]).to(device)
    started = time.perf_counter()
    for _ in range(repeat):
        keep = latent_mask > 0.5
        torch.where(keep, pipe.scheduler.add_noise(original, noise, t.repeat(1)), latents)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeat


def clip_seconds(model_dir: Path, sounds: list[Path]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = replace_options(GenerateConfig(), model=str(model_dir), out=tmp, duration=PAPER_CLIP_SAMPLES / 44100)
        pipe = load_pipeline(cfg)
        generate_files(pipe, sounds[:1], replace_options(cfg, out=f"{tmp}/warm", steps=5))  # warm-up
        started = time.perf_counter()
        summary = generate_files(pipe, sounds, cfg)
        total = (time.perf_counter() - started) / len(summary.done)
        model = float(np.mean([json.loads((Path(tmp) / f"{n}.json").read_text())["model_seconds"]
                               for n in summary.done]))
        decode = phase_start_quality(Path(tmp), summary.done)
    return {"seconds_per_clip": total, "model_seconds": model, "around_model_seconds": total - model,
            "clips": len(summary.done), **decode}


def phase_start_quality(out_dir: Path, names: list[str]) -> dict[str, float]:
    params = SpectrogramParams()
    scores: dict[str, list[float]] = {"input": [], "pghi": []}
    seconds: dict[str, list[float]] = {"input": [], "pghi": []}
    for name in names:
        output = Image.open(out_dir / f"{name}_output.png")
        output.load()
        target = torch.from_numpy(mel_from_image(output)[0])
        source = load_audio(out_dir / f"{name}_input.wav")
        padded = np.pad(source, (0, max(0, params.samples_for(512) - len(source))))
        for start in ("input", "pghi"):
            began = time.perf_counter()
            (audio,) = decode_images([output], DecodeConfig(iterations=10, phase_start=start), known_audio=padded)
            seconds[start].append(time.perf_counter() - began)
            scores[start].append(float((mel_spectrogram(audio, params) - target).norm() / target.norm()))
    return {
        "mel_convergence": {k: float(np.mean(v)) for k, v in scores.items()},
        "decode_seconds": {k: float(np.median(v)) for k, v in seconds.items()},
    }


def main() -> None:
    from diffusers import StableDiffusionImg2ImgPipeline

    from riffmask.infer.pipeline import MaskedRiffusionPipeline

    sounds = real_sounds()[:2]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_tiny_pipeline(Path(tmp) / "tiny")
        pipe = MaskedRiffusionPipeline.from_pretrained(model_dir)
        reference = StableDiffusionImg2ImgPipeline(**pipe.components, safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
        for p in (pipe, reference):
            p.set_progress_bar_config(disable=True)
        image = audio_to_image(load_audio(sounds[0])[:PAPER_CLIP_SAMPLES])
        steps = per_step_seconds(pipe, reference, image, make_mask(image))
        clips = clip_seconds(model_dir, sounds)
    write_result("infer", {
        "model": "tiny random Riffusion-architecture pipeline (infer.tiny), 512x512, float32, CPU",
        "per_step": steps,
        "clip_5s": clips,
        "sounds": [p.name for p in sounds],
        "notes": "per-step ratio = masked / img2img on the same modules (goal <= 1.05; on a loaded machine "
                 "the blend share is the steadier measure); around_model_seconds = everything but the "
                 "pipeline call per 5.11 s clip (goal <= 1 s); decode_seconds: the codec's Griffin-Lim alone, "
                 "timed apart; 2 shared CPU cores, other processes running",
    })
    print(json.dumps({"per_step": steps, "clip_5s": clips}, indent=2))


if __name__ == "__main__":
    main()
