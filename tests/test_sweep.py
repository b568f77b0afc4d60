"""The sweep on the tiny pipeline: every combination, CSV, plots, ablation statistics, resuming."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import small_config, tone
from PIL import Image

from riffmask.cli import main
from riffmask.core.audio import load_audio, write_wav
from riffmask.metrics import stats, sweep
from riffmask.metrics.results import read_csv, write_csv

# A 64 x 64 spectrogram, a few steps, quick decodes: the tiny model's scale.
SMALL = ["window=64", "overlap=0", "num_frequencies=64", "steps=2", "guidance=1.0", "iterations=2", "device=cpu"]



def test_values_expand_series_and_keep_the_last_value():
    assert sweep.parse_values("0,20,...,255", int) == [0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200, 220, 240, 255]
    assert sweep.parse_values("0,50,...,100", int) == [0, 50, 100]
    assert sweep.parse_values("0.5, 0.8", float) == [0.5, 0.8]
    with pytest.raises(ValueError, match="a,b,...,z"):
        sweep.parse_values("...,5")
    for series in ("10,20,...,0", "0,20,...,10"):  # the end must lie at or beyond the second value
        with pytest.raises(ValueError, match="never reaches"):
            sweep.parse_values(series, int)
    bad = (("0,a", int, "a"), ("0,0.5", int, "0.5"), ("0,0.5,...,2", int, "0.5"), ("1,nan", float, "nan"))
    for text, kind, word in bad:
        with pytest.raises(ValueError, match=f"'{word}' is not"):
            sweep.parse_values(text, kind)


@pytest.mark.parametrize(("flag", "values", "says"), [
    ("--downshift", "0,300", "downshift: a grey level 0-255"),
    ("--strength", "0,0.5", "strength: must be in (0, 1]"),
    ("--downshift", "0,1e9", "--downshift: '1e9' is not an integer"),
    ("--seeds", "1,x", "--seeds: 'x' is not an integer"),
])  # fmt: skip
def test_every_swept_value_is_checked_before_the_folder_or_the_model(flag, values, says, tmp_path, capsys):
    write_wav(tmp_path / "a.wav", tone(300.0, 0.2))
    argv = ["sweep", str(tmp_path / "a.wav"), "--model", str(tmp_path / "no-model"), flag, values]
    assert main([*argv, "--out", str(tmp_path / "o"), *SMALL]) == 2
    err = capsys.readouterr().err
    assert says in err and "no-model" not in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_grid_crosses_axes_and_ablation_variants():
    combos = sweep.grid({"downshift": [0, 255], "seed": [1, 2]}, ablation=True)
    assert len(combos) == 12 and combos[0] == {"downshift": 0, "seed": 1, "variant": "all steps"}
    assert len({sweep.combination_id(c) for c in combos}) == 12


def test_paired_comparison_matches_its_definition():
    a, b = [0.40, 0.45, 0.50, 0.42], [0.50, 0.52, 0.61, 0.47]
    got = stats.paired_comparison(a, b)
    diff = np.subtract(b, a)
    t = diff.mean() / (diff.std(ddof=1) / math.sqrt(len(diff)))
    assert got["t"] == pytest.approx(t) and got["cohens_d"] == pytest.approx(diff.mean() / diff.std(ddof=1))
    assert 0 < got["p"] < 0.05 and got["n"] == 4


def test_sweep_cli_generates_scores_plots_and_resumes(tmp_path, tiny_model_dir, capsys):
    write_wav(tmp_path / "in" / "kettle.wav", tone(500.0, 0.3))
    (tmp_path / "in" / "notes.wav").write_bytes(b"RIFF junk")  # unreadable: reported, the sweep goes on
    out = tmp_path / "sweep"
    argv = ["sweep", str(tmp_path / "in"), "--model", str(tiny_model_dir), "--prompt", "ambient, saxophone"]
    argv += ["--out", str(out), "--chroma-iterations", "2", "--ablation", *SMALL]
    assert main([*argv, "--downshift", "0,255"]) == 0
    rows = read_csv(out / "sweep.csv")
    errors = [r for r in rows if r["error"]]
    rows = [r for r in rows if not r["error"]]
    assert len(rows) == 2 * 3 and len(errors) == 2 * 3 and "notes.wav" in errors[0]["error"]
    assert all(0 < r["ssim"] <= 1 and -1 <= r["chroma"] <= 1 for r in rows)
    assert {r["variant"] for r in rows} == {"all steps", "no brightness", "no contrast"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ablation"]["no contrast"]["ssim"]["n"] == 2  # 2 downshifts, paired
    points = summary["by_value"]["downshift"]["ssim"]
    assert [p["value"] for p in points] == [0, 255] and all(p["n"] == 1 for p in points)
    for plot in ("sweep_downshift.png", "ablation.png"):
        with Image.open(out / plot) as image:
            assert image.width > 300 and len(np.unique(np.asarray(image.convert("L")))) > 10
    item = out / "items" / "downshift_0_variant_all-steps"
    assert {p.name for p in item.iterdir()} == {
        f"kettle{s}" for s in (".json", "_output.png", ".wav", "_mask.png", "_input.png", "_input.wav")
    }
    page = (out / "report.html").read_text()
    assert page.count("<audio") >= 2 and page.count('src="data:image/png') >= 3
    # An interrupted sweep: the CSV lost one combination. Only that one is made again.
    lost = "downshift_255_variant_no-contrast"
    write_csv(out / "sweep.csv", [r for r in read_csv(out / "sweep.csv") if r["combination"] != lost])
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*_output.png")}
    assert main([*argv, "--downshift", "0,255"]) == 0
    assert len([r for r in read_csv(out / "sweep.csv") if not r["error"]]) == 2 * 3
    changed = {p.parent.name for p, t in stamps.items() if p.stat().st_mtime_ns != t}
    assert changed == {lost}
    assert "report:" in capsys.readouterr().out


def test_sweep_needs_something_to_sweep(tmp_path, tiny_model_dir, capsys):
    write_wav(tmp_path / "a.wav", tone(300.0, 0.2))
    assert main(["sweep", str(tmp_path / "a.wav"), "--model", str(tiny_model_dir), "--out", str(tmp_path / "o")]) == 2
    assert "nothing to sweep" in capsys.readouterr().err


def test_a_model_that_cannot_load_stops_the_sweep(tmp_path, capsys):
    write_wav(tmp_path / "a.wav", tone(300.0, 0.2))
    argv = ["sweep", str(tmp_path / "a.wav"), "--model", str(tmp_path / "no-model"), "--downshift", "0,255"]
    assert main([*argv, "--out", str(tmp_path / "o"), *SMALL]) == 2
    assert "no-model" in capsys.readouterr().err and not (tmp_path / "o" / "sweep.csv").exists()


def test_a_sweep_folder_takes_back_only_rows_of_the_same_inputs_and_settings(tmp_path, tiny_model_dir, capsys):
    write_wav(tmp_path / "in" / "kettle.wav", tone(500.0, 0.3))
    write_wav(tmp_path / "other" / "kettle.wav", tone(900.0, 0.3))  # the same stem, another sound
    out = tmp_path / "sweep"

    def sweep_of(source, model=tiny_model_dir):
        argv = ["sweep", str(source), "--model", str(model), "--prompt", "ambient", "--downshift", "0,255"]
        code = main([*argv, "--out", str(out), "--no-save", "--chroma-iterations", "2", *SMALL])
        return code, capsys.readouterr().err

    assert sweep_of(tmp_path / "in" / "kettle.wav")[0] == 0
    table = (out / "sweep.csv").read_bytes()
    assert {r["input_file"] for r in read_csv(out / "sweep.csv")} == {str((tmp_path / "in" / "kettle.wav").resolve())}
    # Another model (not even loadable: refused before loading), another file of that name, other content.
    code, err = sweep_of(tmp_path / "in" / "kettle.wav", model=tmp_path / "no-model")
    assert code == 2 and "made with other settings (another model" in err and "no-model" not in err
    code, err = sweep_of(tmp_path / "other" / "kettle.wav")
    assert code == 2 and f"rows of kettle were made from {(tmp_path / 'in' / 'kettle.wav').resolve()}, not" in err
    assert (out / "sweep.csv").read_bytes() == table
    write_wav(tmp_path / "in" / "kettle.wav", tone(600.0, 0.3))
    code, err = sweep_of(tmp_path / "in" / "kettle.wav")
    assert code == 2 and "made from other content of it" in err and (out / "sweep.csv").read_bytes() == table


def test_sweep_of_several_prompts_rates_the_genre(tmp_path, tiny_model_dir):
    """With two prompts, each output is classified among them: ``genre`` against ``input_genre``."""
    write_wav(tmp_path / "in" / "kettle.wav", tone(500.0, 0.3))
    out = tmp_path / "sweep"
    argv = ["sweep", str(tmp_path / "in"), "--model", str(tiny_model_dir), "--prompt", "[ambient, chiptune]"]
    assert main([*argv, "--out", str(out), "--chroma-iterations", "2", "--downshift", "0,255", *SMALL]) == 0
    rows = read_csv(out / "sweep.csv")
    assert len(rows) == 4 and {r["prompt"] for r in rows} == {"ambient", "chiptune"}
    assert all(r["genre"] in (0, 1) and r["input_genre"] in (0, 1) for r in rows)
    # the input reads as exactly one of the two prompts
    assert sum(r["input_genre"] for r in rows if r["downshift"] == 0) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert [p["value"] for p in summary["by_value"]["downshift"]["genre"]] == [0, 255]
    assert 0 <= summary["genre_mean"] <= 1


def test_the_genre_rate_reads_the_output_latent_and_ssim_vae_the_vae_round_trip(tiny_model_dir, tmp_path):
    """The genre of an output is the classification of the latent the pipeline made, not of its decoded
    image encoded again: the tiny model's random VAE does not give that latent back."""
    import torch

    from riffmask.core.decode import DecodeConfig
    from riffmask.infer.generate import generate_sound
    from riffmask.infer.load import load_pipeline
    from riffmask.metrics.genre import GenreRater
    from riffmask.metrics.similarity import ssim

    cfg = small_config(tiny_model_dir, prompt=["ambient", "saxophone"], guidance=1.0)
    pipe = load_pipeline(cfg)
    write_wav(tmp_path / "kettle.wav", tone(500.0, 0.3))
    audio = load_audio(tmp_path / "kettle.wav")  # as the sweep reads it
    rows = sweep.run_sweep(cfg, [tmp_path / "kettle.wav"], {"downshift": [0, 255]}, tmp_path / "out",
                           chroma_decode=DecodeConfig(iterations=2, phase_start="random"), save_items=False, pipe=pipe)
    rater, misread = GenreRater(pipe, cfg.sampling.prompt), 0
    for row in rows:
        (gen,) = generate_sound(pipe, audio, sweep._config_for(cfg, {"downshift": row["downshift"]}, row["prompt"]))
        assert row["genre"] == float(rater.classify(gen.latent) == row["prompt"])
        assert row["input_genre"] == float(rater.classify(rater.image_latent(gen.input_image)) == row["prompt"])
        assert row["ssim"] == pytest.approx(ssim(gen.input_image, gen.output_image))
        assert row["ssim_vae"] == pytest.approx(ssim(sweep.vae_round_trip(pipe, gen.input_image), gen.output_image))
        again = rater.image_latent(gen.output_image)
        assert torch.linalg.norm(again - gen.latent) > 0.5 * torch.linalg.norm(gen.latent)  # not the same latent
        misread += rater.classify(again) != rater.classify(gen.latent)
    assert misread  # here the decoded image, encoded again, reads as another prompt than the latent did
