"""Training config validation and the pure pieces of the recipe (no model is loaded here)."""

from __future__ import annotations

import pytest
import torch

from riffmask.cli import main as riffmask_main
from riffmask.common.config import ConfigError, find_config, load_config
from riffmask.train import checkpoint, data
from riffmask.train.config import TrainConfig
from riffmask.train.models import fit_deepspeed
from riffmask.train.schedule import Phase, Schedule, lr_factor

RECIPES = ("t4_full_8bit", "t4_lora", "a100_full", "cpu_smoke", "cpu_genre")


def _prepared_stub(folder):
    folder.mkdir()
    (folder / "dataset_dict.json").write_text('{"splits": ["train", "validation"]}')
    return folder


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["learning_rat=0.1"], "unknown config key 'learning_rat'"),
        (["resolution=500"], "resolution: 500 is not a positive multiple of 8"),
        (["dataset=/nonexistent/prep"], "dataset folder '/nonexistent/prep' does not exist"),
        (["text_encoder_steps=3"], "train_text_encoder is false"),
        (["mode=dora"], "mode: 'dora' is not one of"),
        (["validation_sounds=[/no/kettle.wav]"], "validation_sounds: /no/kettle.wav not found"),
    ],
)
def test_bad_configs_are_rejected_before_any_model_loads(tmp_path, capsys, words, message):
    dataset = _prepared_stub(tmp_path / "prep")
    # The model path does not exist: reaching the model loader would give a different error.
    argv = ["train", "--config", "cpu_smoke", f"dataset={dataset}", "pretrained_model_name_or_path=/no/model",
            f"output_dir={tmp_path / 'out'}", *words]
    assert riffmask_main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_not_a_prepared_dataset_is_named(tmp_path):
    (tmp_path / "songs").mkdir()
    with pytest.raises(ConfigError, match="not a dataset written by `riffmask prep`"):
        load_config(TrainConfig, "cpu_smoke", [f"dataset={tmp_path / 'songs'}"])


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_load(tmp_path, recipe):
    dataset = _prepared_stub(tmp_path / "prep")
    cfg = load_config(TrainConfig, find_config(recipe, "train"), [f"dataset={dataset}"])
    assert cfg.resolution % 8 == 0


def test_a_preset_of_another_command_names_the_right_command(tmp_path, capsys):
    dataset = _prepared_stub(tmp_path / "prep")
    assert riffmask_main(["train", "--config", "paper", f"dataset={dataset}"]) == 2
    assert "'paper' is a preset of `riffmask generate`, not of `riffmask train`" in capsys.readouterr().err


def test_t4_full_recipe_is_the_papers_schedule(tmp_path):
    cfg = load_config(TrainConfig, "t4_full_8bit", [f"dataset={_prepared_stub(tmp_path / 'prep')}"])
    assert (cfg.optimizer, cfg.mixed_precision, cfg.train_batch_size) == ("adamw8bit", "fp16", 1)
    assert cfg.train_text_encoder and cfg.text_encoder_steps > 0
    assert cfg.text_encoder_learning_rate == pytest.approx(1e-6) and cfg.learning_rate == pytest.approx(2e-6)


def test_captions_from_dataset_template_or_single_prompt():
    rows = [{"caption": "lofi beat", "genre": "lofi"}, {"caption": "jazz trio", "genre": "jazz"}]
    assert data.captions_for(rows, "dataset", "", "") == ["lofi beat", "jazz trio"]
    assert data.captions_for(rows, "template", "a sks {genre} song", "") == ["a sks lofi song", "a sks jazz song"]
    assert data.captions_for(rows, "instance_prompt", "", "a sks song") == ["a sks song"] * 2


def test_text_encoder_first_schedule_and_learning_rates():
    s = Schedule(max_train_steps=10, train_text_encoder=True, text_encoder_steps=4)
    assert [s.phase(i) for i in (0, 3, 4, 9)] == [Phase(False, True)] * 2 + [Phase(True, False)] * 2
    assert s.span("text_encoder") == (0, 4) and s.span("unet") == (4, 10)
    assert Schedule(10, True, 0).phase(5) == Phase(True, True)
    assert lr_factor(3, 4, 10, "constant", 0) == 0.0 and lr_factor(4, 4, 10, "constant", 0) == 1.0
    assert lr_factor(4, 4, 10, "linear", 0) == 1.0 and lr_factor(9, 4, 10, "linear", 0) == pytest.approx(1 / 6)
    assert lr_factor(0, 0, 10, "constant_with_warmup", 3) == pytest.approx(0.25)
    assert lr_factor(10, 0, 10, "cosine", 0) == 0.0


def test_sample_stream_is_a_pure_function_shared_by_any_process_split():
    # One process with batch 2 sees exactly the positions that two processes with batch 1 see together.
    one = [list(data.batch_positions(m, 2, 0, 1)) for m in range(3)]
    two = [list(data.batch_positions(m, 1, 0, 2)) + list(data.batch_positions(m, 1, 1, 2)) for m in range(3)]
    assert one == two == [[0, 1], [2, 3], [4, 5]]
    order = [data.clip_index(q, 5, seed=7, stream=data.INSTANCE) for q in range(10)]
    assert sorted(order[:5]) == list(range(5)) and sorted(order[5:]) == list(range(5))  # each epoch covers all
    assert order != [data.clip_index(q, 5, seed=8, stream=data.INSTANCE) for q in range(10)]
    cache = data.ClipCache(torch.randn(5, 8, 2, 2), torch.arange(5), ["c"], torch.zeros(1, 3, dtype=torch.long))
    a = data.make_batch(cache, [3, 4], seed=1, stream=0, scaling_factor=0.5, num_train_timesteps=1000)
    b = data.make_batch(cache, [3, 4], seed=1, stream=0, scaling_factor=0.5, num_train_timesteps=1000)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.noise, b.noise) and torch.equal(a.timesteps, b.timesteps)


def test_latest_ignores_a_half_written_checkpoint(tmp_path):
    for step in (2, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / ".tmp-checkpoint-12").mkdir()  # a crash while saving step 12
    assert checkpoint.resolve_resume("latest", tmp_path) == tmp_path / "checkpoint-10"
    assert checkpoint.resolve_resume("latest", tmp_path / "none") is None
    with pytest.raises(ConfigError, match="not a checkpoint folder"):
        checkpoint.resolve_resume(str(tmp_path / ".tmp-checkpoint-12"), tmp_path)


def test_resume_from_a_checkpoint_of_other_data_is_refused_before_models_load(tmp_path, capsys):
    dataset = _prepared_stub(tmp_path / "prep")
    ckpt = tmp_path / "checkpoint-4"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text('{"step": 4, "dataset_fingerprint": "of-another-dataset"}')
    argv = ["train", "--config", "cpu_smoke", f"dataset={dataset}", "pretrained_model_name_or_path=/no/model",
            f"output_dir={tmp_path / 'out'}", f"resume={ckpt}"]
    assert riffmask_main(argv) == 2
    assert "was trained on different data" in capsys.readouterr().err


def _bundled_zero2_plugin():
    """accelerate's DeepSpeed plugin as `accelerate launch` builds it from the bundled ZeRO-2 config."""
    from accelerate.utils import DeepSpeedPlugin

    from riffmask.common.config import read_yaml

    bundled = read_yaml(find_config("deepspeed_zero2", "accelerate"))["deepspeed_config"]
    return DeepSpeedPlugin(**bundled)


def test_deepspeed_follows_the_recipes_batch_accumulation_and_clipping(tmp_path):
    cfg = load_config(TrainConfig, "cpu_smoke", [f"dataset={_prepared_stub(tmp_path / 'prep')}", "train_batch_size=2",
                                                 "gradient_accumulation_steps=3", "max_grad_norm=0.5"])
    plugin = _bundled_zero2_plugin()
    assert fit_deepspeed(plugin, cfg, num_processes=4)  # the bundled config offloads the optimizer
    ds = plugin.deepspeed_config
    sizes = ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]
    assert sizes == (2, 3, 24)
    assert ds["gradient_clipping"] == 0.5
    # accelerate would replace the optimizer by a CPU Adam of its own, without the recipe's betas and epsilon
    assert ds["zero_force_ds_cpu_optimizer"] is False


def test_deepspeed_offload_refuses_an_8bit_optimizer_before_models_load(tmp_path):
    cfg = load_config(TrainConfig, "t4_lora", [f"dataset={_prepared_stub(tmp_path / 'prep')}", "optimizer=adamw8bit"])
    with pytest.raises(ConfigError, match="optimizer: adamw8bit does not combine with DeepSpeed's optimizer offload"):
        fit_deepspeed(_bundled_zero2_plugin(), cfg, num_processes=1)


def test_a_run_that_fails_before_writing_leaves_no_empty_output_folder(tmp_path, capsys):
    dataset = _prepared_stub(tmp_path / "prep")
    argv = ["train", "--config", "cpu_smoke", f"dataset={dataset}", "pretrained_model_name_or_path=/no/model",
            f"output_dir={tmp_path / 'out'}"]
    assert riffmask_main(argv) == 2
    assert "cannot load '/no/model'" in capsys.readouterr().err  # failed after the output folder was checked
    assert not (tmp_path / "out").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made stays
    assert riffmask_main([*argv[:-1], f"output_dir={tmp_path / 'mine'}"]) == 2
    assert (tmp_path / "mine").is_dir()
