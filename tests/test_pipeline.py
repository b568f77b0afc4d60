"""MaskedRiffusionPipeline against SPEC §3 and diffusers' img2img, on the tiny random pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline
from PIL import Image

from riffmask.infer.pipeline import MaskedRiffusionPipeline, mask_to_latent
from riffmask.infer.tiny import build_tiny_tokenizer, save_tiny_pipeline
from riffmask.infer.windows import window_joins, window_layout

SEED = 1040
STEPS = 10  # strength 0.8: 8 steps run (PNDM adds one: n = 9)


@pytest.fixture(scope="module")
def pipe(tiny_model_dir) -> MaskedRiffusionPipeline:
    pipe = MaskedRiffusionPipeline.from_pretrained(tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


def run(pipe, image, mask, **kwargs):
    kwargs = {"strength": 0.8, "num_inference_steps": STEPS, "guidance_scale": 8.0, "output_type": "latent", **kwargs}
    return pipe("jazz, saxophone", image=image, mask_image=mask, generator=torch.Generator().manual_seed(SEED),
                **kwargs).images


def reference_o(pipe, image, t):
    """O_i recomputed from scratch: VAE sample (draw 1), then the shared noise (draw 2)."""
    generator = torch.Generator().manual_seed(SEED)
    pixels = pipe.image_processor.preprocess(image)
    z0 = pipe.vae.encode(pixels).latent_dist.sample(generator) * pipe.vae.config.scaling_factor
    eps = torch.randn(z0.shape, generator=generator)
    return pipe.scheduler.add_noise(z0, eps, t.reshape(1))


class UNetInputs:
    """Records the latent the UNet sees at every step (a forward pre-hook on the real UNet)."""

    def __init__(self, unet):
        self.seen: list[torch.Tensor] = []
        self.handle = unet.register_forward_pre_hook(lambda module, args: self.seen.append(args[0].clone()))

    def __enter__(self):
        return self.seen

    def __exit__(self, *exc):
        self.handle.remove()


def test_tiny_model_is_deterministic_and_its_tokenizer_encodes_prompts(tiny_model_dir, tmp_path):
    again = save_tiny_pipeline(tmp_path / "again", seed=0)
    for name in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt"):
        assert (again / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
    tokenizer = build_tiny_tokenizer()
    ids = tokenizer("Instrumental, saxophone & flute; 90 BPM!").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in ids[1:-1]
    assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == "instrumental,saxophone&flute;90bpm!"
    assert len(tokenizer("saxophone").input_ids) < len("saxophone") + 2  # learned merges, not single bytes


def test_black_mask_equals_diffusers_img2img(pipe, image):
    reference = StableDiffusionImg2ImgPipeline(**pipe.components, safety_checker=None, feature_extractor=None,
                                               requires_safety_checker=False)
    reference.set_progress_bar_config(disable=True)
    black = Image.new("L", image.size, 0)
    ours = run(pipe, image, black)
    theirs = reference("jazz, saxophone", image=image, strength=0.8, num_inference_steps=STEPS, guidance_scale=8.0,
                       generator=torch.Generator().manual_seed(SEED), output_type="latent").images
    assert torch.equal(ours, theirs)
    pixels = run(pipe, image, black, output_type="np")
    expected = reference("jazz, saxophone", image=image, strength=0.8, num_inference_steps=STEPS, guidance_scale=8.0,
                         generator=torch.Generator().manual_seed(SEED), output_type="np").images
    np.testing.assert_array_equal(pixels, expected)


def test_white_mask_keeps_the_input_latent_up_to_the_last_step(pipe, image):
    with UNetInputs(pipe.unet) as seen:
        run(pipe, image, Image.new("L", image.size, 255))
    pipe.scheduler.set_timesteps(STEPS)
    timesteps = pipe.scheduler.timesteps[STEPS - int(STEPS * 0.8):]
    assert len(seen) == len(timesteps) == 9
    for x, t in zip(seen, timesteps, strict=True):
        uncond, cond = x.chunk(2)
        assert torch.equal(uncond, cond)
        torch.testing.assert_close(cond, reference_o(pipe, image, t), rtol=0, atol=1e-6)


def test_white_mask_with_a_sigma_scheduler_uses_each_steps_noise_level(pipe, image):
    from diffusers import EulerDiscreteScheduler

    euler = MaskedRiffusionPipeline(**{**pipe.components, "scheduler": EulerDiscreteScheduler.from_config(
        pipe.scheduler.config)})
    euler.set_progress_bar_config(disable=True)
    with UNetInputs(euler.unet) as seen:
        run(euler, image, Image.new("L", image.size, 255))
    generator = torch.Generator().manual_seed(SEED)
    pixels = euler.image_processor.preprocess(image)
    z0 = euler.vae.encode(pixels).latent_dist.sample(generator) * euler.vae.config.scaling_factor
    eps = torch.randn(z0.shape, generator=generator)
    sigmas = euler.scheduler.sigmas[STEPS - int(STEPS * 0.8):]
    assert len(seen) == 8
    for x, sigma in zip(seen, sigmas, strict=False):
        expected = (z0 + sigma * eps) / (sigma**2 + 1) ** 0.5  # O_i at this step's sigma, as the UNet sees it
        torch.testing.assert_close(x.chunk(2)[1], expected, rtol=0, atol=1e-5)


def test_intermediate_masks_follow_the_threshold_schedule(pipe, image):
    levels = [0, 20, 64, 102, 128, 191, 230, 255]  # one grey level per latent column (8 px wide each)
    mask = Image.fromarray(np.repeat(np.array(levels, dtype=np.uint8)[None], 8, axis=1).repeat(64, axis=0))
    sentinel = 1234.5

    def poison(pipeline, i, t, tensors):
        # Every latent the loop carries over becomes the sentinel: only the keep blend can undo it.
        return {"latents": torch.full_like(tensors["latents"], sentinel)}

    with UNetInputs(pipe.unet) as seen:
        run(pipe, image, mask, callback_on_step_end=poison, callback_on_step_end_tensor_inputs=["latents"])
    pipe.scheduler.set_timesteps(STEPS)
    timesteps = pipe.scheduler.timesteps[STEPS - int(STEPS * 0.8):]
    n = len(timesteps)
    grey = mask_to_latent(mask, (8, 8))[0, 0, 0]
    assert torch.equal(grey, torch.tensor(levels) / 255.0)
    for i in range(1, n):
        x = seen[i].chunk(2)[1]
        o = reference_o(pipe, image, timesteps[i])
        for col, level in enumerate(levels):
            keep = bool(np.float32(level / 255.0) > np.float32(i) / np.float32(n))
            column = x[..., col]
            if keep:
                torch.testing.assert_close(column, o[..., col], rtol=0, atol=1e-6)
            else:
                assert torch.all(column == sentinel), (i, level)


def test_variations_batch_matches_single_runs(pipe, image):
    mask = Image.new("L", image.size, 128)
    batch = pipe(["jazz", "rock"], image=image, mask_image=mask, num_inference_steps=STEPS, output_type="latent",
                 generator=[torch.Generator().manual_seed(s) for s in (1, 2)]).images
    single = pipe("rock", image=image, mask_image=mask, num_inference_steps=STEPS, output_type="latent",
                  generator=torch.Generator().manual_seed(2)).images
    torch.testing.assert_close(batch[1:], single, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(batch[0], batch[1])


def test_window_layout_covers_evenly_and_cross_fades():
    assert window_layout(40, 64, 16)[0] == [slice(0, 40)]
    windows, weights = window_layout(150, 64, 16)
    assert windows[0].start == 0 and windows[-1].stop == 150
    shared = [a.stop - b.start for a, b in zip(windows, windows[1:], strict=False)]
    assert min(shared) >= 16 and max(shared) - min(shared) <= 1  # every join alike, none pushed back
    total = torch.zeros(150)
    for w, weight in zip(windows, weights, strict=True):
        total[w] += weight.flatten()
        assert weight.min() > 0
    torch.testing.assert_close(total, torch.ones(150))  # single coverage, then ramps that sum to one
    joins = window_joins(150, 64, 16)
    assert joins == [(a.stop + b.start) / 2 for a, b in zip(windows, windows[1:], strict=False)]
    with pytest.raises(ValueError, match="overlap"):
        window_layout(150, 64, 64)


def test_windowed_generation_of_a_wide_image(pipe):
    rng = np.random.default_rng(1)
    wide = Image.fromarray(rng.integers(0, 256, (64, 224, 3), dtype=np.uint8))
    mask = Image.new("L", wide.size, 100)
    with UNetInputs(pipe.unet) as seen:
        out = run(pipe, wide, mask, window_width=128, window_overlap=32, output_type="np", num_inference_steps=4)
    assert out.shape == (1, 64, 224, 3) and np.isfinite(out).all()
    assert seen[0].shape == (2 * 2, 4, 8, 16)  # 2 windows of 16 latent px, CFG halves, one UNet batch
    with UNetInputs(pipe.unet) as seen:
        one_by_one = run(pipe, wide, mask, window_width=128, window_overlap=32, output_type="np",
                         num_inference_steps=4, windows_per_batch=1)
    assert len(seen) == 4 * 2 and seen[0].shape == (2, 4, 8, 16)  # 4 steps (PNDM: 3 + 1) x 2 calls
    np.testing.assert_allclose(one_by_one, out, atol=1e-4)
    # One window as wide as the image is the plain (paper) path.
    narrow = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    torch.testing.assert_close(run(pipe, narrow, mask.crop((0, 0, 64, 64)), window_width=64),
                               run(pipe, narrow, mask.crop((0, 0, 64, 64))), rtol=0, atol=0)
    with pytest.raises(ValueError, match="multiple of 8"):
        run(pipe, Image.new("RGB", (60, 64)), Image.new("L", (60, 64)))


def test_saves_and_reloads_as_a_diffusers_pipeline(pipe, image, tmp_path):
    pipe.save_pretrained(tmp_path / "saved")
    again = MaskedRiffusionPipeline.from_pretrained(tmp_path / "saved")
    again.set_progress_bar_config(disable=True)
    mask = Image.new("L", image.size, 200)
    assert torch.equal(run(again, image, mask), run(pipe, image, mask))
