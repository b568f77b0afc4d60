"""Audio loading: every format and rate the issue lists, mono 44.1 kHz out, clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from conftest import SR, tone

from riffmask.core.audio import AudioError, is_audio_file, load_audio, peak_normalize, write_wav


def dominant_hz(audio: np.ndarray, sr: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * sr / len(audio))


@pytest.mark.parametrize(("subtype", "tol"), [("PCM_16", 1e-4), ("PCM_24", 1e-6), ("PCM_32", 1e-7), ("FLOAT", 0)])
def test_wav_bit_depths_load_to_the_same_float_signal(tmp_path, subtype, tol):
    signal = tone(440, 0.5)
    path = tmp_path / f"a_{subtype}.wav"
    sf.write(path, signal, SR, subtype=subtype)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.shape == signal.shape
    np.testing.assert_allclose(audio, signal, atol=tol + 1e-7)


@pytest.mark.parametrize("ext", ["flac", "ogg", "mp3"])
def test_compressed_formats_keep_length_and_pitch(tmp_path, ext):
    signal = tone(440, 1.0)
    path = tmp_path / f"a.{ext}"
    sf.write(path, signal, SR)
    audio = load_audio(path)
    assert abs(len(audio) - len(signal)) <= 2 * 1152  # mp3 may pad a frame
    assert dominant_hz(audio) == pytest.approx(440, abs=2)
    assert np.sqrt(np.mean(audio**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


@pytest.mark.parametrize("rate", [8000, 22050, 48000])
def test_other_rates_are_resampled_to_44100(tmp_path, rate):
    path = tmp_path / "a.wav"
    sf.write(path, tone(1000, 1.0, sr=rate), rate)
    audio = load_audio(path)
    assert len(audio) == pytest.approx(SR, abs=2)
    assert dominant_hz(audio) == pytest.approx(1000, abs=2)


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = tone(440, 0.2), tone(660, 0.2, amp=0.25)
    path = tmp_path / "s.wav"
    sf.write(path, np.stack([left, right], axis=1), SR, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), (left + right) / 2, atol=1e-7)


def test_start_and_duration_select_a_range(tmp_path):
    ramp = np.linspace(-1, 1, SR, dtype=np.float32)
    path = tmp_path / "r.wav"
    sf.write(path, ramp, SR, subtype="FLOAT")
    part = load_audio(path, start=0.25, duration=0.5)
    np.testing.assert_array_equal(part, ramp[SR // 4 : SR // 4 + SR // 2])
    with pytest.raises(AudioError, match="past the end"):
        load_audio(path, start=2.0)


def _nan_wav(path):
    signal = tone(440, 0.2)
    signal[100] = np.nan
    sf.write(path, signal, SR, subtype="FLOAT")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("these are my notes, not a song\n" * 20), "not a readable audio file"),
        (lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt "), "not a readable audio file"),
        (lambda p: sf.write(p, np.zeros((0,), np.float32), SR), "no audio samples"),
        (_nan_wav, "NaN"),
    ],
    ids=["missing", "empty", "text", "truncated", "zero-samples", "nan"],
)
def test_bad_files_raise_an_error_naming_the_file(tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=message) as info:
        load_audio(path)
    assert str(path) in str(info.value)


def test_write_wav_is_16_bit_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "out.wav"
    write_wav(path, tone(440, 0.1) * 3)  # clipped, not wrapped
    info = sf.info(path)
    assert (info.subtype, info.samplerate, info.channels) == ("PCM_16", SR, 1)
    assert np.max(np.abs(load_audio(path))) <= 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


def test_helpers():
    assert is_audio_file("x/Song.MP3") and is_audio_file("a.oga") and not is_audio_file("notes.txt")
    assert np.max(np.abs(peak_normalize(tone(440, 0.1, amp=0.1)))) == pytest.approx(0.99)
    assert not np.any(peak_normalize(np.zeros(10, np.float32)))
