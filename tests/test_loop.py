"""Loop mode: circular padding (scoped, equivariant), wrapping windows, circular decode, exact length."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SMALL_FLAGS, SR, small_config, tone
from diffusers import StableDiffusionImg2ImgPipeline
from PIL import Image

from riffmask.common.config import ConfigError
from riffmask.common.errors import RiffmaskError
from riffmask.core.codec import circular_stft, linear_from_mel
from riffmask.core.decode.griffin_lim import griffin_lim
from riffmask.core.params import SpectrogramParams
from riffmask.infer.generate import generate_sound
from riffmask.infer.loop import circular_time_padding, loop_input, loopable
from riffmask.infer.pipeline import MaskedRiffusionPipeline
from riffmask.infer.windows import window_joins, window_layout
from riffmask.metrics.seams import seam_scores

SMALL_PARAMS = SpectrogramParams(num_frequencies=64)


@pytest.fixture(scope="module")
def pipe(tiny_model_dir) -> MaskedRiffusionPipeline:
    pipe = MaskedRiffusionPipeline.from_pretrained(tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def image(width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (64, width, 3), dtype=np.uint8))


def module_state(model: torch.nn.Module) -> list[tuple[str, dict]]:
    """Every module's own attributes (parameters and buffers aside), to compare before and after."""
    return [(name, {k: v for k, v in vars(m).items() if not k.startswith("_")} | {"keys": sorted(vars(m))})
            for name, m in model.named_modules()]


def test_circular_padding_is_scoped_and_restored(pipe):
    x = torch.randn(1, 3, 64, 128, generator=torch.Generator().manual_seed(0))
    before_state = module_state(pipe.vae) + module_state(pipe.unet)
    before = pipe.vae.encode(x).latent_dist.mean
    with circular_time_padding(pipe.unet, pipe.vae):
        inside = pipe.vae.encode(x).latent_dist.mean
    assert not torch.allclose(inside, before)
    assert torch.equal(pipe.vae.encode(x).latent_dist.mean, before)
    assert module_state(pipe.vae) + module_state(pipe.unet) == before_state
    with pytest.raises(RuntimeError, match="boom"), circular_time_padding(pipe.vae):
        raise RuntimeError("boom")
    assert module_state(pipe.vae) == before_state[: len(module_state(pipe.vae))]


def test_other_pipelines_sharing_the_modules_are_untouched_by_a_loop_call(pipe):
    other = StableDiffusionImg2ImgPipeline(**pipe.components, safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False)
    other.set_progress_bar_config(disable=True)

    def img2img():
        return other("jazz", image=image(128), strength=0.8, num_inference_steps=6,
                     generator=torch.Generator().manual_seed(1), output_type="np").images

    first = img2img()
    looped = pipe("jazz", image=image(128), mask_image=Image.new("L", (128, 64), 128), num_inference_steps=6,
                  generator=torch.Generator().manual_seed(1), loop=True, output_type="np").images
    plain = pipe("jazz", image=image(128), mask_image=Image.new("L", (128, 64), 128), num_inference_steps=6,
                 generator=torch.Generator().manual_seed(1), output_type="np").images
    assert not np.allclose(looped, plain)
    assert np.array_equal(img2img(), first)


def test_vae_is_equivariant_to_circular_time_shifts(pipe):
    x = torch.randn(1, 3, 64, 128, generator=torch.Generator().manual_seed(0))
    shift = 16  # pixels: a multiple of the VAE's downscale (8)
    with circular_time_padding(pipe.vae):
        z = pipe.vae.encode(x).latent_dist.mean
        z_shifted = pipe.vae.encode(x.roll(shift, -1)).latent_dist.mean
        torch.testing.assert_close(z_shifted, z.roll(shift // 8, -1), atol=1e-5, rtol=1e-4)
        y = pipe.vae.decode(z).sample
        torch.testing.assert_close(pipe.vae.decode(z.roll(2, -1)).sample, y.roll(16, -1), atol=1e-5, rtol=1e-4)
    # Without it the border breaks the symmetry.
    plain = pipe.vae.encode(x.roll(shift, -1)).latent_dist.mean
    assert not torch.allclose(plain, pipe.vae.encode(x).latent_dist.mean.roll(2, -1), atol=1e-3)


def test_unet_seeing_the_whole_circle_is_equivariant(pipe):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 16, generator=g)
    cond, _ = pipe.encode_prompt("jazz", "cpu", 1, False)
    embeds = cond.repeat(2, 1, 1)
    shift = 4  # latent columns: a multiple of the tiny UNet's downscale (2)
    with circular_time_padding(pipe.unet):
        out = pipe.unet(latents, 500, encoder_hidden_states=embeds).sample
        shifted = pipe.unet(latents.roll(shift, -1), 500, encoder_hidden_states=embeds).sample
    torch.testing.assert_close(shifted, out.roll(shift, -1), atol=1e-5, rtol=1e-4)
    plain = pipe.unet(latents.roll(shift, -1), 500, encoder_hidden_states=embeds).sample
    assert not torch.allclose(plain, out.roll(shift, -1), atol=1e-3)


def test_wrapping_windows_and_the_masked_step_are_equivariant(pipe):
    """Latent, mask and noise shifted by a whole window spacing (also a multiple of the UNet's
    downscale): the wrapping windows' guided prediction after the masked reset shifts alike."""
    width, window, overlap = 24, 8, 2  # windows start every 6 latent columns
    windows, weights = window_layout(width, window, overlap, loop=True)
    pipe._guidance_scale = 8.0
    pipe._cross_attention_kwargs = None
    cond, uncond = pipe.encode_prompt("jazz", "cpu", 1, True)
    embeds = {len(windows): pipe._window_embeds(cond, uncond, len(windows))}
    g = torch.Generator().manual_seed(0)
    latents, original, noise = (torch.randn(1, 4, 8, width, generator=g) for _ in range(3))
    mask = torch.rand(1, 1, 8, width, generator=g)
    pipe.scheduler.set_timesteps(10)
    t = pipe.scheduler.timesteps[3]

    def step(lat, orig, eps, m):
        keep = m > 0.5
        lat = torch.where(keep, pipe.scheduler.add_noise(orig, eps, t.repeat(1)), lat)
        return pipe._guided_noise(lat, t, embeds, [windows], weights)

    out = step(latents, original, noise, mask)
    shifted = step(*(v.roll(6, -1) for v in (latents, original, noise, mask)))
    torch.testing.assert_close(shifted, out.roll(6, -1), atol=1e-5, rtol=1e-4)


def test_loop_windows_wrap_and_joins():
    windows, weights = window_layout(24, 8, 2, loop=True)
    assert [w.tolist()[:2] for w in windows] == [[0, 1], [6, 7], [12, 13], [18, 19]]
    assert windows[-1].tolist()[-2:] == [0, 1]  # the last window runs past the end into the start
    norm = torch.zeros(24)
    for w, weight in zip(windows, weights, strict=True):
        norm[w] += weight.flatten()
    torch.testing.assert_close(norm, torch.ones(24))
    assert window_joins(24, 8, 2, loop=True) == [1.0, 7.0, 13.0, 19.0]
    assert window_joins(20, 8, 2, loop=False) == [7.0, 13.0]
    assert window_joins(8, 8, 2, loop=True) == []


def test_circular_stft_is_shift_equivariant_and_griffin_lim_joins_exactly():
    hop = SMALL_PARAMS.hop_length
    rng = np.random.default_rng(0)
    x = rng.standard_normal(120 * hop).astype(np.float32)
    spec = circular_stft(x, SMALL_PARAMS)
    torch.testing.assert_close(circular_stft(np.roll(x, 7 * hop), SMALL_PARAMS), spec.roll(7, -1), atol=1e-3,
                               rtol=1e-4)
    loop = (tone(441, 1.2) * (1 + 0.5 * np.sin(2 * np.pi * np.arange(int(1.2 * SR)) / (1.2 * SR)))).astype(np.float32)
    magnitude = linear_from_mel(circular_stft(loop, SMALL_PARAMS, mel=True), SMALL_PARAMS)
    audio = griffin_lim(magnitude, SMALL_PARAMS, 8, circular=True).numpy()
    assert len(audio) == len(loop)
    (wrap,) = seam_scores(audio, SR, wrap=True)
    assert not wrap.clicks and wrap.seam < 1.3


def test_loopable_part_runs_from_its_end_into_its_start():
    rng = np.random.default_rng(0)
    source = np.cumsum(rng.standard_normal(3 * SR)).astype(np.float32) / 300  # a wandering, non-periodic sound
    for samples in (2 * SR, 5 * SR):  # taken, and tiled
        part = loopable(source, samples, fade=SR // 4)
        assert len(part) == samples
        steps = np.abs(np.diff(part))
        assert abs(part[0] - part[-1]) < 4 * np.sqrt(np.mean(steps**2))


@pytest.mark.parametrize(
    ("settings", "samples"),
    [({"loop_seconds": 1.5}, 66150), ({"bpm": 100, "bars": 1, "loop_seam": "both"}, 105840), ({}, 2 * SR)],
)
def test_generated_loop_has_exact_length_and_a_seamless_wrap(tiny_model_dir, settings, samples):
    rng = np.random.default_rng(0)
    sound = (tone(330, 2.0) + 0.05 * rng.standard_normal(2 * SR)).astype(np.float32)
    sound[SR:] *= 0.2  # a sound whose end differs from its start
    cfg = small_config(tiny_model_dir, loop=True, **settings)
    pipe = MaskedRiffusionPipeline.from_pretrained(tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    (gen,) = generate_sound(pipe, sound, cfg)
    assert len(gen.audio) == len(gen.input_audio) == samples
    assert gen.output_image.width % 16 == 0  # the tiny model's VAE x UNet downscale
    (wrap,) = seam_scores(gen.audio, SR, wrap=True)
    assert not wrap.clicks and wrap.seam < 1.5


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"loop_seconds": 2.0}, "only with loop"),
        ({"loop": True, "bpm": 120}, "go together"),
        ({"loop": True, "loop_seconds": 2.0, "bpm": 120, "bars": 2}, "not both"),
        ({"loop": True, "loop_seconds": -1.0}, "positive"),
        ({"loop": True, "loop_seconds": 600.0}, r"^loop_seconds: a loop lasts at most 60 s .*got 600 s$"),
        ({"loop": True, "loop_seconds": 0.01}, r"^loop_seconds: a loop lasts at least 0.2 s, got 0.01 s$"),
        ({"loop": True, "bpm": 60, "bars": 16}, r"^bpm, bars, beats_per_bar: .*at most 60 s .*got 64 s$"),
    ],
)
def test_loop_options_are_checked(tiny_model_dir, settings, message):
    with pytest.raises(ConfigError, match=message):
        small_config(tiny_model_dir, **settings)


def test_too_long_loops_are_refused_up_front(tmp_path, capsys):
    from riffmask.cli import main
    from riffmask.core.audio import write_wav

    write_wav(tmp_path / "in.wav", tone(330, 0.5))
    # Refused while reading the options: the model (here a folder that does not exist) is never loaded.
    code = main(["generate", str(tmp_path / "in.wav"), "--model", str(tmp_path / "no-model"), "--out",
                 str(tmp_path / "out"), "--loop", "--loop-seconds", "600"])
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1 and "loop_seconds" in lines[0] and "at most 60 s" in lines[0]
    assert not (tmp_path / "out").exists()
    # Without an asked length the loop is the processed part: a part over a minute is refused before any work.
    cfg = small_config(tmp_path / "no-model", loop=True, max_seconds=None)
    with pytest.raises(RiffmaskError, match=r"loop of 61\.0 s .* at most 60 s; give --loop-seconds or --duration"):
        loop_input(np.zeros(61 * SR, dtype=np.float32), cfg, grid=16)


def test_generate_loop_then_eval_seams_reads_the_sidecars(tiny_model_dir, tmp_path):
    from riffmask.cli import main
    from riffmask.core.audio import write_wav

    write_wav(tmp_path / "in.wav", tone(330, 2.0))
    out = tmp_path / "out"
    assert main(["generate", str(tmp_path / "in.wav"), "--model", str(tiny_model_dir), "--out", str(out),
                 "--loop", "--loop-seconds", "1.5", "--report", *SMALL_FLAGS]) == 0
    sidecar = json.loads((out / "in.json").read_text())
    assert "seam_max" in (out / "report.html").read_text()
    assert sidecar["config"]["looping"]["loop"] is True and sidecar["joins"]
    assert main(["eval", "seams", str(out), "--json", str(tmp_path / "seams.json")]) == 0
    (row,) = json.loads((tmp_path / "seams.json").read_text())["items"]
    assert row["joins"] == len(sidecar["joins"]) + 1 and row["wrap_seam"] is not None
