"""``riffmask export``: a pipeline as one original-layout checkpoint, and ``generate`` loading it back.

The file is read by diffusers' own ``from_single_file`` (its LDM -> diffusers converter), so equal
weights after the round trip prove both our names and the single-file loading path of ``generate``.
"""

from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch
from conftest import SMALL_FLAGS, SR, small_config, tone
from safetensors import safe_open

from riffmask.cli import main
from riffmask.infer.load import load_pipeline
from riffmask.train.single_file import (
    TEXT_ENCODER_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    export_single_file,
    unet_key,
    vae_key,
)


@pytest.fixture(scope="module")
def single_file(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "tiny.safetensors"
    assert main(["export", str(tiny_model_dir), str(out), "--dtype", "float32"]) == 0  # exact weights
    return out


def test_checkpoint_has_the_original_layout(single_file):
    with safe_open(str(single_file), "pt") as f:
        keys = set(f.keys())
        attention = f.get_tensor(VAE_PREFIX + "encoder.mid.attn_1.q.weight")
    assert {k.split(".", 1)[0] for k in keys} == {"model", "first_stage_model", "cond_stage_model"}
    for key in (  # names WebUIs look up; the tiny UNet has 2 blocks of 1 layer, attention in the 2nd
        UNET_PREFIX + "input_blocks.0.0.weight",
        UNET_PREFIX + "input_blocks.2.0.op.weight",
        UNET_PREFIX + "input_blocks.3.1.proj_in.weight",
        UNET_PREFIX + "middle_block.2.in_layers.0.weight",
        UNET_PREFIX + "output_blocks.1.2.conv.weight",
        UNET_PREFIX + "out.2.weight",
        VAE_PREFIX + "decoder.up.3.block.0.conv1.weight",
        VAE_PREFIX + "encoder.norm_out.weight",
        TEXT_ENCODER_PREFIX + "text_model.embeddings.position_embedding.weight",
    ):
        assert key in keys, key
    assert attention.ndim == 4 and attention.shape[-2:] == (1, 1)  # LDM's 1x1 convolution


def test_single_file_loads_back_to_the_same_pipeline(tiny_model_dir, single_file):
    folder = load_pipeline(small_config(tiny_model_dir))
    loaded = load_pipeline(small_config(single_file, single_file_config=str(tiny_model_dir)))
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(folder, name).state_dict(), getattr(loaded, name).state_dict()
        assert ours.keys() == theirs.keys(), name
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), f"{name}.{key}"
    assert type(loaded.scheduler) is type(folder.scheduler)
    assert dict(loaded.scheduler.config) == dict(folder.scheduler.config)


def test_generate_from_the_single_file_equals_the_folder(tiny_model_dir, single_file, tmp_path):
    sf.write(tmp_path / "hum.wav", tone(400, 0.5), SR)
    outs = {}
    for label, model in (("folder", []), ("file", ["--single-file-config", str(tiny_model_dir)])):
        out = tmp_path / label
        source = str(single_file if model else tiny_model_dir)
        assert main(["generate", "--model", source, *model, str(tmp_path / "hum.wav"), "--out", str(out),
                     *SMALL_FLAGS]) == 0
        outs[label] = out
        assert json.loads((out / "hum.json").read_text())["model"] == source
    for name in ("hum_output.png", "hum.wav"):
        assert (outs["folder"] / name).read_bytes() == (outs["file"] / name).read_bytes(), name


def test_half_precision_by_default(tiny_model_dir, single_file, tmp_path):
    half = export_single_file(tiny_model_dir, tmp_path / "half.safetensors")
    with safe_open(str(half), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.float16}
    assert half.stat().st_size < 0.6 * single_file.stat().st_size
    loaded = load_pipeline(small_config(half, single_file_config=str(tiny_model_dir)))  # CPU: float32
    folder = load_pipeline(small_config(tiny_model_dir))
    for name, value in folder.unet.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[name], value.half().float()), name


def test_bad_exports_say_why_and_write_nothing(tiny_model_dir, tmp_path, capsys):
    assert main(["export", str(tiny_model_dir), str(tmp_path / "model.ckpt")]) == 2
    assert "model.ckpt would hold SAFETENSORS data; give a name ending in .safetensors" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(empty), str(tmp_path / "out.safetensors")]) == 2
    assert f"{empty}: not a diffusers SD 1.x pipeline" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]  # no file, no temporary left behind
    with pytest.raises(ValueError, match="no SD 1.x checkpoint name"):
        unet_key("add_embedding.linear_1.weight", 2, set())  # an SDXL UNet
    with pytest.raises(ValueError, match="no SD 1.x checkpoint name"):
        vae_key("encoder.mid_block.attentions.1.to_q.weight", 4)


def test_an_out_that_cannot_be_written_or_is_the_models_own_is_refused_before_loading(
    tiny_model_dir, tmp_path, capsys
):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    unet = model / "unet" / "diffusion_pytorch_model.safetensors"
    vae = model / "vae" / "diffusion_pytorch_model.safetensors"
    blob = tmp_path / "blobs" / "vae.safetensors"
    blob.parent.mkdir()
    vae.rename(blob)
    vae.symlink_to(blob)  # a model linking to its weights, as a Hub cache snapshot does
    (tmp_path / "taken.safetensors").mkdir()
    (tmp_path / "afile").write_text("mine")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    refused = [
        (unet, f"OUT: {unet} is inside the model folder {model}"),
        (model / "new" / "x.safetensors", "is inside the model folder"),
        (blob, f"OUT: {blob} is a file of the model {model}"),
        (tmp_path / "taken.safetensors", f"OUT: {tmp_path / 'taken.safetensors'} is a folder"),
        (tmp_path / "afile" / "x.safetensors", f"OUT: {tmp_path / 'afile'} exists and is not a folder"),
    ]
    for out, says in refused:
        assert main(["export", str(model), str(out)]) == 2
        err = capsys.readouterr().err
        assert says in err and "Loading" not in err and "Traceback" not in err, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing written
    assert not (model / "new").exists()
    load_pipeline(small_config(model))  # the model still loads


def test_full_size_names_invert_diffusers_own_converter():
    """At Riffusion v1's size (4 blocks of 2 layers, attention in 3): diffusers' LDM -> diffusers
    converter, applied to our names, puts every parameter back in its place. The models are built on
    the meta device (no memory); each parameter is tagged by a one-element tensor of its number."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    from riffmask.train.single_file import unet_to_original, vae_to_original

    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768)  # diffusers' defaults are SD 1.x's UNet
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2)
    for model, to_original, convert in ((unet, unet_to_original, convert_ldm_unet_checkpoint),
                                        (vae, vae_to_original, convert_ldm_vae_checkpoint)):
        names = list(model.state_dict())
        tags = {k: torch.full((1,) * v.ndim, float(i)) for i, (k, v) in enumerate(model.state_dict().items())}
        back = convert(to_original(tags, dict(model.config)), dict(model.config))
        assert sorted(back) == sorted(names)
        assert {k: back[k].item() for k in names} == {k: tags[k].item() for k in names}
        assert len(names) > 240
    # diffusers' converter also accepts some misplaced names (an upsampler in either slot); WebUIs do not.
    ldm = set(unet_to_original(unet.state_dict(), dict(unet.config)))
    for name in ("input_blocks.3.0.op.weight", "input_blocks.11.0.out_layers.3.weight",
                 "input_blocks.7.1.transformer_blocks.0.attn2.to_k.weight", "middle_block.1.proj_out.weight",
                 "output_blocks.2.1.conv.weight", "output_blocks.5.2.conv.weight", "output_blocks.8.2.conv.weight",
                 "output_blocks.11.1.proj_out.weight", "output_blocks.3.0.skip_connection.weight"):
        assert UNET_PREFIX + name in ldm, name
