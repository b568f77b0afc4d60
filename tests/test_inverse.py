"""The torch-free decoder equals the torch Griffin-Lim to float tolerance, and `riffmask audio` loads neither
torch nor numba; the C heap integration of PGHI equals numba's to the bit."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import SR, tone

from riffmask.core import codec, dft, phase
from riffmask.core.decode import DecodeConfig, decode
from riffmask.core.decode.griffin_lim import griffin_lim, phase_of
from riffmask.core.params import SpectrogramParams

pytestmark = pytest.mark.skipif(not dft.available(), reason="torch's CPU library exports no MKL DFTI here")
P = SpectrogramParams()


def sound(seconds: float = 0.6) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    chirp = 0.3 * np.sin(2 * np.pi * (300 * t + 900 * t**2))
    return (chirp + tone(1500, seconds, amp=0.2)).astype(np.float32)


def torch_decode(mel: np.ndarray, cfg: DecodeConfig, known: np.ndarray | None = None) -> np.ndarray:
    magnitude = codec.linear_from_mel(mel, P)
    start = cfg.phase_start if known is None else phase_of(torch.from_numpy(known), P, magnitude.shape)
    return griffin_lim(magnitude, P, cfg.resolved_iterations, init_phase=start).numpy()


@pytest.mark.parametrize("start", ["pghi", "random", "input"])
def test_decoder_equals_the_torch_griffin_lim(start):
    audio = sound()
    mels = codec.mel_spectrogram(np.stack([audio, 0.5 * audio[::-1]]), P).numpy()  # a batch of two
    cfg = DecodeConfig(phase_start=start, iterations=4)
    known = np.stack([audio, audio[::-1]]) if start == "input" else None
    ours = decode(mels, P, cfg, known_audio=known)
    theirs = torch_decode(mels, cfg, known)
    assert ours.shape == theirs.shape == (2, P.samples_for(mels.shape[-1]))
    # Rounding differs (numpy and a one-thread FFT against torch's kernels); the sgn of near-zero
    # values amplifies it most from a random start: still below -80 dB of the peak.
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())


def test_decoder_without_the_library_is_the_torch_one(monkeypatch):
    mel = codec.mel_spectrogram(sound(0.3), P).numpy()
    monkeypatch.setattr(dft, "available", lambda: False)
    cfg = DecodeConfig(iterations=2)
    assert np.array_equal(decode(mel, P, cfg), torch_decode(mel, cfg))


def test_irfft_rows_inverts_rfft_rows(rng):
    rows = dft.aligned_zeros((3, 1764), np.float32)
    rows[:] = rng.standard_normal(rows.shape)
    spectrum = dft.rfft_rows(rows)
    back = dft.irfft_rows_unscaled(spectrum, 1764) / 1764
    np.testing.assert_allclose(back, rows, atol=1e-5)
    assert np.array_equal(spectrum, dft.rfft_rows(rows)), "the inverse leaves its input alone"


def test_c_kernel_integrates_as_the_numba_kernel(rng):
    if phase._native_library() is None:
        pytest.skip("no C compiler here")
    import numba

    compiled = numba.njit(phase._integrate)
    for shape in ((2, 2), (7, 5), (40, 90)):
        mag = rng.random(shape).astype(np.float32) ** 6
        results = []
        for kernel in (compiled, phase.integrator()):
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(phase, "integrator", lambda k=kernel: k)
                results.append(phase.pghi(mag, P, seed=3))
        assert np.array_equal(*results), shape


_AUDIO = """import sys
from riffmask.cli import main
assert main(["audio", sys.argv[1], sys.argv[2]]) == 0
print(sorted(m for m in ("torch", "numba", "librosa", "scipy") if m in sys.modules))
"""


def test_audio_command_loads_neither_torch_nor_numba(tmp_path):
    png = tmp_path / "a.png"
    codec.save_image(codec.audio_to_image(sound()), png)
    phase.integrator()  # the kernel built in the session cache first
    result = subprocess.run([sys.executable, "-c", _AUDIO, str(png), str(tmp_path / "a.wav")], capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded = [] if phase._native_library() else ["numba"]
    assert result.stdout.split("\n")[-2] == repr(loaded)
    assert (tmp_path / "a.wav").stat().st_size > 44
