"""Bad and unusual input, as a new user gives it (issue 10): each case asserts its whole outcome.

The exit status; a one-line message naming the file or option (no traceback: ``main`` returns instead
of raising); nothing partial or temporary left; nothing written outside the output folder; earlier
results untouched. The kill -9 case is a real subprocess stopped at a known point.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import test_train_support as support
from conftest import SMALL_FLAGS, SR, STALLING_GENERATE, killed_when_stalled, tone
from PIL import Image

from riffmask.cli import main

prepared_dir = support.prepared_dir  # the training tests' session fixture

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *argv) -> tuple[int, str, str]:
    """``riffmask ARGV`` in this process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def one_line_error(capsys, *argv, names: str) -> str:
    """Run a command that must refuse: exit 2 with one ``error:`` line naming ``names``."""
    code, _, err = run(capsys, *argv)
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1 and names in lines[0], err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sounds(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad_input_sounds")
    sf.write(folder / "a.wav", tone(300, 0.4), SR)
    sf.write(folder / "b.wav", tone(900, 0.3), SR)
    (folder / "other").mkdir()
    sf.write(folder / "other" / "a.wav", tone(1500, 0.3), SR)  # the same stem, another sound
    return folder


def generate(model: Path, out: Path, *words) -> list[str]:
    return ["generate", "--model", model, "--out", out, *SMALL_FLAGS, *words]


# --------------------------------------------------------------------------- 1, 4: killed and concurrent runs


def test_kill_9_mid_item_then_rerun_finishes_it_and_a_second_run_meanwhile_refuses(
    tiny_model_dir, sounds, tmp_path, capsys
):
    out = tmp_path / "out"
    assert run(capsys, *generate(tiny_model_dir, out, sounds / "b.wav"))[0] == 0
    earlier = snapshot(out)
    argv = [str(a) for a in generate(tiny_model_dir, out, sounds / "a.wav")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STALL_ON": "_output.png"}
    with killed_when_stalled([sys.executable, "-c", STALLING_GENERATE, *argv], "generate: stalled", env=env, cwd=ROOT):
        # Another run into the same folder while the first one writes: refused before loading a model.
        one_line_error(capsys, *generate(tiny_model_dir, out, sounds / "b.wav", "--seed", "5"),
                       names=f"another riffmask generate is writing to {out}")  # fmt: skip
    assert {p.name for p in out.glob("a*")} == {"a_input.png", "a_mask.png"}
    assert list(out.glob(".a_output.png.*")) and (out / ".a.claim").is_file()  # the state kill -9 leaves

    code, printed, _ = run(capsys, *generate(tiny_model_dir, out, sounds / "a.wav"))
    assert code == 0 and "1 generated, 0 skipped" in printed
    assert json.loads((out / "a.json").read_text())["input"] == str((sounds / "a.wav").resolve())
    assert (out / "a.wav").is_file() and sf.info(out / "a.wav").frames == round(0.4 * SR)
    assert not list(out.glob(".*"))  # no temporary file, no claim
    assert {k: v for k, v in snapshot(out).items() if k.startswith("b")} == {
        k: v for k, v in earlier.items() if k.startswith("b")
    }  # the earlier result untouched
    assert run(capsys, *generate(tiny_model_dir, out, sounds / "a.wav"))[1].startswith("0 generated, 1 skipped")


# --------------------------------------------------------------------------- 2, 3: several runs, one folder
def test_runs_into_one_folder_keep_each_others_results_records_and_the_users_files(
    tiny_model_dir, sounds, tmp_path, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text("my: own notes\n")
    sf.write(out / "mine.wav", tone(200, 0.3), SR)  # an input inside the output folder, a user's file
    assert run(capsys, *generate(tiny_model_dir, out, sounds / "a.wav"))[0] == 0
    first = snapshot(out)
    two = [sounds / "other" / "a.wav", out / "mine.wav"]
    assert run(capsys, *generate(tiny_model_dir, out, *two, "--seed", "3"))[0] == 0
    assert run(capsys, *generate(tiny_model_dir, out, sounds / "a.wav", "--seed", "3"))[0] == 0  # other settings

    def source(name):
        return Path(json.loads((out / f"{name}.json").read_text())["input"])

    # A different input of the same stem and the same input with other settings get names of their own.
    assert source("a") == source("a_3") == (sounds / "a.wav").resolve()
    assert source("a_2") == (sounds / "other" / "a.wav").resolve() and source("mine_2") == (out / "mine.wav").resolve()
    assert json.loads((out / "a_3.json").read_text())["seed"] == 3
    first.pop("summary.json")
    assert {k: v for k, v in snapshot(out).items() if k in first} == first  # nothing of run 1 replaced
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == ["a_3"] and [r["done"] for r in summary["runs"]] == [["a"], ["a_2", "mine_2"]]
    assert summary["runs"][1]["config"]["sampling"]["seed"] == 3

    # --overwrite makes the same input's result again, never another input's.
    assert run(capsys, *generate(tiny_model_dir, out, sounds / "other" / "a.wav", "--overwrite"))[0] == 0
    assert source("a") == (sounds / "a.wav").resolve() and (out / "a.wav").read_bytes() == first["a.wav"]
    assert source("a_2") == (sounds / "other" / "a.wav").resolve()


def test_a_summary_json_riffmask_did_not_write_stops_the_run(tiny_model_dir, sounds, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"my": "data"}')
    before = snapshot(out)
    one_line_error(capsys, *generate(tiny_model_dir, out, sounds / "a.wav"), names=str(out / "summary.json"))
    assert snapshot(out) == before


def test_an_item_never_lands_on_another_items_files_or_the_folders_own(tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "col"
    folder.mkdir()
    for name, seconds in (("kettle", 0.4), ("kettle_input", 0.3), ("summary", 0.2)):
        sf.write(folder / f"{name}.wav", tone(300, seconds), SR)
    out = tmp_path / "out"
    code, printed, _ = run(capsys, *generate(tiny_model_dir, out, folder))
    # kettle's input copy is kettle_input.wav: the input kettle_input takes the next name; summary.json is the run's.
    assert code == 0 and "3 generated" in printed
    assert sorted(json.loads((out / "summary.json").read_text())["done"]) == ["kettle", "kettle_input_2", "summary_2"]
    for name, source, seconds in (("kettle", "kettle", 0.4), ("kettle_input_2", "kettle_input", 0.3),
                                  ("summary_2", "summary", 0.2)):  # fmt: skip
        sidecar = json.loads((out / f"{name}.json").read_text())
        assert sidecar["input"] == str((folder / f"{source}.wav").resolve())
        for role in ("input_audio", "output_audio"):
            assert sf.info(out / sidecar["files"][role]).frames == round(seconds * SR), (name, role)
    before = snapshot(out)
    assert run(capsys, *generate(tiny_model_dir, out, folder))[1].startswith("0 generated, 3 skipped")
    assert {k: v for k, v in snapshot(out).items() if k != "summary.json"} == {
        k: v for k, v in before.items() if k != "summary.json"
    }
    # A result whose music the user deleted is made again (the same bytes: same input, settings, seed).
    (out / "kettle.wav").unlink()
    assert run(capsys, *generate(tiny_model_dir, out, folder))[1].startswith("1 generated, 2 skipped")
    assert (out / "kettle.wav").read_bytes() == before["kettle.wav"]


def test_sweep_items_never_share_files(tmp_path):
    from riffmask.infer.files import output_names

    sources = [tmp_path / "a" / "kettle.wav", tmp_path / "kettle_input.wav", tmp_path / "b" / "kettle.wav"]
    assert list(output_names(sources).values()) == ["kettle", "kettle_input_2", "kettle_2"]


def test_a_name_whose_files_a_killed_item_claimed_is_not_given(tmp_path):
    from riffmask.common.io import write_json_atomic
    from riffmask.infer.out_folder import claim_path, plan_input, remove_temporaries

    # A killed write of item "kettle" left its claim (its sidecar-to-be) before kettle_input.wav existed.
    claim = claim_path(tmp_path, "kettle")
    write_json_atomic(claim, {"input": "/sounds/kettle.wav", "config": {}})
    names, states = plan_input(tmp_path, "kettle_input", "/sounds/kettle_input.wav", "0" * 64, [{}], False, set())
    assert names == ["kettle_input_2"] and states == ["free"]
    # Clearing item "kettle"'s temporaries leaves alone the claim of an item named "kettle.json" ...
    write_json_atomic(claim_path(tmp_path, "kettle.json"), {"input": "/sounds/kettle.json.wav", "config": {}})
    (tmp_path / ".kettle.json.abcd_123.json.tmp").write_text("{")  # ... and takes what a killed write left
    remove_temporaries(tmp_path, ["kettle.json"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kettle.claim", ".kettle.json.claim"]


# --------------------------------------------------------------------------- 8: a sidecar is data
def test_a_sidecar_sets_settings_never_outputs_inputs_or_switches(tiny_model_dir, sounds, tmp_path, capsys,
                                                                  monkeypatch):  # fmt: skip
    made = tmp_path / "made"
    assert run(capsys, *generate(tiny_model_dir, made, sounds / "a.wav", "--seed", "9"))[0] == 0
    sidecar = json.loads((made / "a.json").read_text())
    hostile = tmp_path / "downloads" / "x.json"
    hostile.parent.mkdir()
    sidecar["config"] |= {"out": str(tmp_path / "escaped"), "allow_pickle": True, "overwrite": True}
    sidecar["input"] = str(tmp_path / "secret.wav")
    sf.write(tmp_path / "secret.wav", tone(100, 0.3), SR)
    hostile.write_text(json.dumps(sidecar))
    monkeypatch.chdir(tmp_path / "downloads")

    one_line_error(capsys, "generate", "--like", hostile, names="outside the sidecar's folder")
    for relative in ("../secret.wav", "../../secret.wav"):
        hostile.write_text(json.dumps({**sidecar, "input": relative}))
        one_line_error(capsys, "generate", "--like", hostile, names="give the input on the command line")
    code, printed, _ = run(capsys, "generate", "--like", hostile, "--out", tmp_path / "again", sounds / "b.wav")
    assert code == 0 and not (tmp_path / "escaped").exists() and not (tmp_path / "downloads" / "riffmask_out").exists()
    again = json.loads((tmp_path / "again" / "b.json").read_text())
    assert again["seed"] == 9 and again["config"]["checkpoint"]["allow_pickle"] is False
    assert again["config"]["output"] == {"out": str(tmp_path / "again"), "overwrite": False, "report": False}

    # allow_pickle from a sidecar does not open the pickle door.
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"pickle bytes")
    hostile.write_text(json.dumps({**sidecar, "config": {**sidecar["config"], "model": str(ckpt)}}))
    one_line_error(capsys, "generate", "--like", hostile, "--out", tmp_path / "p", sounds / "b.wav",
                   names="--allow-pickle")  # fmt: skip
    assert not (tmp_path / "p").exists()
    # A value of the wrong type: the error names the sidecar as well as the key.
    broken = {**sidecar, "config": {**sidecar["config"], "sampling": {**sidecar["config"]["sampling"], "steps": "x"}}}
    hostile.write_text(json.dumps(broken))
    one_line_error(capsys, "generate", "--like", hostile, "--out", tmp_path / "p", sounds / "b.wav",
                   names=f"{hostile}: sampling.steps: expected int, got 'x'")  # fmt: skip


# --------------------------------------------------------------------------- 9: numbers, checked when parsed
@pytest.mark.parametrize(
    ("flag", "value", "option"),
    [
        ("--max-seconds", "nan", "max_seconds"), ("--start", "nan", "start"), ("--start", "-inf", "start"),
        ("--seed", "1e23", "seed"), ("--seed", str(2**64), "seed"), ("--seed", "-1", "seed"),
        ("--num-frequencies", "7", "num_frequencies"), ("--guidance", "-1", "guidance"),
        ("--guidance", "nan", "guidance"), ("--guidance", "inf", "guidance"), ("--brightness", "nan", "brightness"),
        ("--contrast", "inf", "contrast"), ("--invert", "5", "invert"), ("--strength", ".nan", "strength"),
    ],
)  # fmt: skip
def test_numbers_are_checked_when_options_are_parsed(flag, value, option, tmp_path, capsys):
    # A model that does not exist: the error must come from the option, before any loading.
    argv = ["generate", "--model", tmp_path / "no-model", tmp_path / "no.wav", "--out", tmp_path / "out"]
    assert option in one_line_error(capsys, *argv, f"{flag}={value}", names=option)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("flag", "value"), [("--brightness", "nan"), ("--contrast", "inf"), ("--invert", "5")])
def test_mask_numbers_are_checked(flag, value, tmp_path, capsys):
    Image.new("L", (8, 8)).save(tmp_path / "in.png")
    one_line_error(capsys, "mask", tmp_path / "in.png", tmp_path / "m.png", flag, value, names=flag[2:])
    assert not (tmp_path / "m.png").exists()


def test_train_numbers_are_checked(tmp_path, capsys):
    one_line_error(capsys, "train", "dataset=x", "learning_rate=nan", names="learning_rate")


# --------------------------------------------------------------------------- 10: tracebacks where a sentence belongs
def test_outputs_that_cannot_be_written_are_refused_before_any_work(tiny_model_dir, sounds, tmp_path, capsys):
    taken = tmp_path / "taken.txt"
    taken.write_text("a file")
    Image.new("L", (8, 8)).save(tmp_path / "in.png")
    one_line_error(capsys, *generate(tiny_model_dir, taken, sounds / "a.wav"), names=f"out: {taken} exists")
    one_line_error(capsys, "mask", tmp_path / "in.png", taken / "m.png", names=f"OUTPUT: {taken} exists")
    one_line_error(capsys, "spectrogram", sounds / "a.wav", taken / "s.png", names=f"OUT_PNG: {taken} exists")
    one_line_error(capsys, "audio", tmp_path / "in.png", taken / "s.wav", names=f"OUT_WAV: {taken} exists")
    one_line_error(capsys, "audio", tmp_path / "in.png", tmp_path, names=f"OUT_WAV: {tmp_path} is a folder")
    root = write_genres(tmp_path / "genres")
    one_line_error(capsys, *prep_words(root, taken), names=f"OUT_DIR: {taken} exists")
    assert taken.read_text() == "a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["genres", "in.png", "taken.txt"]


def test_train_output_dir_that_is_a_file(prepared_dir, tiny_model_dir, tmp_path, capsys):
    taken = tmp_path / "taken.txt"
    taken.write_text("a file")
    argv = ["train", *support.as_words(support.overrides(prepared_dir, tiny_model_dir, taken))]
    one_line_error(capsys, *argv, names=f"output_dir: {taken} exists")


def test_training_into_another_runs_folder_refuses_unless_the_same_run_or_overwrite(
    prepared_dir, tiny_model_dir, tmp_path, capsys, caplog
):
    out = tmp_path / "run"
    first = support.overrides(prepared_dir, tiny_model_dir, out, mode="lora", max_train_steps=2, checkpointing_steps=1)
    with support.one_thread():
        support.run_train(**first)
    before = snapshot(out)
    assert [p.name for p in (out / "checkpoints").iterdir()] and (out / "pytorch_lora_weights.safetensors").is_file()
    other = {**first, "learning_rate": 0.5, "checkpointing_steps": 0, "resume": "latest"}
    one_line_error(capsys, "train", *support.as_words(other), names=f"output_dir: {out} holds another training run")
    assert snapshot(out) == before  # refused before any model loaded: nothing touched

    with support.one_thread():
        code, _, _ = run(capsys, "train", *support.as_words({**other, "overwrite": "true"}))
    assert code == 0 and "resume=latest: no checkpoint" in caplog.text and "starting from scratch" in caplog.text
    assert not (out / "checkpoints").exists()  # the old run's checkpoints are gone with it
    assert [json.loads(line)["step"] for line in (out / "training_log.jsonl").read_text().splitlines()] == [1, 2]
    assert "learning_rate: 0.5" in (out / "training_config.yaml").read_text()


def test_unusable_models_devices_and_files_get_a_sentence(tiny_model_dir, sounds, tmp_path, capsys):
    import torch

    out = tmp_path / "out"
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not safetensors at all")
    suffixless = tmp_path / "model"
    suffixless.write_bytes(b"weights?")
    a = sounds / "a.wav"
    if not torch.cuda.is_available():
        one_line_error(capsys, *generate(tiny_model_dir, out, a, "--device", "cuda"), names="device: cuda")
    one_line_error(capsys, *generate(tiny_model_dir, out, a, "--device", "gpu9"), names="device: 'gpu9'")
    one_line_error(capsys, *generate(garbage, out, a), names=f"{garbage}: not a readable .safetensors file")
    one_line_error(capsys, *generate(tiny_model_dir, out, a, "--lora", garbage), names=f"{garbage}: not a readable")
    typo = tmp_path / "lorsa" / "lora.safetensors"
    one_line_error(capsys, *generate(tiny_model_dir, out, a, "--lora", typo), names=f"{typo}: no such LoRA file")
    one_line_error(capsys, *generate(suffixless, out, a), names=f"{suffixless}: not a weights file")
    assert not out.exists()
    text = tmp_path / "song.mp3"
    text.write_text("this is a text file, not a song\n" * 20)
    one_line_error(capsys, "spectrogram", text, tmp_path / "s.png", names=f"{text}: not a readable audio")
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    one_line_error(capsys, "audio", tmp_path / "dot.png", tmp_path / "dot.wav", names=f"{tmp_path / 'dot.png'}: a 1x1")
    assert not (tmp_path / "s.png").exists() and not (tmp_path / "dot.wav").exists()


# --------------------------------------------------------------------------- 11: pixels and channels
def test_a_16_bit_png_is_scaled_not_clipped(tmp_path, capsys):
    from riffmask.core.codec import load_image

    levels = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    Image.fromarray(np.round(levels / 257).astype(np.uint8)).save(tmp_path / "flat.png")  # the same, 8-bit
    image = load_image(tmp_path / "deep.png")
    assert image.mode == "L" and np.array_equal(np.asarray(image), np.asarray(load_image(tmp_path / "flat.png")))
    for name in ("deep", "flat"):
        assert run(capsys, "mask", tmp_path / f"{name}.png", tmp_path / f"{name}_mask.png")[0] == 0
    masks = [np.asarray(Image.open(tmp_path / f"{n}_mask.png")) for n in ("deep", "flat")]
    assert np.array_equal(masks[0], masks[1]) and masks[0].mean() > 50  # not the almost black mask of clipping


def test_stereo_channels_that_cancel_are_warned_about(tmp_path, caplog):
    from riffmask.core.audio import load_audio

    x = tone(440, 0.3)
    sf.write(tmp_path / "cancel.wav", np.stack([x, -x], axis=1), SR)
    sf.write(tmp_path / "wide.wav", np.stack([x, 0.5 * x], axis=1), SR)
    load_audio(tmp_path / "wide.wav")
    assert not caplog.records
    load_audio(tmp_path / "cancel.wav")
    assert "cancel.wav: the channels cancel out" in caplog.records[0].getMessage()


# --------------------------------------------------------------------------- 12, 13: batches of files
def test_fad_goes_past_a_bad_npy_and_names_a_one_file_reference(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for folder, count in (("gen", 3), ("ref", 3), ("one", 1)):
        (tmp_path / folder).mkdir()
        for k in range(count):
            np.save(tmp_path / folder / f"{folder}{k}.npy", rng.normal(size=(4 if count > 1 else 1, 8)))
    (tmp_path / "ref" / "bad.npy").write_text("not an array")
    code, printed, _ = run(capsys, "eval", "fad", tmp_path / "gen", "--reference", tmp_path / "ref",
                           "--json", tmp_path / "fad.json")  # fmt: skip
    data = json.loads((tmp_path / "fad.json").read_text())
    assert code == 1 and data["summary"]["failed"] == 1 and data["summary"]["reference_files"] == 3
    assert [r["name"] for r in data["items"] if r.get("error")] == ["bad"] and "bad.npy" in printed
    one_line_error(capsys, "eval", "fad", tmp_path / "gen", "--reference", tmp_path / "one", names="--reference")
    # Embeddings of another model's size, on either side: named and left out, the rest scored.
    np.save(tmp_path / "gen" / "wide.npy", rng.normal(size=(4, 16)))
    np.save(tmp_path / "ref" / "narrow.npy", rng.normal(size=(4, 2)))
    code, printed, _ = run(capsys, "eval", "fad", tmp_path / "gen", "--reference", tmp_path / "ref",
                           "--json", tmp_path / "fad.json")  # fmt: skip
    data = json.loads((tmp_path / "fad.json").read_text())
    assert code == 1 and data["summary"]["files"] == 3 and data["summary"]["reference_files"] == 3
    errors = {r["name"]: r["error"] for r in data["items"] if r.get("error")}
    assert errors.keys() == {"bad", "wide", "narrow"}
    assert "16-dimensional embedding, the others have 8" in errors["wide"]


def test_an_unloadable_clap_model_is_tried_once_and_says_what_to_do(sounds, tmp_path, capsys, monkeypatch):
    from riffmask.metrics.clap import ClapEmbedder

    calls = []
    real = ClapEmbedder.from_pretrained.__func__

    def counted(cls, *args, **kwargs):
        calls.append(args)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(ClapEmbedder, "from_pretrained", classmethod(counted))
    (tmp_path / "empty-model").mkdir()
    line = one_line_error(capsys, "eval", "fad", sounds, "--reference", sounds, "--clap-model",
                          tmp_path / "empty-model", names="cannot load CLAP model")  # fmt: skip
    assert len(calls) == 1 and str(tmp_path / "empty-model") in line


def test_eval_pairs_exits_1_when_an_item_failed_and_lists_every_unmatched_file(tmp_path, capsys):
    from riffmask.core.codec import audio_to_image, save_image
    from riffmask.core.params import SpectrogramParams

    image = audio_to_image(tone(440, 0.2), SpectrogramParams(num_frequencies=64))
    for side in ("in", "out"):
        save_image(image, tmp_path / side / "good.png")
    save_image(image, tmp_path / "in" / "broken.png")
    (tmp_path / "out" / "broken.png").write_bytes(b"not a png")
    save_image(image, tmp_path / "in" / "lonely.png")
    save_image(image, tmp_path / "out" / "stray.png")
    code, _, _ = run(capsys, "eval", "pairs", tmp_path / "in", tmp_path / "out", "--iterations", "2",
                     "--json", tmp_path / "r.json")  # fmt: skip
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert code == 1 and summary["failed"] == 1 and summary["n"] == 1
    assert summary["unmatched"] == [str(tmp_path / "in" / "lonely.png"), str(tmp_path / "out" / "stray.png")]


# --------------------------------------------------------------------------- 7: nothing dropped without a word
def test_a_cut_input_and_a_dangling_link_are_reported(tiny_model_dir, tmp_path, capsys, caplog):
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "long.wav", tone(300, 0.9), SR)
    (folder / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    # A download cut off after its header: the header promises 0.9 s, the file holds 8 samples.
    (folder / "cut.wav").write_bytes((folder / "long.wav").read_bytes()[:60])
    out = tmp_path / "out"
    again = folder / ".." / "in" / "long.wav"  # the same file named another way: one input, not two
    code, printed, _ = run(capsys, *generate(tiny_model_dir, out, folder, again, "--max-seconds", "0.5"))
    assert code == 1 and f"failed: {folder / 'gone.wav'}: {folder / 'gone.wav'}: a dangling symbolic link" in printed
    assert f"failed: {folder / 'cut.wav'}: {folder / 'cut.wav'}: too short: 8 samples" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == ["long"] and summary["cut"][0]["input"] == str(folder / "long.wav")
    note = json.loads((out / "long.json").read_text())["cut"]
    assert note == summary["cut"][0]["note"] and "max_seconds=0.5 s of the 0.90 s" in note and note in caplog.text
    assert sf.info(out / "long.wav").frames == round(0.5 * SR)


# --------------------------------------------------------------------------- 6, 7, 10: prep
def write_genres(root: Path) -> Path:
    for genre, name, freq in (("jazz", "a", 300), ("jazz", "b", 500), ("rock", "c", 700), ("rock", "d", 900)):
        (root / genre).mkdir(parents=True, exist_ok=True)
        sf.write(root / genre / f"{name}.wav", tone(freq, 1.6) + tone(2 * freq, 1.6, amp=0.1), SR)
    return root


def prep_words(root: Path, out: Path) -> list:
    return ["prep", root, out, "width=64", "num_frequencies=64", "validation_fraction=0.5", "png_compress_level=1"]


def test_prep_refuses_an_output_folder_inside_the_genre_root(tmp_path, capsys):
    root = write_genres(tmp_path / "genres")
    before = snapshot(root)
    one_line_error(capsys, *prep_words(root, root / "ds inside"), names="OUT_DIR")
    assert snapshot(root) == before and not (root / "ds inside").exists()


def test_prep_keeps_twins_in_one_split_rejects_bad_captions_and_decides_by_content(tmp_path, capsys):
    root = write_genres(tmp_path / "genres")
    for k in range(4):  # copies of one sound under other names: whatever their paths, one split
        (root / "rock" / f"copy{k}.wav").write_bytes((root / "jazz" / "a.wav").read_bytes())
    (root / "jazz" / "b.txt").write_bytes("caf\xe9 latin-1".encode("latin-1"))
    (root / "rock" / "c.txt").write_text("bell\x07 ring")
    (root / "rock" / "d.txt").write_text("a fine caption")
    (root / "rock" / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    out = tmp_path / "ds"
    assert run(capsys, *prep_words(root, out))[0] == 0
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) | {"split": split} for split in ("train", "validation")
            if (out / split / "metadata.jsonl").is_file()
            for line in (out / split / "metadata.jsonl").read_text().splitlines()]  # fmt: skip
    twins = {"jazz/a.wav", *(f"rock/copy{k}.wav" for k in range(4))}
    assert len({r["split"] for r in rows if r["source"] in twins}) == 1
    assert sorted(d["source"] for d in report["duplicates"]) == sorted(twins - {"jazz/a.wav"})
    assert any("same audio" in w for w in report["warnings"])
    ignored = {i["file"]: i["reason"] for i in report["ignored"]}
    assert "not UTF-8 text (byte 0xe9" in ignored["jazz/b.txt"] and "control characters" in ignored["rock/c.txt"]
    captions = {r["source"]: r["caption"] for r in rows}
    assert captions["rock/d.wav"] == "a fine caption"
    assert all("\ufffd" not in c and "\x07" not in c for c in captions.values())
    assert {"source": "rock/gone.wav", "reason": "a dangling symbolic link"} in report["rejected"]

    # Changed bytes with the same size and modification time: prepared again; the dangling link is not retried.
    path = root / "rock" / "c.wav"
    stat = path.stat()
    sf.write(path, tone(1100, 1.6), SR)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert run(capsys, *prep_words(root, out))[0] == 0
    assert json.loads((out / "report.json").read_text())["run"]["files_prepared"] == 1


def test_a_prep_manifest_naming_files_outside_the_output_is_not_trusted(tmp_path, capsys):
    root = write_genres(tmp_path / "genres")
    out = tmp_path / "ds"
    assert run(capsys, *prep_words(root, out))[0] == 0
    secret = tmp_path / "secret.png"
    Image.new("RGB", (64, 64), "red").save(secret)
    manifest = next((out / ".riffmask" / "sources").iterdir())
    data = json.loads(manifest.read_text())
    data["clips"][0]["image"] = str(secret)
    manifest.write_text(json.dumps(data))
    assert run(capsys, *prep_words(root, out))[0] == 0  # the file is prepared again, from its audio
    assert json.loads((out / "report.json").read_text())["run"]["files_prepared"] == 1
    assert str(secret) not in manifest.read_text()


# --------------------------------------------------------------------------- 12: one-shot commands
def test_one_shot_commands_never_replace_their_inputs_or_misname_an_output(tmp_path, capsys):
    sf.write(tmp_path / "x.wav", tone(440, 0.3), SR)
    assert run(capsys, "spectrogram", tmp_path / "x.wav", tmp_path / "g.png")[0] == 0
    (tmp_path / "link.png").symlink_to(tmp_path / "g.png")
    os.link(tmp_path / "g.png", tmp_path / "hard.png")
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "w.safetensors").write_bytes(b"weights")
    before = snapshot(tmp_path)
    x, g, m = tmp_path / "x.wav", tmp_path / "g.png", tmp_path / "m.png"
    for argv, names in [
        (["spectrogram", x, x], f"OUT_PNG: {x} would hold PNG data; give a name ending in .png"),
        (["audio", g, g], f"OUT_WAV: {g} would hold WAV data; give a name ending in .wav"),
        (["audio", g, tmp_path / "y.png"], "OUT_WAV"),
        (["mask", g, g], f"OUTPUT: {g} would replace INPUT ({g})"),
        (["mask", g, tmp_path / "link.png"], "would replace INPUT"),
        (["mask", g, tmp_path / "hard.png"], "would replace INPUT"),
        (["mask", g, m, "--steps-image", g], f"--steps-image: {g} would replace INPUT"),
        (["mask", g, m, "--steps-image", m], f"--steps-image: {m} would replace OUTPUT"),
        (["export", tmp_path / "pipe", tmp_path / "pipe" / "w.safetensors"], "is inside the model folder"),
    ]:
        one_line_error(capsys, *argv, names=names)
    assert snapshot(tmp_path) == before


def usage_error(capsys, *argv) -> str:
    """Run a command line argparse refuses (exit status 2); its last line."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


def test_names_with_equals_signs_are_files_unless_their_key_is_an_option(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("take=1.wav", "duration=2.wav"):
        sf.write(tmp_path / name, tone(440, 0.3), SR)
    take = tmp_path / "take=1.wav"
    assert run(capsys, "spectrogram", "take=1.wav", "o=1.png")[0] == 0 and (tmp_path / "o=1.png").is_file()
    # A word whose key is an option is one; after -- it is a file; an unknown key where no file belongs is named.
    error = usage_error(capsys, "spectrogram", "duration=2.wav", "d.png")
    assert "required: OUT_PNG (duration=2.wav: read as key=value" in error
    assert run(capsys, "spectrogram", "--", "duration=2.wav", "d.png")[0] == 0
    one_line_error(capsys, "spectrogram", take, tmp_path / "e.png", "foo=3", names="unknown config key 'foo'")
    argv = ["generate", "--model", tmp_path / "no-model", take, "strenght=0.5", "--out", tmp_path / "out"]
    one_line_error(capsys, *argv, names="unknown config key 'strenght' in the command line; did you mean 'strength'?")
    error = usage_error(capsys, "export", tmp_path / "no-model", tmp_path / "m.safetensors", "dtype=float32")
    assert "unrecognized arguments: dtype=float32" in error  # no longer ignored without a word
    (tmp_path / "G=1" / "jazz").mkdir(parents=True)
    sf.write(tmp_path / "G=1" / "jazz" / "a.wav", tone(440, 3.0), SR)
    code, out, _ = run(capsys, "prep", tmp_path / "G=1", tmp_path / "P", "--dry-run")
    assert code == 0 and "1 files found" in out and "1 to prepare" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["G=1", "d.png", "duration=2.wav", "o=1.png", "take=1.wav"]


def test_spectrogram_takes_its_options_as_key_value_and_refuses_what_it_cannot_use(tmp_path, capsys):
    from riffmask.core.audio import AudioError, load_audio
    from riffmask.core.codec import stored_max_volume

    wav, png = tmp_path / "x.wav", tmp_path / "x.png"
    sf.write(wav, tone(440, 2.0), SR)
    words = ["duration=1", "spectrogram_mode=riffusion", "num_frequencies=64"]
    assert run(capsys, "spectrogram", wav, png, *words)[0] == 0
    image = Image.open(png)
    assert image.size == (101, 64) and stored_max_volume(image) != int(stored_max_volume(image))  # not rounded up
    one_line_error(capsys, "spectrogram", wav, png, "mode=riffusion", names="unknown config key 'mode'")
    for words, option in (
        (["--duration", "nan"], "duration"), (["--start", "inf"], "start"), (["duration=inf"], "duration"),
        (["--start", "-1"], "start"),
    ):  # fmt: skip
        one_line_error(capsys, "spectrogram", wav, tmp_path / "n.png", *words, names=option)
    for start, duration in ((float("nan"), None), (0.0, float("inf")), (float("inf"), 1.0)):
        with pytest.raises(AudioError, match="invalid range"):
            load_audio(wav, start=start, duration=duration)
    assert not (tmp_path / "n.png").exists()


def test_spectrogram_refuses_less_than_one_hop_and_a_folder(tmp_path, capsys):
    sf.write(tmp_path / "x.wav", tone(440, 2.0), SR)
    sf.write(tmp_path / "dot.wav", tone(440, 28 / SR), SR)
    sf.write(tmp_path / "hop.wav", tone(440, 441 / SR), SR)
    (tmp_path / "dir.wav").mkdir()
    short = "too short: 44 samples from start=1.999 s; a spectrogram needs at least 441 samples (10 ms)"
    one_line_error(capsys, "spectrogram", tmp_path / "x.wav", tmp_path / "s.png", "--start", "1.999", names=short)
    one_line_error(capsys, "spectrogram", tmp_path / "dot.wav", tmp_path / "s.png", names="too short: 28 samples")
    one_line_error(capsys, "spectrogram", tmp_path / "dir.wav", tmp_path / "s.png",
                   names=f"{tmp_path / 'dir.wav'}: is a folder, not an audio file")  # fmt: skip
    assert not (tmp_path / "s.png").exists()
    # The shortest clip spectrogram accepts is one riffmask audio decodes.
    assert run(capsys, "spectrogram", tmp_path / "hop.wav", tmp_path / "s.png")[0] == 0
    assert Image.open(tmp_path / "s.png").width == 2
    assert run(capsys, "audio", tmp_path / "s.png", tmp_path / "s.wav", "iterations=1")[0] == 0
    assert sf.info(tmp_path / "s.wav").frames == 441


@pytest.mark.parametrize(
    ("tag", "value", "name"),
    [
        (11000, 0, "sample_rate"), (11000, "abc", "sample_rate"), (11000, -44100, "sample_rate"),
        (11000, 1e9, "sample_rate"), (11010, 0, "step_ms"), (11030, 50, "padded_ms"), (11060, 30000.0, "max_hz"),
        (11070, 0, "power_for_image"), (11080, -5.0, "max_value"), (11080, float("nan"), "max_value"),
    ],
)  # fmt: skip
def test_exif_values_outside_the_format_are_named(tag, value, name, tmp_path, capsys):
    png = tmp_path / "odd.png"
    image = Image.new("RGB", (4, 8))
    exif = image.getexif()
    exif[11040] = 8  # mel bands: the image's height
    exif[tag] = value
    image.save(png, exif=exif)
    error = one_line_error(capsys, "audio", png, tmp_path / "odd.wav", names=f"{png}: EXIF tag {tag} ({name}) = ")
    assert "is not a valid spectrogram format" in error and not (tmp_path / "odd.wav").exists()
