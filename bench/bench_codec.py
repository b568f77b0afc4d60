"""Codec speed and quality on the six real everyday sounds, against the paper's torchaudio path.

The reference is the algorithm of torchaudio's ``InverseMelScale`` (least squares via
``torch.linalg.lstsq``, clamped at zero) + ``GriffinLim`` (32 iterations, momentum 0.99, random
start) written with plain torch ops, since torchaudio does not install beside this torch. Both run
in this process on the same images; quality is the mel spectral convergence
``|mel(audio) - S| / |S|`` against the mel that the image encodes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bench.common import best_of, real_sounds, write_result
from riffmask.core import codec
from riffmask.core.audio import load_audio
from riffmask.core.decode import DEFAULT_ITERATIONS, DecodeConfig, decode, image_to_audio
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


if __name__ == "__main__":
    main()
