"""The codec equals SPEC §1: filter bank, STFT, pixel formula, EXIF, and round trips land right."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import SR, tone
from PIL import Image

from riffmask.core import codec, forward
from riffmask.core.decode import DecodeConfig, decode, image_to_audio
from riffmask.core.decode.griffin_lim import griffin_lim
from riffmask.core.params import PAPER_CLIP_SAMPLES, ExifTags, SpectrogramParams

P = SpectrogramParams()


def torchaudio_melscale_fbanks(n_freqs: int, f_max: float, n_mels: int, sr: int) -> np.ndarray:
    """The filter bank of ``torchaudio.transforms.MelScale(norm=None, mel_scale="htk")``, from its definition."""
    all_freqs = np.linspace(0, sr // 2, n_freqs)
    hz_to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    m_pts = np.linspace(hz_to_mel(0.0), hz_to_mel(f_max), n_mels + 2)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up))


def reference_mel(audio: np.ndarray, params: SpectrogramParams) -> np.ndarray:
    """SPEC §1 written out with numpy: centred reflect framing, zero-padded Hann, |rfft|, mel."""
    half = params.n_fft // 2
    x = np.pad(audio.astype(np.float64), half, mode="reflect")
    frames = params.frames_for(len(audio))
    window = np.zeros(params.n_fft)
    start = (params.n_fft - params.win_length) // 2
    n = np.arange(params.win_length)
    window[start : start + params.win_length] = 0.5 - 0.5 * np.cos(2 * np.pi * n / params.win_length)
    spec = np.stack([np.abs(np.fft.rfft(x[t * params.hop_length : t * params.hop_length + params.n_fft] * window))
                     for t in range(frames)], axis=1)
    fb = torchaudio_melscale_fbanks(params.n_stft, params.max_hz, params.num_frequencies, params.sample_rate)
    return fb.T @ spec


def test_filterbank_equals_torchaudio_definition():
    ours = codec.mel_filterbank(P).numpy()
    theirs = torchaudio_melscale_fbanks(P.n_stft, P.max_hz, P.num_frequencies, P.sample_rate)
    assert ours.shape == (8821, 512)
    np.testing.assert_allclose(ours, theirs, atol=2e-6)


def test_mel_equals_reference_formula_and_torch_stft(rng):
    audio = (0.3 * rng.standard_normal(SR // 4) + tone(440, 0.25)).astype(np.float32)
    ours = codec.mel_spectrogram(audio, P).numpy()
    expected = reference_mel(audio, P)
    assert ours.shape == (512, 1 + len(audio) // 441)
    np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-3 * expected.max())
    spec = torch.stft(torch.from_numpy(audio), P.n_fft, P.hop_length, P.win_length, torch.hann_window(P.win_length),
                      center=True, pad_mode="reflect", return_complex=True).abs()
    np.testing.assert_allclose(codec.stft(torch.from_numpy(audio), P).abs().numpy(), spec.numpy(), rtol=1e-4,
                               atol=1e-4 * float(spec.max()))


def test_frame_count_and_paper_clip():
    assert P.hop_length == 441 and P.win_length == 4410 and P.n_fft == 17640
    for samples in (225_351, PAPER_CLIP_SAMPLES, 225_791):
        assert P.frames_for(samples) == 512
    assert P.samples_for(512) == 225_351


def test_pixel_formula_flip_and_exif(tmp_path):
    mel = np.array([[0.0, 16.0, 81.0], [1.0, 10.0, 0.5]], dtype=np.float32)  # 2 bands x 3 frames
    params = SpectrogramParams(num_frequencies=2)
    image = codec.image_from_mel(mel, params, mode="paper")
    max_volume = math.ceil(81.0**0.25)  # 3
    expected = (255 - mel ** np.float32(0.25) * 255 / max_volume).astype(np.uint8)[::-1]
    rgb = np.asarray(image)
    assert rgb.shape == (2, 3, 3)
    assert all(np.array_equal(rgb[..., c], expected) for c in range(3))
    assert rgb[1, 2, 0] == 0  # the loudest cell, lowest band, is black and at the bottom
    riff = np.asarray(codec.image_from_mel(mel, params, mode="riffusion"))[..., 0]
    assert np.array_equal(riff, (255 - mel ** np.float32(0.25) * 255 / np.float32(81.0**0.25)).astype(np.uint8)[::-1])

    path = tmp_path / "s.png"
    codec.save_image(image, path)
    loaded = codec.load_image(path)
    exif = loaded.getexif()
    assert exif[ExifTags.SAMPLE_RATE] == 44100 and exif[ExifTags.NUM_FREQUENCIES] == 2
    assert exif[ExifTags.STEP_MS] == 10 and exif[ExifTags.MAX_HZ] == 10000.0
    assert float(exif[ExifTags.MAX_VALUE]) == pytest.approx(81.0)
    assert codec.params_from_image(loaded) == params
    decoded, _ = codec.mel_from_image(loaded)
    expected_s = ((255 - expected[::-1].astype(np.float32)) * max_volume / 255) ** 4
    np.testing.assert_allclose(decoded, expected_s, rtol=1e-5)


def test_image_without_exif_uses_defaults_and_paper_max_volume(tmp_path):
    grey = np.full((512, 4), 128, np.uint8)
    path = tmp_path / "plain.png"
    Image.fromarray(grey, mode="L").save(path)
    mel, params = codec.mel_from_image(codec.load_image(path))
    assert params == SpectrogramParams()
    np.testing.assert_allclose(mel, ((255 - 128) * 50.0 / 255) ** 4, rtol=1e-5)


def test_stereo_channels_go_to_green_and_blue():
    left = np.full((4, 5), 16.0, np.float32)
    right = np.zeros((4, 5), np.float32)
    params = SpectrogramParams(num_frequencies=4)
    image = codec.image_from_mel(np.stack([left, right]), params)
    rgb = np.asarray(image)
    assert (rgb[..., 0] == 0).all() and (rgb[..., 1] == 0).all() and (rgb[..., 2] == 255).all()
    mel, read = codec.mel_from_image(image)
    assert read.stereo and mel.shape == (2, 4, 5)
    np.testing.assert_allclose(mel[0], 16.0, rtol=1e-5)


def test_tone_lands_at_its_mel_band_and_time():
    audio = np.zeros(SR * 2, np.float32)
    audio[SR : SR + SR // 2] = tone(1000.0, 0.5)
    image = codec.audio_to_image(audio, P)
    grey = np.asarray(image)[..., 0][::-1]  # row 0 = lowest band again
    band = int(np.argmin(grey.min(axis=1)))
    expected_band = int(np.argmax(codec.mel_filterbank(P)[int(1000 / (SR / P.n_fft))].numpy()))
    assert abs(band - expected_band) <= 1
    loud_columns = np.flatnonzero(grey[band] < 128)
    assert abs(loud_columns[0] - 100) <= 6 and abs(loud_columns[-1] - 150) <= 6

    back = image_to_audio(image, DecodeConfig(iterations=4))
    assert back.shape == (P.samples_for(image.width),)
    spectrum = np.abs(np.fft.rfft(back[SR + 2000 : SR + SR // 2 - 2000]))
    assert abs(np.argmax(spectrum) * SR / (SR // 2 - 4000) - 1000.0) < 15
    envelope = np.abs(back)
    assert envelope[SR + 4000 : SR + SR // 2 - 4000].mean() > 20 * envelope[: SR // 2].mean()


def convergence(audio: np.ndarray, n_iter: int, init: str) -> float:
    mel = codec.mel_spectrogram(audio, P)
    rebuilt = griffin_lim(codec.linear_from_mel(mel, P), P, n_iter, init_phase=init)
    return float((codec.mel_spectrogram(rebuilt, P) - mel).norm() / mel.norm())


def test_pghi_start_beats_random_start():
    t = np.arange(SR) / SR
    chirp = (0.4 * np.sin(2 * np.pi * (300 * t + 400 * t**2)) + 0.2 * np.sin(2 * np.pi * 660 * t)).astype(np.float32)
    assert convergence(chirp, 0, "pghi") < 0.7 * convergence(chirp, 0, "random")
    assert convergence(chirp, 4, "pghi") < convergence(chirp, 16, "random")


def test_known_sound_phase_reconstructs_it():
    audio = tone(523.25, 0.5) * np.hanning(SR // 2).astype(np.float32)
    mel = codec.mel_spectrogram(audio, P)
    back = decode(mel, P, DecodeConfig(iterations=0, phase_start="input"), known_audio=audio)
    n = min(len(back), len(audio)) - 2000
    assert np.corrcoef(back[2000:n], audio[2000:n])[0, 1] > 0.95


def test_short_clips_small_bands_and_batches(rng):
    small = SpectrogramParams(num_frequencies=64)
    blip = (0.1 * rng.standard_normal(SR // 10)).astype(np.float32)  # 0.1 s: shorter than the pad
    mel = codec.mel_spectrogram(blip, small)
    assert mel.shape == (64, 11) and torch.isfinite(mel).all()
    image = codec.audio_to_image(blip, small)
    assert image.size == (11, 64)
    assert image_to_audio(image, DecodeConfig(iterations=2)).shape == (10 * 441,)
    pair = (0.1 * rng.standard_normal((2, SR // 2))).astype(np.float32)
    both = codec.mel_spectrogram(pair, small)
    np.testing.assert_allclose(both[1].numpy(), codec.mel_spectrogram(pair[1], small).numpy(), rtol=1e-5, atol=1e-6)


def test_silence_gives_white_image_and_unreadable_image_is_named(tmp_path):
    image = codec.audio_to_image(np.zeros(SR // 2, np.float32), SpectrogramParams(num_frequencies=32))
    assert (np.asarray(image) == 255).all()
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(codec.ImageError, match="broken.png"):
        codec.load_image(bad)


def _fresh_codec_arrays() -> None:
    """Forget the per-process copies, so that the next codec call reads the disk cache again."""
    codec._filter_arrays.cache_clear()
    codec._band.cache_clear()
    forward.filter_arrays.cache_clear()
    forward._band_order.cache_clear()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped_byte"])
def test_filter_cache_gives_the_uncached_bytes_and_heals_when_damaged(tmp_path, monkeypatch, damage):
    from riffmask.common.cache import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    params = SpectrogramParams(num_frequencies=64)
    built = codec.build_filter_arrays(params)  # the uncached path
    audio = tone(440, 0.3) + tone(3000, 0.3, amp=0.2)
    _fresh_codec_arrays()
    first = codec.mel_spectrogram(audio, params).numpy()  # builds and writes the cache file
    (path,) = tmp_path.glob("melbank-*.npz")
    _fresh_codec_arrays()
    assert np.array_equal(codec.mel_spectrogram(audio, params).numpy(), first)  # read from the file
    assert np.array_equal(codec._pseudo_inverse(params).numpy(), built["pinv"])
    assert np.array_equal(codec.mel_filterbank(params).numpy()[: built["bank"].shape[0]], built["bank"])

    data = bytearray(path.read_bytes())
    if damage == "garbage":
        data = bytearray(b"not a cache file")
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    _fresh_codec_arrays()
    image = codec.image_from_mel(codec.mel_spectrogram(audio, params), params)
    assert np.array_equal(np.asarray(image), np.asarray(codec.image_from_mel(first, params)))
    assert np.array_equal(codec._pseudo_inverse(params).numpy(), built["pinv"])
    with np.load(path) as healed:  # rewritten whole
        assert np.array_equal(healed["pinv"], built["pinv"])


def test_filter_cache_in_an_unwritable_place_still_works(tmp_path, monkeypatch):
    from riffmask.common.cache import CACHE_ENV

    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    params = SpectrogramParams(num_frequencies=32)
    _fresh_codec_arrays()
    assert np.array_equal(codec._pseudo_inverse(params).numpy(), codec.build_filter_arrays(params)["pinv"])


@pytest.mark.parametrize("compiler", ["cc", "no-such-compiler"])
def test_pghi_kernel_is_compiled_into_the_user_cache_folder(monkeypatch, compiler):
    import shutil

    from riffmask.common.cache import cache_dir
    from riffmask.core import phase

    if compiler == "cc" and shutil.which("cc") is None:
        pytest.skip("no C compiler here")
    monkeypatch.setenv("CC", compiler)
    phase.integrator.cache_clear()
    try:
        found = phase.pghi(np.ones((4, 6), np.float32), P)
        assert found.shape == (4, 6) and np.isfinite(found).all()
    finally:
        phase.integrator.cache_clear()
    if compiler == "cc":  # the C kernel, built once per source and compiler
        assert list((cache_dir() / "native").glob("pghi-*.so"))
    else:  # no compiler: numba's kernel, kept in the same folder
        assert list((cache_dir() / "numba").rglob("phase._integrate-*.nbi")), "numba's index of the compiled kernel"
