"""Codec speed and quality on the six real everyday sounds, against the paper's torchaudio path.

The reference is the algorithm of torchaudio's ``InverseMelScale`` (least squares via
``torch.linalg.lstsq``, clamped at zero) + ``GriffinLim`` (32 iterations, momentum 0.99, random
start) written with plain torch ops, since torchaudio does not install beside this torch. Both run
in this process on the same images; quality is the mel spectral convergence
``|mel(audio) - S| / |S|`` against the mel that the image encodes.

``python -m bench.bench_codec forward`` measures only the torch-free forward path (and merges it into
``codec.json``): on the six sounds and on synthetic files at 8, 22.05 and 48 kHz, mono and stereo,
1 to 20 s, how many pixels differ from the torch codec's image when each step is done another way
(numpy's or scipy's FFT, numpy's complex ``abs``, a dense BLAS product for the mel sums), and the
whole-process times of the one-shot commands, beside ``import torch`` and the torch path in the same run.
``python -m bench.bench_codec decode`` measures only steady-state decoding, the default decoder
(numpy and torch's FFT library, no torch) against the same decoder written with torch, in one process.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.fft
import soundfile as sf
import torch

from bench.common import RESULTS, best_of, real_sounds, write_result
from riffmask.core import codec, dft, forward
from riffmask.core.audio import load_audio, write_wav
from riffmask.core.decode import DEFAULT_ITERATIONS, DecodeConfig, decode, image_to_audio
from riffmask.core.decode.griffin_lim import griffin_lim
from riffmask.core.magnitude import torch_abs
from riffmask.core.params import PAPER_CLIP_SAMPLES, SpectrogramParams

P = SpectrogramParams()


KNOWN_PHASE = DecodeConfig(phase_start="input")


def reference_forward(audio: np.ndarray) -> torch.Tensor:
    """torchaudio's MelSpectrogram path: full-frame torch.stft, dense filter-bank product."""
    spec = torch.stft(torch.from_numpy(audio), P.n_fft, P.hop_length, P.win_length, codec.hann_window(P),
                      center=True, pad_mode="reflect", return_complex=True).abs()
    return codec.mel_filterbank(P).T @ spec


def reference_inverse(mel: torch.Tensor, seed: int = 0) -> torch.Tensor:
    fb = codec.mel_filterbank(P)
    linear = torch.relu(torch.linalg.lstsq(fb.T[None], mel[None], driver="gels").solution)[0]
    window = codec.hann_window(P)
    length = P.samples_for(mel.shape[-1])
    args = dict(n_fft=P.n_fft, hop_length=P.hop_length, win_length=P.win_length, window=window)
    phase = 2 * math.pi * torch.rand(linear.shape, generator=torch.Generator().manual_seed(seed))
    angles = torch.polar(torch.ones_like(linear), phase)
    previous = torch.zeros_like(angles)
    for _ in range(32):
        inverse = torch.istft(linear * angles, length=length, **args)
        rebuilt = torch.stft(inverse, center=True, pad_mode="reflect", return_complex=True, **args)
        angles = rebuilt - previous * (0.99 / 1.99)
        angles = angles / (angles.abs() + 1e-16)
        previous = rebuilt
    return torch.istft(linear * angles, length=length, **args)


def convergence(audio: np.ndarray | torch.Tensor, mel: torch.Tensor) -> float:
    return float((codec.mel_spectrogram(audio, P) - mel).norm() / mel.norm())


def main() -> None:
    rows = []
    for path in real_sounds():
        audio = load_audio(path)[:PAPER_CLIP_SAMPLES]
        image = codec.audio_to_image(audio, P)
        mel = torch.from_numpy(codec.mel_from_image(image)[0])
        row = {"sound": path.name}
        row["encode_ref_s"], _ = best_of(lambda a=audio: reference_forward(a))
        row["encode_s"], _ = best_of(lambda a=audio: codec.audio_to_image(a, P))
        variants = {
            "reference": lambda m=mel: reference_inverse(m),
            "ours": lambda im=image: image_to_audio(im),
            "ours_6": lambda im=image: image_to_audio(im, DecodeConfig(iterations=6)),
            "ours_32": lambda im=image: image_to_audio(im, DecodeConfig(iterations=32)),
            "ours_known_phase": lambda im=image, a=audio: image_to_audio(im, KNOWN_PHASE, known_audio=a),
        }
        for name, fn in variants.items():
            row[f"decode_{name}_s"], _ = best_of(fn, repeat=2)
            row[f"convergence_{name}"] = convergence(fn(), mel)
        rows.append(row)
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)

    images = [codec.audio_to_image(load_audio(p)[:PAPER_CLIP_SAMPLES], P) for p in real_sounds()]
    mels = torch.stack([torch.from_numpy(codec.mel_from_image(im)[0]) for im in images])
    batched, _ = best_of(lambda: decode(mels, P), repeat=2)

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    summary = {
        "clip": "512x512 (5.11 s)",
        "encode_s_per_clip": mean("encode_s"),
        "encode_ref_s_per_clip": mean("encode_ref_s"),
        "decode_s_per_clip": mean("decode_ours_s"),
        "decode_batched_s_per_clip": batched / len(images),
        "decode_ref_s_per_clip": mean("decode_reference_s"),
        "decode_speedup_vs_ref": mean("decode_reference_s") / mean("decode_ours_s"),
        "convergence_ours": mean("convergence_ours"),
        "convergence_ours_32": mean("convergence_ours_32"),
        "decode_6_iterations_s_per_clip": mean("decode_ours_6_s"),
        "convergence_ours_6": mean("convergence_ours_6"),
        "convergence_ours_known_phase": mean("convergence_ours_known_phase"),
        "convergence_ref": mean("convergence_reference"),
        "default_iterations": DEFAULT_ITERATIONS["pghi"],
    }
    print(summary)
    write_result("codec", {"summary": summary, "per_sound": rows})


def corpus(tmp: Path) -> dict[str, np.ndarray]:
    """The six real clips, and synthetic files at other rates and channel counts, loaded as users' files are."""
    clips = {p.name: load_audio(p)[:PAPER_CLIP_SAMPLES] for p in real_sounds()}
    rng = np.random.default_rng(0)
    for rate in (8000, 22050, 48000):
        for channels in (1, 2):
            for seconds in (1, 20):
                t = np.arange(seconds * rate) / rate
                chirp = 0.3 * np.sin(2 * np.pi * 200 * t * (1 + t)) * (1 + np.sin(2 * np.pi * 0.7 * t)) / 2
                data = np.stack([chirp + 0.02 * rng.standard_normal(len(t)), np.roll(chirp, 37)], axis=1)
                path = tmp / f"synthetic_{rate}_{channels}ch_{seconds}s.wav"
                sf.write(path, data[:, :channels].astype(np.float32), rate)
                clips[path.name] = load_audio(path)
    return clips


def _mel_with(audio: np.ndarray, fft: Callable, magnitude: Callable, dense: bool) -> np.ndarray:
    """The forward path with one step swapped: ``fft`` of the padded frames, ``magnitude``, mel sums."""
    used = forward.filter_arrays(P)["bank"].shape[0]
    spec = fft(forward._frames(audio, P))[:, :used]
    mag = np.ascontiguousarray(magnitude(spec).T)
    if dense:
        return forward.filter_arrays(P)["bank"].T @ mag
    return forward._mel_of_magnitudes(mag, P)


def forward_pixel_differences(tmp: Path) -> dict:
    """Pixels (of the paper-mode image) that differ from the torch codec's, per clip and way of computing."""
    mkl = dft.rfft_rows
    ways = {
        "this_path": lambda a: forward.fast_mel_spectrogram(a, P),
        "numpy_fft": lambda a: _mel_with(a, lambda f: np.fft.rfft(f, axis=-1), torch_abs, False),
        "scipy_fft": lambda a: _mel_with(a, lambda f: scipy.fft.rfft(f, axis=-1), torch_abs, False),
        "numpy_abs": lambda a: _mel_with(a, mkl, np.abs, False),
        "c_library_hypot": lambda a: _mel_with(a, mkl, lambda z: np.hypot(z.real, z.imag), False),
        "dense_blas_mel": lambda a: _mel_with(a, mkl, torch_abs, True),
    }
    rows = {}
    for name, audio in corpus(tmp).items():
        reference = np.asarray(codec.image_from_mel(codec.mel_spectrogram(audio, P), P))
        row = {"pixels": int(reference[..., 0].size)}
        for way, mel in ways.items():
            row[way] = int((np.asarray(codec.image_from_mel(mel(audio), P)) != reference).any(axis=-1).sum())
        rows[name] = row
        print(name, row, flush=True)
    totals = {way: sum(r[way] for r in rows.values()) for way in ways}
    return {"pixels_in_all": sum(r["pixels"] for r in rows.values()), "differing_pixels": totals, "per_clip": rows}


def one_shot_times(tmp: Path, repeat: int = 3) -> dict:
    """Best whole-process seconds of the one-shot commands on one 5.11 s real clip (the cache filled)."""
    clip = tmp / "clip.wav"
    write_wav(clip, load_audio(real_sounds()[1])[:PAPER_CLIP_SAMPLES])
    torch_path = (f"from riffmask.core.audio import load_audio; from riffmask.core import codec; "
                  f"codec.save_image(codec.image_from_mel(codec.mel_spectrogram(load_audio({str(clip)!r}))), "
                  f"{str(tmp / 't.png')!r})")  # fmt: skip
    riffmask = [sys.executable, "-m", "riffmask.cli"]
    commands = {
        "spectrogram": [*riffmask, "spectrogram", str(clip), str(tmp / "a.png")],
        "audio": [*riffmask, "audio", str(tmp / "a.png"), str(tmp / "a.wav")],
        "mask": [*riffmask, "mask", str(tmp / "a.png"), str(tmp / "m.png")],
        "spectrogram_by_torch": [sys.executable, "-c", torch_path],
        "import_torch": [sys.executable, "-c", "import torch"],
        "python_numpy_pillow_soundfile": [sys.executable, "-c", "import numpy, PIL.Image, soundfile"],
    }
    subprocess.run(commands["spectrogram"], check=True, capture_output=True)  # fills the caches
    times: dict[str, dict] = {}
    for name, cmd in commands.items():
        runs = []
        for _ in range(repeat):
            before = os.times()
            started = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            after = os.times()
            runs.append((time.perf_counter() - started, after.children_user + after.children_system
                         - before.children_user - before.children_system))  # fmt: skip
        walls, cpus = zip(*runs, strict=True)
        times[name] = {"best_wall_s": round(min(walls), 2), "best_cpu_s": round(min(cpus), 2)}
        print(name, times[name], flush=True)
    same = (tmp / "a.png").read_bytes() == (tmp / "t.png").read_bytes()
    return {"commands": times, "spectrogram_png_equals_torch_path": same, "target_s": 1.5,
            "load_average_at_start": round(os.getloadavg()[0], 2)}  # fmt: skip


def forward_only() -> None:
    """Measure the torch-free forward path and merge it into codec.json."""
    with tempfile.TemporaryDirectory() as tmp:
        pixels = forward_pixel_differences(Path(tmp))
        shots = one_shot_times(Path(tmp))
    path = RESULTS / "codec.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.pop("machine", None)
    write_result("codec", {**data, "forward_pixel_differences": pixels, "one_shot_whole_process": shots})


def decode_by_torch(mels: torch.Tensor) -> np.ndarray:
    """The decoder's torch implementation (the definition; the fallback where DFTI is not reachable)."""
    return griffin_lim(codec.linear_from_mel(mels, P), P, DEFAULT_ITERATIONS["pghi"]).numpy()


def decode_only() -> None:
    """Steady-state decoding in one process, the default decoder (numpy + DFTI) against its torch
    implementation, alternately (best and median of 5): one 5.11 s clip at a time and the six at once.
    Merged into codec.json as ``decode_vs_torch``."""
    images = [codec.audio_to_image(load_audio(p)[:PAPER_CLIP_SAMPLES], P) for p in real_sounds()]
    mels = torch.stack([torch.from_numpy(codec.mel_from_image(im)[0]) for im in images])
    load = [round(x, 2) for x in os.getloadavg()]
    cases = {"one_clip": mels[:1], "six_clips": mels}
    result: dict = {}
    for case, batch in cases.items():
        ours = decode(batch, P)
        theirs = decode_by_torch(batch)
        times = {"ours": [], "by_torch": []}
        for _ in range(5):
            for name, fn in (("ours", lambda b=batch: decode(b, P)), ("by_torch", lambda b=batch: decode_by_torch(b))):
                started = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - started)
        result[case] = {
            **{f"{name}_{stat}_s_per_clip": round(f(t) / len(batch), 3) for name, t in times.items()
               for stat, f in (("best", min), ("median", np.median))},
            "max_difference_to_peak": float(np.abs(ours - theirs).max() / np.abs(theirs).max()),
        }  # fmt: skip
        print(case, result[case], flush=True)
    result["load_average"] = [load, [round(x, 2) for x in os.getloadavg()]]
    result["torch_threads"] = torch.get_num_threads()
    path = RESULTS / "codec.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.pop("machine", None)
    write_result("codec", {**data, "decode_vs_torch": result})


if __name__ == "__main__":
    modes = {"forward": forward_only, "decode": decode_only}
    modes[sys.argv[1]]() if sys.argv[1:] and sys.argv[1] in modes else main()
