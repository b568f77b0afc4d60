"""The torch-free forward path gives the torch codec's numbers to the bit, and so the same pixels and EXIF."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SR, tone

from riffmask.core import codec, dft, forward
from riffmask.core.audio import load_audio
from riffmask.core.params import SpectrogramParams

pytestmark = pytest.mark.skipif(not dft.available(), reason="torch's CPU library exports no MKL DFTI here")


def same_image_bytes(audio: np.ndarray, params: SpectrogramParams, mode: str) -> bool:
    ours = forward.audio_to_image(audio, params, mode)
    theirs = codec.image_from_mel(codec.mel_spectrogram(audio, params), params, mode)
    return ours.tobytes() == theirs.tobytes() and ours.info["exif"] == theirs.info["exif"]


def test_rfft_rows_is_torch_rfft_for_any_batch(rng):
    for batch in (1, 2, 7):  # MKL runs another kernel for a single transform
        rows = dft.aligned_zeros((batch, 1764), np.float32)
        rows[:, :441] = rng.standard_normal((batch, 441))
        assert np.array_equal(dft.rfft_rows(rows), torch.fft.rfft(torch.from_numpy(rows)).numpy())
        assert np.array_equal(dft.rfft_rows(rows, threads=1), dft.rfft_rows(rows, threads=2))
    shifted = dft.aligned_zeros((2 * 1764 + 1,), np.float32)[1:].reshape(2, 1764)  # 4 bytes off the boundary
    with pytest.raises(ValueError, match="aligned"):
        dft.rfft_rows(shifted)


def test_magnitudes_round_as_torch_abs_even_next_to_a_midpoint(rng):
    from riffmask.core.magnitude import torch_abs

    n = 300 * 1003  # rows of 1003: whole vectors of 8 and a tail of 3, as torch runs them
    scale = 10.0 ** rng.uniform(-12, 4, n)
    z = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * scale).astype(np.complex64).reshape(300, 1003)
    exact = np.abs(z.astype(np.complex128))
    rounded = exact.astype(np.float32).astype(np.float64)
    halfway = np.abs(exact - rounded) / np.spacing(rounded.astype(np.float32)) > 0.49  # the hard cases
    assert halfway.sum() > 1000
    for values in (z, z[halfway][: halfway.sum() // 8 * 8].reshape(-1, 8)):
        assert np.array_equal(torch_abs(values), torch.from_numpy(values).abs().numpy())


@pytest.mark.parametrize("kernel", ["c", "numpy"])
def test_transposed_magnitudes_of_a_column_slice_are_torch_abs(rng, monkeypatch, kernel):
    """The spectrogram's path: |z| of the used bins (a column slice), written transposed, by the C
    kernel where a compiler is found and by numpy in blocks of rows where not."""
    from riffmask.core import magnitude

    if kernel == "numpy":
        monkeypatch.setattr(magnitude, "native_kernel", lambda: None)
    elif magnitude.native_kernel() is None:
        pytest.skip("no C compiler here")
    n = 130 * 1011
    scale = 10.0 ** rng.uniform(-12, 4, n)
    z = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * scale).astype(np.complex64).reshape(130, 1011)
    z[3, :4] = [np.nan, np.inf, -np.inf * 1j, 0]
    z[7, 1000] = complex(np.nan, np.inf)
    used = z[:, :1003]  # rows of 1003: whole vectors of 8 and a tail of 3, as torch runs them
    ours = magnitude.torch_abs_transposed(used)
    assert ours.flags.c_contiguous and ours.shape == (1003, 130)
    theirs = torch.from_numpy(np.ascontiguousarray(used)).abs().numpy().T
    assert np.array_equal(ours, theirs, equal_nan=True)
    # From subnormal squares to overflowing ones, the two paths agree with each other.
    wide = (z * (10.0 ** rng.uniform(-30, 30, z.shape))).astype(np.complex64)[:, :1003]
    assert np.array_equal(magnitude.torch_abs_transposed(wide), magnitude.torch_abs(wide).T, equal_nan=True)


@pytest.mark.parametrize(
    "params", [SpectrogramParams(), SpectrogramParams(num_frequencies=64), SpectrogramParams(sample_rate=22050)]
)
def test_mel_and_pixels_equal_the_torch_codec(rng, params):
    noise = (0.2 * rng.standard_normal(3 * SR)).astype(np.float32)
    music = tone(440, 3) + tone(3520, 3, amp=0.1) + 0.01 * noise
    cases = {
        "noise": noise,
        "music": music,
        "stereo": np.stack([music, noise]),
        "one frame": noise[: params.hop_length // 2],  # a batch of one transform
        "shorter than the pad": noise[: params.n_fft // 3],
        "quiet": 1e-4 * music,
    }
    for name, audio in cases.items():
        ours, theirs = forward.fast_mel_spectrogram(audio, params), codec.mel_spectrogram(audio, params).numpy()
        assert ours.shape == theirs.shape and np.array_equal(ours, theirs), name
        for mode in ("paper", "riffusion"):
            assert same_image_bytes(audio, params, mode), (name, mode)


def test_reused_buffers_carry_nothing_from_one_clip_to_the_next(rng):
    params = SpectrogramParams(num_frequencies=64)
    loud, other = (rng.standard_normal((2, SR)) * [[1.0], [1e-3]]).astype(np.float32)
    first = forward.fast_mel_spectrogram(loud, params)
    forward.fast_mel_spectrogram(other, params)  # same shape: the same buffers
    forward.fast_mel_spectrogram(loud[: SR // 3], params)  # another shape: new buffers
    assert np.array_equal(forward.fast_mel_spectrogram(loud, params), first)
    assert np.array_equal(first, codec.mel_spectrogram(loud, params).numpy())


def test_files_at_other_rates_and_channels_give_the_torch_pixels(tmp_path, rng):
    seconds = 6
    for rate, channels in ((8000, 1), (22050, 2), (48000, 2), (44100, 1)):
        t = np.arange(seconds * rate) / rate
        sound = 0.3 * np.sin(2 * np.pi * 330 * t * (1 + t / 4)) + 0.05 * rng.standard_normal(len(t))
        data = np.stack([sound, np.roll(sound, 100)], axis=1)[:, :channels]
        path = tmp_path / f"sound_{rate}_{channels}.wav"
        sf.write(path, data.astype(np.float32), rate)
        audio = load_audio(path)
        assert same_image_bytes(audio, SpectrogramParams(), "paper"), path.name


def test_without_the_library_torch_computes_the_same(monkeypatch, rng):
    audio = (0.1 * rng.standard_normal(SR // 2)).astype(np.float32)
    expected = forward.mel_array(audio)
    monkeypatch.setattr(dft, "available", lambda: False)
    assert np.array_equal(forward.mel_array(audio), expected)


_BEFORE_TORCH = """import sys
import numpy as np
from riffmask.core import forward
audio = (0.1 * np.random.default_rng(0).standard_normal(44100)).astype(np.float32)
ours = forward.mel_array(audio)
assert "torch" not in sys.modules
from riffmask.core import codec  # torch, after its library was loaded by the torch-free path
print(np.array_equal(ours, codec.mel_spectrogram(audio).numpy()))
"""


def test_torch_imports_after_the_torch_free_path_and_agrees():
    forward.mel_array(np.zeros(SR, np.float32))  # the format's arrays in the session cache first
    result = subprocess.run([sys.executable, "-c", _BEFORE_TORCH], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]
