"""Seam scores on synthetic audio: a periodic sound's wrap, splices, crossfades and clicks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from riffmask.common.errors import RiffmaskError
from riffmask.core.audio import write_wav
from riffmask.metrics.seams import CLICK_LIMIT, seam_scores

SR = 44100


def periodic(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One 1 s period of a tone swept (2 Hz vibrato) and swelled (1 Hz), with a fixed noise bed, tiled."""
    t = np.arange(SR) / SR
    phase = 2 * np.pi * 330 * t + 10 * np.sin(2 * np.pi * 2 * t)
    one = 0.4 * np.sin(phase) * (0.6 + 0.4 * np.sin(2 * np.pi * t)) + 0.05 * rng.standard_normal(SR)
    return np.tile(one, int(seconds)).astype(np.float32)


def other(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 2000 * t) + 0.2 * np.sin(2 * np.pi * 90 * t)).astype(np.float32)


def test_periodic_sound_cut_at_a_period_has_no_seam_at_the_wrap(rng):
    (wrap,) = seam_scores(periodic(2, rng), SR, wrap=True)
    assert wrap.wrap and wrap.seconds == pytest.approx(2.0)
    assert 0.8 < wrap.seam < 1.2
    assert wrap.click < 2 and not wrap.clicks


def test_splice_scores_far_above_a_crossfade_which_scores_above_none(rng):
    a, b = periodic(2, rng), other(2)
    (splice,) = seam_scores(np.concatenate([a, b]), SR, at=[2.0])
    fade = int(0.2 * SR)
    ramp = np.linspace(0, 1, fade, dtype=np.float32)
    faded = np.concatenate([a[:-fade], a[-fade:] * (1 - ramp) + b[:fade] * ramp, b[fade:]])
    (crossfade,) = seam_scores(faded, SR, at=[(len(a) - fade / 2) / SR])
    (none,) = seam_scores(np.tile(a, 2), SR, at=[2.0])
    assert splice.seam > 10
    assert none.seam < crossfade.seam < splice.seam / 3
    assert crossfade.seam > 1.5


def test_click_is_found_by_the_sample_jump(rng):
    sound = periodic(2, rng)
    sound[SR] += 0.8
    (join,) = seam_scores(sound, SR, at=[1.0])
    assert join.click > 2 * CLICK_LIMIT and join.clicks
    # A sine cut mid-cycle steps at the wrap: a click there, though its spectrum is unchanged.
    sine = (0.5 * np.sin(2 * np.pi * 220 * np.arange(int(1.37 * SR)) / SR)).astype(np.float32)
    (wrap,) = seam_scores(sine, SR, wrap=True)
    assert wrap.clicks and wrap.seam < 1.2


def test_bad_joins_and_short_sounds_are_errors(rng):
    with pytest.raises(RiffmaskError, match="inside the sound"):
        seam_scores(periodic(2, rng), SR, at=[2.5])
    with pytest.raises(RiffmaskError, match="too short"):
        seam_scores(periodic(2, rng)[:3000], SR, wrap=True)
    assert seam_scores(periodic(2, rng), SR) == []


def test_eval_seams_command_writes_rows_and_report(tmp_path, rng, capsys):
    from riffmask.cli import main

    write_wav(tmp_path / "loop.wav", periodic(3, rng))
    write_wav(tmp_path / "splice.wav", np.concatenate([periodic(2, rng), other(2)]))
    out = tmp_path / "seams.json"
    code = main(["eval", "seams", str(tmp_path / "loop.wav"), str(tmp_path / "splice.wav"), "--at", "2",
                 "--json", str(out), "--csv", str(tmp_path / "s.csv"), "--report", str(tmp_path / "r.html")])
    assert code == 0
    data = json.loads(out.read_text())
    by_name = {r["name"]: r for r in data["items"]}
    assert by_name["splice"]["seam_max"] > 10 and by_name["loop"]["seam_max"] < 1.2
    assert data["summary"]["joins"] == 2 and data["summary"]["n"] == 2
    assert "seam_max" in (tmp_path / "s.csv").read_text().splitlines()[0]
    assert "seam / click at 2.00 s" in (tmp_path / "r.html").read_text()


def test_eval_seams_without_joins_is_a_one_line_error(tmp_path, rng):
    from riffmask.cli import main

    write_wav(tmp_path / "a.wav", periodic(2, rng))
    assert main(["eval", "seams", str(tmp_path / "a.wav")]) == 2
