"""Training step cost: diffusers' DreamBooth step vs riffmask's, and a memory plan at full size.

1. Tiny 512-px pipeline (UNet channels 32/64, VAE 32/32/64/64, tiny CLIP), batch 1, for LoRA
   (rank 4, AdamW) and full fine-tune (8-bit AdamW):
   * ``reference``: what ``examples/dreambooth/train_dreambooth(_lora).py`` does every step: VAE-encode
     the image, sample the posterior, run the text encoder on the prompt, then UNet forward/backward.
   * ``ours``: riffmask's step: latent drawn from the cached posterior, cached prompt embedding,
     the same UNet forward/backward and optimizer (``train.data.make_batch`` + ``diffusion_losses``).
   * ``ours_bf16``: the same under bf16 autocast (frozen weights bf16, trained weights fp32).
   Time per step: best and median of alternating steps in this process. Peak memory: one child process
   per variant (a process's peak RSS cannot be split between variants that share it).
2. Memory plan at full size (SD 1.x UNet, 860 M parameters; CLIP ViT-L text encoder; SD VAE), random
   weights, one training step per recipe on this CPU (bf16 autocast stands in for fp16), when the
   estimate fits the free RAM; the rest is the analytic estimate only.

    python -m bench.bench_train            # writes bench/results/train.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import write_result

RES = 512
TIMED_STEPS = 6
IMAGES_FILE = Path(tempfile.gettempdir()) / "riffmask_bench_train_images.pt"
GIB = 1024**3


# --------------------------------------------------------------------------- models
def tiny_512_models(seed: int = 0) -> dict:
    """The issue's tiny 512-px pipeline: the tiny UNet and text encoder, a 32/32/64/64 VAE."""
    from diffusers import AutoencoderKL, DDPMScheduler

    from riffmask.infer.tiny import RIFFUSION_SCHEDULER_CONFIG, build_tiny_components

    parts = build_tiny_components(seed)
    torch.manual_seed(seed + 10)
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4, norm_num_groups=32,
        sample_size=RES,
    )
    return {**parts, "vae": vae.eval(), "noise_scheduler": DDPMScheduler.from_config(RIFFUSION_SCHEDULER_CONFIG)}


def full_size_models(with_vae: bool = True, device: str = "cpu") -> dict:
    """SD 1.x architecture with random weights: UNet 860 M, CLIP ViT-L/14 text encoder 123 M, VAE 84 M.

    Built directly on ``device``: initialising 1 G parameters on a GPU takes a moment, on its host CPU minutes.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from riffmask.infer.tiny import RIFFUSION_SCHEDULER_CONFIG, build_tiny_tokenizer

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(sample_size=RES // 8, cross_attention_dim=768)  # diffusers' defaults: SD 1.x
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
            max_position_embeddings=77, projection_dim=768,
        ))
        vae = None
        if with_vae:
            vae = AutoencoderKL(
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=RES,
            ).eval()
    return {"unet": unet.eval(), "text_encoder": text_encoder.eval(), "vae": vae,
            "tokenizer": build_tiny_tokenizer(),
            "noise_scheduler": DDPMScheduler.from_config(RIFFUSION_SCHEDULER_CONFIG)}


def spectrograms(count: int) -> list[torch.Tensor]:
    """512x512 spectrograms of the built-in synthetic genres, as [-1, 1] tensors."""
    from riffmask.core.codec import audio_to_image
    from riffmask.core.params import SpectrogramParams
    from riffmask.data_prep.synth import GENRES, genre_clip
    from riffmask.train.data import image_tensor

    params = SpectrogramParams()
    samples = params.samples_for(RES)
    names = sorted(GENRES)
    return [image_tensor(audio_to_image(genre_clip(names[i % len(names)], i, samples / 44100 + 0.1)[:samples],
                                        params), RES, f"clip{i}") for i in range(count)]


# --------------------------------------------------------------------------- one recipe
class Recipe:
    """Trainable setup of one mode, and the two ways of running its step."""

    def __init__(self, models: dict, mode: str, optimizer: str, mixed_precision: str, images: list[torch.Tensor],
                 rank: int = 4, gradient_checkpointing: bool = False, train_text_encoder: bool = False,
                 batch_size: int = 1, device: str = "cpu"):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState, GradientState

        from riffmask.train import data, lora
        from riffmask.train.models import make_optimizer, place, trainable_names, weight_dtype

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        self.accelerator = Accelerator(mixed_precision=mixed_precision, cpu=device == "cpu")
        self.m, self.images, self.batch_size, self.device = models, images, batch_size, device
        unet, te, vae = models["unet"], models["text_encoder"], models["vae"]
        if mode == "lora":
            cfg = argparse.Namespace(rank=rank, alpha=float(rank), lora_dropout=0.0, train_text_encoder=False,
                                     lora_target_modules=["to_k", "to_q", "to_v", "to_out.0"])
            lora.add_adapters(unet, te, cfg)
        else:
            unet.requires_grad_(True)
            te.requires_grad_(train_text_encoder)
        if vae is not None:
            vae.requires_grad_(False)
        dtype = weight_dtype(mixed_precision)
        self.trained = [unet] + ([te] if train_text_encoder else [])
        for model in (unet, te):
            place(model, device, dtype, trainable_names(model))
            model.train(model in self.trained)
        if gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        captions = ["a sks ambient song"] * len(images)
        if vae is not None:
            posterior = data.encode_posteriors(vae, images)
            vae.to(device, dtype)  # as the trainer keeps it, for validation
        else:  # memory plan without a VAE in memory: random posteriors stand in for the cached ones
            posterior = torch.randn(len(images), 8, RES // 8, RES // 8)
        ids = data.tokenize(models["tokenizer"], captions[:1])
        self.cache = data.ClipCache(posterior, torch.zeros(len(images), dtype=torch.long), captions[:1], ids)
        if not train_text_encoder:
            self.cache.embeddings = data.encode_captions(te, ids)
        params = [p for model in self.trained for p in model.parameters() if p.requires_grad]
        cfg = argparse.Namespace(optimizer=optimizer, adam_beta1=0.9, adam_beta2=0.999, adam_weight_decay=1e-2,
                                 adam_epsilon=1e-8)
        self.params = params
        self.optimizer = self.accelerator.prepare(make_optimizer(cfg, [{"params": params, "lr": 1e-4}]))
        self.step_index = 0

    def _update(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def ours(self) -> float:
        from riffmask.train import data
        from riffmask.train.dreambooth import diffusion_losses

        positions = data.batch_positions(self.step_index, self.batch_size, 0, 1)
        self.step_index += 1
        batch = data.make_batch(self.cache, positions, 0, data.INSTANCE, 0.18215, 1000)
        with self.accelerator.autocast():
            te = self.m["text_encoder"]
            loss = diffusion_losses([(self.cache, batch)], self.m["unet"], te, self.m["noise_scheduler"],
                                    "epsilon", None, self.device)[0].mean()
        self._update(loss)
        return loss.item()

    def reference(self) -> float:
        """diffusers' step: VAE encode + posterior sample + text encoder, every step (fp32 VAE as its default)."""
        import torch.nn.functional as F

        m = self.m
        index = [(self.step_index * self.batch_size + k) % len(self.images) for k in range(self.batch_size)]
        self.step_index += 1
        pixels = torch.stack([self.images[i] for i in index]).to(self.device, m["vae"].dtype)
        with self.accelerator.autocast():
            latents = m["vae"].encode(pixels).latent_dist.sample() * m["vae"].config.scaling_factor
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, 1000, (len(index),), device=self.device)
            noisy = m["noise_scheduler"].add_noise(latents, noise, timesteps)
            states = m["text_encoder"](self.cache.input_ids.repeat(len(index), 1).to(self.device))[0]
            pred = m["unet"](noisy, timesteps, states).sample
            loss = F.mse_loss(pred.float(), noise.float())
        self._update(loss)
        return loss.item()


# --------------------------------------------------------------------------- tiny pipeline
VARIANTS = {
    # name: (mode, optimizer, mixed precision, step kind)
    "lora_reference": ("lora", "adamw", "no", "reference"),
    "lora_ours": ("lora", "adamw", "no", "ours"),
    "lora_ours_bf16": ("lora", "adamw", "bf16", "ours"),
    "full_8bit_reference": ("full", "adamw8bit", "no", "reference"),
    "full_8bit_ours": ("full", "adamw8bit", "no", "ours"),
    "full_8bit_ours_bf16": ("full", "adamw8bit", "bf16", "ours"),
}


def tiny_recipe(variant: str, images) -> tuple[Recipe, callable]:
    mode, optimizer, precision, kind = VARIANTS[variant]
    recipe = Recipe(tiny_512_models(), mode, optimizer, precision, images)
    return recipe, getattr(recipe, kind)


def time_tiny(images) -> dict:
    """Alternate the variants of each mode step by step, so that background load hits them alike."""
    recipes = {name: tiny_recipe(name, images) for name in VARIANTS}
    for _, step in recipes.values():
        step()  # warm-up: allocator, oneDNN kernels
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(TIMED_STEPS):
        for name, (_, step) in recipes.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: {"best_s": min(t), "median_s": statistics.median(t)} for name, t in times.items()}


def peak_rss_gib() -> float:
    """Peak resident memory of this process since it started, or since :func:`reset_peak`."""
    with open("/proc/self/status") as handle:
        kib = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
    return kib * 1024 / GIB


def reset_peak() -> float:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs); return the peak so far."""
    before = peak_rss_gib()
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return before


def child(argv: list[str]) -> dict:
    """Run one variant (tiny) or one recipe (full size) in a fresh process; return its peak memory."""
    cmd = [sys.executable, "-m", "bench.bench_train", *argv, "--images", str(IMAGES_FILE)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- full-size memory plan
PLAN = {
    # recipe: Recipe kwargs, as configs/<recipe>.yaml sets them (fp16 runs as bf16 on CPU). t4_full_8bit trains
    # the text encoder first, then the UNet, with both in one optimizer: one step training both bounds either phase.
    "t4_full_8bit": dict(mode="full", optimizer="adamw8bit", mixed_precision="fp16", gradient_checkpointing=True,
                         batch_size=1, train_text_encoder=True),
    "t4_lora": dict(mode="lora", optimizer="adamw8bit", mixed_precision="fp16", gradient_checkpointing=True,
                    batch_size=2, rank=16),
    "a100_full": dict(mode="full", optimizer="adamw", mixed_precision="bf16", gradient_checkpointing=False,
                      batch_size=4, train_text_encoder=True),
}
PARAMS = {"unet": 859.5e6, "text_encoder": 123.1e6, "vae": 83.7e6}


def estimate_gib(recipe: dict) -> float:
    """Weights, gradients and optimizer state (activations excluded): what must fit before the step."""
    trained = PARAMS["unet"] + (PARAMS["text_encoder"] if recipe.get("train_text_encoder") else 0)
    if recipe["mode"] == "lora":
        trained = 0.0
    frozen = sum(PARAMS.values()) - trained
    state_bytes = 2 if recipe["optimizer"] != "adamw" else 8
    return (trained * (4 + 4 + state_bytes) + frozen * 2) / GIB


def plan_one(name: str) -> dict:
    """One optimizer step of a recipe at full size with random weights; peak RSS of this process."""
    recipe = PLAN[name]
    models = full_size_models()
    batch = recipe["batch_size"]
    images = [torch.zeros(3, RES, RES)] * batch  # cached once; their content does not change the memory
    kwargs = {k: v for k, v in recipe.items() if k != "batch_size"}
    kwargs["mixed_precision"] = kwargs["mixed_precision"].replace("fp16", "bf16")  # CPU autocast's half type
    r = Recipe(models, images=images, batch_size=batch, **kwargs)
    setup = reset_peak()
    start = time.perf_counter()
    r.ours()  # the first step allocates gradients and optimizer state: the run's peak
    return {"step_peak_rss_gib": round(peak_rss_gib(), 2), "setup_peak_rss_gib": round(setup, 2),
            "step_s": round(time.perf_counter() - start, 1)}


def free_ram_gib() -> float:
    with open("/proc/meminfo") as handle:
        info = dict(line.split(":", 1) for line in handle)
    return int(info["MemAvailable"].split()[0]) * 1024 / GIB


# --------------------------------------------------------------------------- main
def main() -> None:
    images = spectrograms(4)
    # The children read the images from a file: making them would raise the children's peak memory.
    IMAGES_FILE.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torch.stack(images), IMAGES_FILE)
    timing = time_tiny(images)
    tiny = {}
    for name in VARIANTS:
        tiny[name] = {**{k: round(v, 3) for k, v in timing[name].items()}, **child(["--tiny", name])}
        print(name, tiny[name], flush=True)
    ratios = {}
    for mode in ("lora", "full_8bit"):
        ref = tiny[f"{mode}_reference"]
        for variant in ("ours", "ours_bf16"):
            ours = tiny[f"{mode}_{variant}"]
            ratios[f"{mode}_{variant}_time_ratio"] = round(ours["best_s"] / ref["best_s"], 3)
            if "peak_rss_gib" in ours and "peak_rss_gib" in ref:
                ratios[f"{mode}_{variant}_memory_ratio"] = round(ours["peak_rss_gib"] / ref["peak_rss_gib"], 3)
    plan = {}
    for name, recipe in PLAN.items():
        need = estimate_gib(recipe)
        row = {"estimate_weights_grads_optimizer_gib": round(need, 2)}
        if need * 1.6 + 2 < free_ram_gib():  # activations and the allocator's slack on top
            row.update(child(["--plan", name]))
        else:
            row["measured"] = f"skipped: needs ~{need * 1.6 + 2:.0f} GiB, {free_ram_gib():.0f} GiB free"
        plan[name] = row
        print(name, row, flush=True)
    write_result("train", {
        "tiny_512": {"batch": 1, "timed_steps": TIMED_STEPS, "variants": tiny, "ratios": ratios},
        "full_size_memory_plan": {
            "note": "random weights, one step on CPU, bf16 autocast standing in for fp16; "
            "GPU measurements: bench/results/gpu.json",
            "recipes": plan,
        },
    })


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", choices=sorted(VARIANTS))
    parser.add_argument("--plan", choices=sorted(PLAN))
    parser.add_argument("--images", type=Path, default=IMAGES_FILE)
    args = parser.parse_args()
    if args.tiny:
        recipe, step = tiny_recipe(args.tiny, list(torch.load(args.images, weights_only=True)))
        step()
        setup = reset_peak()  # models, caching and the first step (allocator warm-up)
        for _ in range(3):
            step()
        print(json.dumps({"setup_peak_rss_gib": round(setup, 3), "peak_rss_gib": round(peak_rss_gib(), 3)}))
    elif args.plan:
        print(json.dumps(plan_one(args.plan)))
    else:
        main()
