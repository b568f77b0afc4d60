"""``riffmask generate`` and its Python API end to end, on the tiny random pipeline and synthetic sounds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SMALL_FLAGS, SR, small_config, tone
from PIL import Image

from riffmask.cli import main
from riffmask.common.config import ConfigError, load_config
from riffmask.common.errors import RiffmaskError
from riffmask.core.codec import load_image
from riffmask.infer.config import GenerateConfig
from riffmask.infer.files import generate_files
from riffmask.infer.generate import generate_sound
from riffmask.infer.load import load_pipeline, pick_device, set_scheduler


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return load_pipeline(small_config(tiny_model_dir))


@pytest.fixture(scope="module")
def sounds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sounds")
    sf.write(folder / "short.wav", tone(300, 0.4) + tone(2000, 0.4, amp=0.1), SR)
    rng = np.random.default_rng(0)
    sf.write(folder / "long.wav", (tone(500, 1.5) * (rng.random(int(1.5 * SR)) > 0.3)).astype(np.float32), SR)
    (folder / "broken.mp3").write_bytes(b"this is not audio" * 50)
    return folder


def test_generate_cli_writes_every_output_and_goes_past_a_bad_input(tiny_model_dir, sounds, tmp_path):
    out = tmp_path / "out"
    code = main(["generate", "--model", str(tiny_model_dir), "--prompt", "jazz, saxophone", str(sounds),
                 "--out", str(out), *SMALL_FLAGS])
    assert code == 1  # one input failed; the others were generated
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["done"]) == ["long", "short"]
    assert [f["input"] for f in summary["failed"]] == [str(sounds / "broken.mp3")]
    assert not list(out.glob("broken*")) and not list(out.glob(".*"))  # nothing half-written
    for name, seconds, width in (("short", 0.4, 64), ("long", 1.5, 152)):
        sidecar = json.loads((out / f"{name}.json").read_text())
        assert sidecar["prompt"] == "jazz, saxophone" and sidecar["seed"] == 1040
        assert sidecar["config"]["sampling"]["strength"] == 0.8 and sidecar["config"]["sampling"]["guidance"] == 8.0
        assert sidecar["scheduler"]["class"] == "PNDMScheduler" and sidecar["seconds"] >= sidecar["model_seconds"] > 0
        for key, file in sidecar["files"].items():
            assert (out / file).is_file(), key
        music, sr = sf.read(out / sidecar["files"]["output_audio"])
        assert sr == SR and len(music) == round(seconds * SR) == len(sf.read(out / f"{name}_input.wav")[0])
        assert np.isclose(np.abs(music).max(), 0.99, atol=1e-3)  # peak-normalised
        for kind in ("input", "mask", "output"):
            image = load_image(out / f"{name}_{kind}.png")
            assert image.size == (width, 64) and image.getexif()[11040] == 64
    assert summary["config"]["output"]["out"] == str(out) and summary["runs"] == []  # the run's own record


def test_existing_outputs_are_kept_unless_overwrite(tiny_model_dir, sounds, tmp_path):
    out = tmp_path / "out"
    args = ["generate", "--model", str(tiny_model_dir), str(sounds / "short.wav"), "--out", str(out), *SMALL_FLAGS]
    assert main(args) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("short*")}
    assert main(args) == 0  # the same input and settings: skipped
    assert json.loads((out / "summary.json").read_text())["skipped"][0]["item"] == "short"
    assert main([*args, "--seed", "7"]) == 0  # other settings: a result of its own beside the first
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("short*") if not p.name.startswith("short_2")} == before
    assert json.loads((out / "short_2.json").read_text())["seed"] == 7
    assert main([*args, "--seed", "7", "--overwrite", "--num-variations", "2", "--prompt", "a", "--prompt", "b"]) == 0
    assert sorted(json.loads((out / f"short_v{k}.json").read_text())["seed"] for k in range(4)) == [7, 7, 8, 8]
    assert json.loads((out / "short_v2.json").read_text())["prompt"] == "b"


def test_sidecar_regenerates_the_result_exactly(pipe, tiny_model_dir, sounds, tmp_path):
    cfg = small_config(tiny_model_dir, out=str(tmp_path / "a"), seed=3, start=0.2, duration=0.5, num_variations=2)
    assert generate_files(pipe, [sounds / "long.wav"], cfg).done == ["long_v0", "long_v1"]
    sidecar = json.loads((tmp_path / "a" / "long_v1.json").read_text())
    assert sidecar["seed"] == 4 and sidecar["input_seconds"] == 0.5
    like = ["generate", "--like", str(tmp_path / "a" / "long_v1.json"), "--out", str(tmp_path / "b")]
    assert main([*like, str(sounds / "long.wav")]) == 0
    first = np.asarray(Image.open(tmp_path / "a" / "long_v1_output.png"))
    second = np.asarray(Image.open(tmp_path / "b" / "long_output.png"))
    np.testing.assert_allclose(first.astype(int), second.astype(int), atol=1)  # batch of 2 vs 1: float rounding
    again = json.loads((tmp_path / "b" / "long.json").read_text())["config"]
    assert again == {**sidecar["config"], "output": {**sidecar["config"]["output"], "out": str(tmp_path / "b")}}
    assert main(["generate", "--like", str(tmp_path / "a" / "summary.json")]) == 2  # not a sidecar


def test_a_sidecar_written_before_the_nested_config_still_makes_its_result(tiny_model_dir, sounds, tmp_path):
    """Sidecars used to hold one flat config with the old decode names; --like reads them with their meaning."""
    now = tmp_path / "now"
    assert main(["generate", "--model", str(tiny_model_dir), str(sounds / "short.wav"), "--out", str(now),
                 *SMALL_FLAGS, "phase_start=pghi", "iterations=3"]) == 0  # fmt: skip
    sidecar = json.loads((now / "short.json").read_text())
    flat = {k: v for section in sidecar["config"].values() for k, v in section.items()}
    flat = {k: v for k, v in flat.items() if k not in ("decoder", "iterations", "phase_start")}
    old = {**sidecar, "config": {**flat, "griffin_lim_iters": 3, "phase_init": "magnitude"}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert main(["generate", "--like", str(tmp_path / "old.json"), "--out", str(tmp_path / "again"),
                 str(sounds / "short.wav")]) == 0  # fmt: skip
    assert (tmp_path / "again" / "short.wav").read_bytes() == (now / "short.wav").read_bytes()
    (tmp_path / "odd.json").write_text(json.dumps({**old, "config": {**flat, "warp": 9}}))
    assert main(["generate", "--like", str(tmp_path / "odd.json"), "--out", str(tmp_path / "odd")]) == 2


def test_any_length_is_padded_windowed_and_trimmed(pipe, tiny_model_dir):
    cfg = small_config(tiny_model_dir, prompt=["ambient"])
    vae = pipe.vae
    # The real VAE tiles at 512 px; at the tests' 64 px scale, tiles of 64 px make wide inputs tile too.
    vae.tile_sample_min_size, vae.tile_latent_min_size = 64, 8
    try:
        for seconds in (0.05, 0.6, 0.64, 2.3):  # 0.64 s: 65 frames, one more than a window
            audio = tone(440, seconds)
            (result,) = generate_sound(pipe, audio, cfg)
            assert len(result.audio) == len(audio) and np.isfinite(result.audio).all()
            assert result.output_image.size[0] == max(64, 8 * -(-(1 + len(audio) // 441) // 8))
            assert vae.use_tiling == (seconds > 0.6)
    finally:
        vae.tile_sample_min_size, vae.tile_latent_min_size = vae.config.sample_size, 64
        vae.disable_tiling()


def test_loras_from_training_stack_with_weights(pipe, tiny_model_dir, sounds, tmp_path):
    from riffmask.infer.tiny import build_tiny_components
    from riffmask.train.lora import lora_config, save_lora

    folders = []
    for k in range(2):
        parts = build_tiny_components(seed=0)
        parts["unet"].add_adapter(lora_config(4, 4.0, 0.0, ["to_q", "to_k", "to_v", "to_out.0"]))
        torch.manual_seed(k)
        for name, param in parts["unet"].named_parameters():
            if "lora_B" in name:
                param.data.normal_(0, 0.5)  # trained-looking, not the zero init
        folders.append(tmp_path / f"lora{k}")
        save_lora(folders[-1], parts["unet"], parts["text_encoder"], False, 4.0, kohya=True)
    audio = tone(300, 0.6)
    base = generate_sound(pipe, audio, small_config(tiny_model_dir))[0].output_image
    one = load_pipeline(small_config(tiny_model_dir, lora=[str(folders[0])]))
    zero = load_pipeline(small_config(tiny_model_dir, lora=[str(folders[0] / "pytorch_lora_weights.safetensors")],
                                      lora_scale=[0.0]))
    both = load_pipeline(small_config(tiny_model_dir, lora=[str(f) for f in folders], lora_scale=[1.0, 0.5]))
    assert both.get_active_adapters() == ["lora_0", "lora_1"]
    images = [np.asarray(generate_sound(p, audio, small_config(tiny_model_dir))[0].output_image, dtype=int)
              for p in (one, zero, both)]
    assert np.abs(images[0] - np.asarray(base, dtype=int)).max() > 10
    assert np.abs(images[1] - np.asarray(base, dtype=int)).max() <= 1  # scale 0: the base model
    assert np.abs(images[2] - images[0]).max() > 10


def test_pickle_weights_need_allow_pickle(tiny_model_dir, tmp_path):
    lora = tmp_path / "lora.bin"
    torch.save({"x": torch.zeros(1)}, lora)
    with pytest.raises(RiffmaskError, match="--allow-pickle"):
        load_pipeline(small_config(tiny_model_dir, lora=[str(lora)]))
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(lora.read_bytes())
    with pytest.raises(RiffmaskError, match="--allow-pickle"):
        load_pipeline(small_config(ckpt))


def test_unloadable_models_get_a_clear_message(tiny_model_dir, tmp_path):
    with pytest.raises(RiffmaskError, match="Hub id needs the network"):
        load_pipeline(small_config("someone/not-a-cached-model"))
    single = tmp_path / "model.safetensors"
    single.write_bytes((tiny_model_dir / "unet" / "diffusion_pytorch_model.safetensors").read_bytes())
    with pytest.raises(RiffmaskError, match="--single-file-config"):
        load_pipeline(small_config(single))
    with pytest.raises(RiffmaskError, match="not a loadable diffusers pipeline folder"):
        load_pipeline(small_config(tmp_path))


def test_scheduler_swap_and_presets(pipe, tiny_model_dir):
    cfg = small_config(tiny_model_dir)
    set_scheduler(pipe, "DPMSolverMultistepScheduler")
    try:
        (result,) = generate_sound(pipe, tone(440, 0.3), cfg)
        assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler" and np.isfinite(result.audio).all()
        with pytest.raises(RiffmaskError, match="unknown scheduler 'Nope'.*EulerDiscreteScheduler"):
            set_scheduler(pipe, "Nope")
    finally:
        set_scheduler(pipe, "PNDMScheduler")
    paper = load_config(GenerateConfig, "paper")
    sampling = paper.sampling
    assert (sampling.strength, sampling.guidance, sampling.steps, sampling.seed, paper.mask.downshift) == (
        0.8, 8.0, 50, 1040, 40)
    assert paper == GenerateConfig()  # the paper's settings are the defaults
    assert load_config(GenerateConfig, "fast").checkpoint.scheduler == "DPMSolverMultistepScheduler"
    flat = load_config(GenerateConfig, None, ["downshift=150", "mask.invert=0.5", "iterations=3"])
    assert (flat.mask.downshift, flat.mask.invert, flat.decode.iterations) == (150, 0.5, 3)
    with pytest.raises(ConfigError, match="preset of `riffmask train`"):
        load_config(GenerateConfig, "cpu_smoke")
    with pytest.raises(ConfigError, match="strength"):
        load_config(GenerateConfig, "paper", ["strength=0"])
    with pytest.raises(ConfigError, match="did you mean 'guidance'"):
        load_config(GenerateConfig, None, ["guidence=3"])


def test_device_and_dtype_choice(tiny_model_dir):
    if not torch.cuda.is_available():
        assert pick_device(None, None) == ("cpu", torch.float32)
    assert pick_device("cuda:1", None) == ("cuda:1", torch.float16)
    assert pick_device("cpu", "bfloat16") == ("cpu", torch.bfloat16)
    bf16 = load_pipeline(small_config(tiny_model_dir, device="cpu", dtype="bfloat16"))
    assert {bf16.unet.dtype, bf16.vae.dtype, bf16.text_encoder.dtype} == {torch.bfloat16}
    (result,) = generate_sound(bf16, tone(440, 0.3), small_config(tiny_model_dir))
    assert np.isfinite(result.audio).all() and np.abs(result.audio).max() > 0.9
    with pytest.raises(ConfigError, match="dtype"):
        small_config(tiny_model_dir, dtype="float8")


def test_batches_across_sounds_give_the_unbatched_results(pipe, tiny_model_dir, sounds, tmp_path):
    """--batch-size 3: two equally long sounds share UNet calls, a longer one and a bad one go their own way."""
    sf.write(sounds.parent / "twin.wav", tone(700, 0.4) + tone(150, 0.4, amp=0.2), SR)
    inputs = [sounds / "short.wav", sounds / "broken.mp3", sounds.parent / "twin.wav", sounds / "long.wav"]
    outs = {}
    for batch in (1, 3):
        cfg = small_config(tiny_model_dir, out=str(tmp_path / f"b{batch}"), batch_size=batch, num_variations=2)
        summary = generate_files(pipe, inputs, cfg)
        assert sorted(summary.done) == ["long_v0", "long_v1", "short_v0", "short_v1", "twin_v0", "twin_v1"]
        assert [f["input"] for f in summary.failed] == [str(sounds / "broken.mp3")]
        outs[batch] = tmp_path / f"b{batch}"
    for name in ("short_v0", "short_v1", "twin_v0", "twin_v1", "long_v1"):
        alone = np.asarray(load_image(outs[1] / f"{name}_output.png"), dtype=np.int16)
        batched = np.asarray(load_image(outs[3] / f"{name}_output.png"), dtype=np.int16)
        assert np.abs(alone - batched).max() <= 1, name  # float rounding of a batched UNet call at most
        assert json.loads((outs[3] / f"{name}.json").read_text())["seed"] == 1040 + int(name[-1])
    # Each item keeps its own generator: variations differ, batched or not.
    assert not np.array_equal(load_image(outs[3] / "twin_v0_output.png"), load_image(outs[3] / "twin_v1_output.png"))


def test_batch_size_is_validated(tiny_model_dir):
    with pytest.raises(ConfigError, match="batch_size"):
        small_config(tiny_model_dir, batch_size=0)


def test_compile_traces_unet_and_vae_and_keeps_the_result(pipe, tiny_model_dir, sounds, monkeypatch):
    # Dynamo's real graph capture, run eagerly: inductor's C++ build would take minutes on this CPU.
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: real_compile(fn, backend="eager", **kwargs))
    cfg = small_config(tiny_model_dir, compile=True)
    compiled = load_pipeline(cfg)
    assert isinstance(compiled.unet, torch._dynamo.eval_frame.OptimizedModule)
    audio, _ = sf.read(sounds / "short.wav", dtype="float32")
    made = generate_sound(compiled, audio, cfg)[0]
    plain = generate_sound(pipe, audio, cfg)[0]
    assert np.abs(np.asarray(made.output_image, np.int16) - np.asarray(plain.output_image, np.int16)).max() <= 1
    assert made.audio.shape == plain.audio.shape


def test_each_result_keeps_the_latent_its_image_was_decoded_from(pipe, tiny_model_dir):
    """``Generation.latent``: the denoised latent of each item, which decodes to exactly its output image."""
    cfg = small_config(tiny_model_dir, prompt=["ambient"], num_variations=2)
    steps = []
    results = generate_sound(pipe, tone(500, 1.5), cfg, on_step=lambda done, total: steps.append((done, total)))
    assert steps == [(k, len(steps)) for k in range(1, len(steps) + 1)]  # the progress is still reported
    for result in results:
        assert result.latent.shape == (4, 8, result.output_image.width // 8) and result.latent.dtype == torch.float32
        with torch.no_grad():
            decoded = pipe.vae.decode(result.latent[None] / pipe.vae.config.scaling_factor).sample
        image = pipe.image_processor.postprocess(decoded, output_type="pil")[0]
        assert np.abs(np.asarray(image, np.int16) - np.asarray(result.output_image, np.int16)).max() <= 1
    assert not torch.equal(results[0].latent, results[1].latent)  # each item its own latent
