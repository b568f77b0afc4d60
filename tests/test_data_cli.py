"""The data stage's commands through the real ``riffmask`` entry point: spectrogram, audio, prep."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from conftest import SR, tone

from riffmask.cli import main
from riffmask.core.codec import audio_to_image, load_image, params_from_image, save_image, stored_max_volume
from riffmask.core.params import SpectrogramParams
from riffmask.data_prep import synth


@pytest.fixture(scope="module")
def kettle(tmp_path_factory):
    return synth.write_builtin_sound(tmp_path_factory.mktemp("sound") / "kettle.wav", seconds=6.0)


def test_spectrogram_of_the_paper_clip_and_of_a_whole_file(kettle, tmp_path, capsys):
    assert main(["spectrogram", str(kettle), str(tmp_path / "a.png"), "--duration", "5.11"]) == 0
    image = load_image(tmp_path / "a.png")
    assert image.size == (512, 512) and params_from_image(image) == SpectrogramParams()
    assert stored_max_volume(image) == int(stored_max_volume(image))  # paper mode: ceil
    assert "512x512 px" in capsys.readouterr().out

    assert (
        main(["spectrogram", str(kettle), str(tmp_path / "b.png"), "--start", "1", "--mode", "riffusion"]) == 0
    )
    image = load_image(tmp_path / "b.png")
    assert image.width == 1 + (5 * SR) // 441
    assert stored_max_volume(image) != int(stored_max_volume(image))


def test_audio_from_a_small_image(tmp_path):
    params = SpectrogramParams(num_frequencies=64)
    save_image(audio_to_image(tone(880, 0.31), params), tmp_path / "t.png")
    assert main(["audio", str(tmp_path / "t.png"), str(tmp_path / "t.wav"), "--iterations", "2"]) == 0
    audio, rate = sf.read(tmp_path / "t.wav", dtype="float32")
    assert rate == SR and len(audio) == (32 - 1) * 441
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) * SR / len(audio) == pytest.approx(880, abs=40)


def test_prep_command_with_config_overrides_and_dry_run(tmp_path, capsys):
    root = tmp_path / "genres"
    synth.write_builtin_genres(root, seconds=1.6, files_per_genre=1, genres=("chiptune", "ambient"))
    out = tmp_path / "out"
    small = ["--config", "paper", "width=64", "num_frequencies=64", "--num-proc", "1"]
    assert main(["prep", str(root), str(out), "--dry-run", *small]) == 0
    assert "2 to prepare" in capsys.readouterr().out and not out.exists()
    assert main(["prep", str(root), str(out), *small, "caption_template={genre} loop"]) == 0
    assert "6 clips written" in capsys.readouterr().out
    assert "caption_template: '{genre} loop'" in (out / "config.yaml").read_text()
    lines = (out / "train" / "metadata.jsonl").read_text().splitlines()
    assert {json.loads(line)["caption"] for line in lines} <= {"chiptune loop", "ambient loop"}
    assert main(["prep", str(root), str(out), *small]) == 0  # caption template changed back
    assert "already up to date" not in capsys.readouterr().out
    assert main(["prep", str(root), str(out), *small]) == 0
    assert "already up to date" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["spectrogram", "{notes}", "{tmp}/x.png"], "notes.wav: not a readable audio file"),
        (["audio", "{notes}", "{tmp}/x.wav"], "notes.wav: not a readable image"),
        (["prep", "{tmp}", "{tmp}/out", "widht=64"], "did you mean 'width'"),
        (["prep", "{tmp}/missing", "{tmp}/out"], "genre root is not a folder"),
    ],
    ids=["spectrogram-not-audio", "audio-not-image", "prep-typo", "prep-missing-root"],
)
def test_errors_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    notes = tmp_path / "notes.wav"
    notes.write_text("not a sound\n" * 30)
    words = [w.format(notes=notes, tmp=tmp_path) for w in argv]
    assert main(words) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
