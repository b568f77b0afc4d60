"""FAD against the closed form for Gaussians, invariances, FAD-infinity, .npz statistics, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import linalg

from riffmask.cli import main
from riffmask.metrics import fad
from riffmask.metrics.embeddings import load_embedding_dir


def random_spd(rng, dims, scale=1.0):
    a = rng.standard_normal((dims, dims))
    return scale * (a @ a.T / dims + 0.1 * np.eye(dims))


def closed_form(mu1, c1, mu2, c2):
    """The textbook formula with SciPy's general matrix square root, as an independent reference."""
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(linalg.sqrtm(c1 @ c2)).real)


def test_frechet_distance_equals_the_closed_form(rng):
    for dims in (1, 3, 16):
        mu1, mu2 = rng.standard_normal(dims), rng.standard_normal(dims)
        c1, c2 = random_spd(rng, dims), random_spd(rng, dims, 2.0)
        got = fad.frechet_distance(fad.GaussianStats(mu1, c1), fad.GaussianStats(mu2, c2))
        assert got == pytest.approx(closed_form(mu1, c1, mu2, c2), rel=1e-9, abs=1e-9)


def test_diagonal_gaussians_have_the_simple_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)  # 5 + 1 + 0 + 4
    got = fad.frechet_distance(fad.GaussianStats(mu1, np.diag(v1)), fad.GaussianStats(mu2, np.diag(v2)))
    assert got == pytest.approx(expected, abs=1e-12) and expected == pytest.approx(10.0)


def test_fad_of_samples_approaches_the_population_value(rng):
    dims = 4
    mu1, mu2, c1, c2 = rng.standard_normal(dims), np.zeros(dims), random_spd(rng, dims), random_spd(rng, dims)
    frames = rng.multivariate_normal(mu1, c1, size=200_000)
    stats = fad.gaussian_stats(frames)
    np.testing.assert_allclose(stats.cov, np.cov(frames, rowvar=False, ddof=1))
    got = fad.frechet_distance(stats, fad.GaussianStats(mu2, c2))
    assert got == pytest.approx(closed_form(mu1, c1, mu2, c2), rel=0.02)


def test_invariant_to_translating_both_sets_permuting_and_rotating(rng):
    a, b = rng.standard_normal((300, 6)), 1.5 * rng.standard_normal((400, 6)) + 0.3
    base = fad.frechet_distance(fad.gaussian_stats(a), fad.gaussian_stats(b))
    shift = rng.standard_normal(6) * 10
    rotation, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    for x, y in ((a + shift, b + shift), (rng.permutation(a), rng.permutation(b)), (a @ rotation, b @ rotation)):
        assert fad.frechet_distance(fad.gaussian_stats(x), fad.gaussian_stats(y)) == pytest.approx(base, rel=1e-9)
    assert fad.frechet_distance(fad.gaussian_stats(b), fad.gaussian_stats(a)) == pytest.approx(base, rel=1e-9)
    assert fad.frechet_distance(fad.gaussian_stats(a), fad.gaussian_stats(a)) == pytest.approx(0.0, abs=1e-9)


def test_rank_deficient_covariances_give_a_finite_real_value(rng):
    few = rng.standard_normal((5, 32))  # 5 frames in 32 dimensions: covariance of rank 4
    value = fad.frechet_distance(fad.gaussian_stats(few), fad.gaussian_stats(rng.standard_normal((100, 32))))
    assert np.isfinite(value) and value > 0


def test_fad_infinity_recovers_the_planted_intercept(rng):
    """FAD of n samples is biased by about a/n; the fit in 1/n must land on the population value."""
    dims = 16
    mu1, c1 = 0.2 * rng.standard_normal(dims), random_spd(rng, dims)
    reference = fad.GaussianStats(np.zeros(dims), 1.3 * c1)
    planted = fad.frechet_distance(fad.GaussianStats(mu1, c1), reference)
    frames = rng.multivariate_normal(mu1, c1, size=100_000)
    result = fad.fad_infinity(frames, reference, sizes=[100, 200, 400, 800, 1600], repeats=20)
    small_n = np.mean([p["fad"] for p in result["points"] if p["n"] == 100])
    assert small_n > 1.2 * planted  # the bias that FAD-infinity removes
    assert result["fad_inf"] == pytest.approx(planted, rel=0.05)
    assert result["slope"] > 0 and result["frames"] == 100_000 and len(result["points"]) == 100


def test_fad_infinity_needs_two_sizes(rng):
    with pytest.raises(ValueError, match="two sample sizes"):
        fad.fad_infinity(rng.standard_normal((50, 2)), fad.GaussianStats(np.zeros(2), np.eye(2)), sizes=[50])


def test_npz_statistics_in_fadtk_layout(tmp_path, rng):
    stats = fad.gaussian_stats(rng.standard_normal((50, 3)))
    fad.save_stats(tmp_path / "ref.npz", stats, "clap-laion-audio")
    with np.load(tmp_path / "ref.npz") as data:
        assert {"clap-laion-audio.mu", "clap-laion-audio.cov"} <= set(data.files)
    back = fad.load_reference_stats(tmp_path / "ref.npz")
    np.testing.assert_allclose(back.cov, stats.cov)
    assert back.frames == 50
    with pytest.raises(ValueError, match=r"no arrays 'vggish.mu'.*clap-laion-audio"):
        fad.load_reference_stats(tmp_path / "ref.npz", "vggish")
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.npz"):
        fad.load_reference_stats(tmp_path / "bad.npz")


def test_per_file_and_set_scores_report_counts(rng):
    embeddings = {"a": rng.standard_normal((10, 3)), "b": rng.standard_normal((1, 3)) + 1}
    reference = fad.GaussianStats(np.zeros(3), np.eye(3))
    rows = fad.per_file_fad(embeddings, reference)
    assert rows[0]["frames"] == 10 and rows[0]["fad"] > 0 and np.isnan(rows[1]["fad"]) and rows[1]["error"]
    whole = fad.set_fad(embeddings, reference)
    assert whole["files"] == 2 and whole["frames"] == 11


def test_eval_fad_cli_on_stored_embeddings(tmp_path, rng, capsys):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir()
    ref.mkdir()
    for i in range(6):
        np.save(gen / f"g{i}.npy", rng.standard_normal((40, 4)) + 1.0)
        np.save(ref / f"r{i}.npy", rng.standard_normal((40, 4)))
    out = tmp_path / "fad.json"
    argv = ["eval", "fad", str(gen), "--reference", str(ref), "--save-stats", str(tmp_path / "ref.npz")]
    assert main([*argv, "--json", str(out), "--csv", str(tmp_path / "fad.csv")]) == 0
    summary = json.loads(out.read_text())["summary"]
    expected = fad.set_fad(load_embedding_dir(gen)[0], fad.gaussian_stats(fad.stack_frames(load_embedding_dir(ref)[0])))
    assert summary["fad"] == pytest.approx(expected["fad"]) and summary["frames"] == 240 and summary["files"] == 6
    assert np.isfinite(summary["fad_inf"]) and summary["reference_frames"] == 240
    # The saved statistics give the same score without the reference folder.
    assert main(["eval", "fad", str(gen), "--reference-stats", str(tmp_path / "ref.npz"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["summary"]["fad"] == pytest.approx(expected["fad"])
    assert "fad=" in capsys.readouterr().out
