"""SSIM and chroma similarity against direct scikit-image / librosa calls, folder pairing, CLI."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
from conftest import SR, tone
from skimage.metrics import structural_similarity

from riffmask.cli import main
from riffmask.core.audio import write_wav
from riffmask.core.codec import audio_to_image, save_image
from riffmask.core.decode import DecodeConfig, image_to_audio
from riffmask.core.params import PAPER_DECODE_MAX_VOLUME, ExifTags, SpectrogramParams
from riffmask.metrics import results, similarity
from riffmask.metrics.pairs import evaluate_pairs, find_pairs, generation_pairs

SMALL = SpectrogramParams(num_frequencies=64)



N_ITER = 3
RANDOM = DecodeConfig(iterations=N_ITER, phase_start="random")  # the paper's decoding, fewer iterations


def chord(freqs, seconds=0.4, noise=0.0, seed=0):
    audio = sum(tone(f, seconds, amp=0.3) for f in freqs)
    if noise:
        audio = audio + noise * np.random.default_rng(seed).standard_normal(audio.shape).astype(np.float32)
    return audio.astype(np.float32)


@pytest.fixture
def image_pair():
    """Two 64-band spectrogram images of different chords: an 'input' and an 'output'."""
    return audio_to_image(chord([220, 277]), SMALL), audio_to_image(chord([330, 415], noise=0.05), SMALL)


def test_ssim_equals_skimage_on_grey_images(image_pair):
    a, b = image_pair
    grey_a, grey_b = np.asarray(a)[..., 0], np.asarray(b)[..., 0]  # grey images: R = G = B
    expected = structural_similarity(grey_a, grey_b, data_range=255)
    assert similarity.ssim(a, b) == pytest.approx(expected, abs=1e-12)
    assert similarity.ssim(a, a) == pytest.approx(1.0)
    assert similarity.ssim(a, b) < 0.99


def test_ssim_rejects_images_of_different_size(image_pair):
    a, _ = image_pair
    with pytest.raises(ValueError, match="differ in size"):
        similarity.ssim(a, a.crop((0, 0, a.width - 4, a.height)))


def test_chroma_equals_librosa_on_both_reconstructions(image_pair):
    a, b = image_pair
    ya = image_to_audio(a, RANDOM, max_volume=50.0, seed=0)
    yb = image_to_audio(b, RANDOM, max_volume=50.0, seed=0)
    ca, cb = librosa.feature.chroma_cens(y=ya, sr=SR).ravel(), librosa.feature.chroma_cens(y=yb, sr=SR).ravel()
    expected = float(ca @ cb / (np.linalg.norm(ca) * np.linalg.norm(cb)))
    got = similarity.pair_metrics(a, b, RANDOM)
    assert got["chroma"] == pytest.approx(expected, rel=1e-6)
    assert got["ssim"] == pytest.approx(similarity.ssim(a, b))
    assert similarity.chroma_similarity(ya, ya) == pytest.approx(1.0)


def test_both_images_decode_with_the_papers_fixed_max_volume(image_pair):
    a, _ = image_pair
    louder = a.copy()
    exif = louder.getexif()
    exif[ExifTags.MAX_VALUE] = 4.0 * float(exif[ExifTags.MAX_VALUE])  # what the codec alone would use
    louder.info["exif"] = exif.tobytes()
    expected = image_to_audio(a, RANDOM, max_volume=PAPER_DECODE_MAX_VOLUME, seed=0)
    np.testing.assert_allclose(similarity.decode(louder, RANDOM), expected, rtol=1e-5, atol=1e-6)


def test_cosine_of_an_all_zero_vector_is_zero():
    assert similarity.cosine(np.zeros(12), np.ones(12)) == 0.0
    assert similarity.cosine(np.arange(4.0), np.arange(4.0)) == pytest.approx(1.0)


def test_folder_pairs_match_names_and_suffixes(tmp_path, image_pair):
    a, b = image_pair
    src, dst = tmp_path / "in", tmp_path / "out"
    save_image(a, src / "x_input.png")
    save_image(b, dst / "x_output.png")
    write_wav(src / "y.wav", chord([440], seconds=0.2))
    write_wav(dst / "y.wav", chord([440], seconds=0.25, noise=0.01))  # longer: cut to the shorter
    save_image(a, src / "lonely.png")
    (dst / "notes.txt").write_text("not audio")
    pairs, unmatched = find_pairs(src, dst)
    assert [p.name for p in pairs] == ["x", "y"] and unmatched == [src / "lonely.png"]
    rows, summary = evaluate_pairs(pairs, RANDOM, params=SMALL)
    assert [r["error"] for r in rows] == ["", ""]
    assert rows[0]["ssim"] == pytest.approx(similarity.ssim(a, b))
    assert 0.0 < rows[1]["ssim"] <= 1.0 and summary["n"] == 2 and summary["failed"] == 0


def test_a_bad_pair_is_reported_and_the_batch_goes_on(tmp_path, image_pair):
    a, b = image_pair
    src, dst = tmp_path / "in", tmp_path / "out"
    save_image(a, src / "good.png")
    save_image(b, dst / "good.png")
    save_image(a, src / "small.png")
    save_image(b.crop((0, 0, 20, b.height)), dst / "small.png")
    save_image(a, src / "broken.png")
    (dst / "broken.png").write_bytes(b"not a png")
    rows, summary = evaluate_pairs(find_pairs(src, dst)[0], RANDOM)
    errors = {r["name"]: r["error"] for r in rows}
    assert errors["good"] == "" and "differ in size" in errors["small"] and "broken.png" in errors["broken"]
    assert summary == {**summary, "n": 1, "failed": 2}


def test_generation_folder_pairs_come_from_sidecars(tmp_path, image_pair):
    a, b = image_pair
    save_image(a, tmp_path / "clip_input.png")
    save_image(b, tmp_path / "clip_output.png")
    files = {"input_image": "clip_input.png", "output_image": "clip_output.png"}
    (tmp_path / "clip.json").write_text(json.dumps({"seed": 1, "files": files}))
    (tmp_path / "evil.json").write_text(json.dumps({"files": {"input_image": "../../etc/passwd", "output_image": "x"}}))
    pairs = generation_pairs(tmp_path)
    assert [(p.name, p.input_path.name, p.output_path.name) for p in pairs] == [
        ("clip", "clip_input.png", "clip_output.png")
    ]
    # One folder on the command line: a generation output, paired through its sidecars.
    assert main(["eval", "pairs", str(tmp_path), "--iterations", str(N_ITER), "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["items"][0]["ssim"] == pytest.approx(similarity.ssim(a, b))


def test_eval_pairs_cli_prints_and_writes_csv_json_report(tmp_path, image_pair, capsys):
    a, b = image_pair
    save_image(a, tmp_path / "in" / "k.png")
    save_image(b, tmp_path / "out" / "k.png")
    out_json, out_csv, report = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.html"
    argv = ["eval", "pairs", str(tmp_path / "in"), str(tmp_path / "out"), "--iterations", str(N_ITER)]
    assert main([*argv, "--json", str(out_json), "--csv", str(out_csv), "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out_json.read_text())
    assert data["items"][0]["name"] == "k" and data["summary"]["n"] == 1
    assert results.read_csv(out_csv)[0]["ssim"] == pytest.approx(data["items"][0]["ssim"])
    assert "ssim" in printed and "k" in printed and report.stat().st_size > 1000


def test_eval_pairs_cli_names_folders_without_matches(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert main(["eval", "pairs", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "no files with matching names" in capsys.readouterr().err


def test_table_and_summary_helpers():
    rows = [{"name": "a", "ssim": 0.5}, {"name": "b", "ssim": 0.7}, {"name": "c", "ssim": None, "error": "x"}]
    summary = results.summarize(rows, ["ssim"])
    assert summary["n"] == 2 and summary["failed"] == 1
    assert summary["ssim_mean"] == pytest.approx(0.6) and summary["ssim_sem"] == pytest.approx(0.1)
    table = results.format_table(rows, ["name", "ssim"])
    assert table.splitlines()[2].split() == ["a", "0.5000"]
