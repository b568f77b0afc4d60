"""Griffin-Lim decoding: pseudo-inverse mel -> linear magnitude, then fast Griffin-Lim (Perraudin et al.,
2013) from a PGHI, random or known-sound phase start.

:func:`griffin_lim` (torch) is the definition; the decoder itself runs the same steps without torch
(:mod:`riffmask.core.inverse`) where torch's FFT library is reachable, so that decoding one image
starts fast. torch is imported only where it is used.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np

from riffmask.core import dft
from riffmask.core.params import SpectrogramParams

if TYPE_CHECKING:
    import torch

    from riffmask.core.codec import ArrayLike


def griffin_lim(
    magnitude: torch.Tensor,
    params: SpectrogramParams,
    n_iter: int,
    momentum: float = 0.99,
    init_phase: torch.Tensor | str = "pghi",
    seed: int = 0,
    circular: bool = False,
) -> torch.Tensor:
    """Fast Griffin-Lim on linear magnitudes (…, n_stft, frames).

    ``init_phase``: ``"pghi"`` (phase predicted from the magnitudes, :mod:`riffmask.core.phase`),
    ``"random"`` (the classic start), or a phase tensor shaped like ``magnitude`` in this codec's
    convention (e.g. ``torch.angle(stft(known_audio))``). Returns ``(frames - 1) * hop`` samples.
    Only bins below ``max_hz`` carry energy, so only those are updated. ``circular``: the frames are
    one period of a loop (see :func:`riffmask.core.codec.circular_stft`); returns ``frames * hop``
    samples that join end to start.
    """
    import torch

    from riffmask.core.codec import _band, _circular_istft_frames, _circular_stft_frames, istft_frames, stft_frames

    used = _band(params)[0]
    mag = magnitude[..., :used, :].transpose(-1, -2).contiguous()  # (…, T, used)
    length = params.samples_for(mag.shape[-2])
    if circular:
        analyse = functools.partial(_circular_stft_frames, params=params, bins=used)
        synthesise = functools.partial(_circular_istft_frames, params=params)
    else:
        analyse = functools.partial(stft_frames, params=params, bins=used)
        synthesise = functools.partial(istft_frames, params=params, length=length)
    if isinstance(init_phase, torch.Tensor):
        phase = init_phase[..., :used, :].transpose(-1, -2).to(mag.dtype)
    elif init_phase in ("random", "pghi"):
        phase = torch.from_numpy(start_phase(mag.numpy(), params, init_phase, seed))
    else:
        raise ValueError(f"init_phase must be 'pghi', 'random' or a tensor, got {init_phase!r}")
    angles = torch.polar(torch.ones_like(mag), phase)
    previous = torch.zeros_like(angles)
    keep = momentum / (1 + momentum)
    for _ in range(n_iter):
        rebuilt = analyse(synthesise(mag * angles))
        angles = torch.sgn(torch.add(rebuilt, previous, alpha=-keep))  # z / |z|, one pass
        previous = rebuilt
    return synthesise(mag * angles)


def start_phase(magnitude: np.ndarray, params: SpectrogramParams, start: str, seed: int) -> np.ndarray:
    """The ``pghi`` or ``random`` start phase (…, frames, bins) of magnitudes laid out that way.

    The random start draws torch's seeded numbers (the paper's decoding), so it loads torch.
    """
    if start == "random":
        import torch

        return (2 * math.pi * torch.rand(magnitude.shape, generator=torch.Generator().manual_seed(seed))).numpy()
    from riffmask.core.phase import pghi

    flat = magnitude.reshape(-1, *magnitude.shape[-2:])
    return np.stack([pghi(m, params, seed=seed) for m in flat]).reshape(magnitude.shape)


def phase_of(audio: ArrayLike, params: SpectrogramParams, shape: torch.Size) -> torch.Tensor:
    """STFT phase of a known sound, cut or zero-padded to the frames of ``shape``."""
    import torch

    from riffmask.core.codec import _as_tensor, stft

    samples = params.samples_for(shape[-1])
    audio = _as_tensor(audio)[..., :samples]
    audio = torch.nn.functional.pad(audio, (0, samples - audio.shape[-1]))
    phase = torch.angle(stft(audio, params))
    if phase.shape != shape:
        raise ValueError(f"init audio gives a phase of shape {tuple(phase.shape)}, need {tuple(shape)}")
    return phase


def decode(mel: ArrayLike, params: SpectrogramParams, cfg, known_audio: ArrayLike | None, seed: int) -> np.ndarray:
    """The ``griffin_lim`` decoder of :mod:`riffmask.core.decode`."""
    if dft.likely():
        audio = _decode_without_torch(np.asarray(mel, np.float32), params, cfg, known_audio, seed)
        if audio is not None:
            return audio
    from riffmask.core.codec import _as_tensor, linear_from_mel

    magnitude = linear_from_mel(mel, params)
    start: torch.Tensor | str = cfg.phase_start
    if known_audio is not None:
        known = _as_tensor(known_audio)
        if known.ndim < magnitude.ndim - 1:  # one sound for a batch of spectrograms
            known = known.expand(*magnitude.shape[:-2], known.shape[-1])
        start = phase_of(known, params, magnitude.shape)
    return griffin_lim(magnitude, params, cfg.resolved_iterations, init_phase=start, seed=seed).numpy()


def _decode_without_torch(
    mel: np.ndarray, params: SpectrogramParams, cfg, known_audio: ArrayLike | None, seed: int
) -> np.ndarray | None:
    """The decoder on :mod:`riffmask.core.inverse`; None where torch's FFT library turns out not to be
    usable. The library loads while the magnitudes and the start phase are computed."""
    from riffmask.core import inverse

    dft.preload()
    magnitude = inverse.linear_from_mel(mel, params)  # (…, frames, used)
    phase = start_phase(magnitude, params, cfg.phase_start, seed) if known_audio is None else None
    if not dft.available():
        return None
    if known_audio is not None:
        phase = inverse.known_phase(np.asarray(known_audio, np.float32), params, magnitude.shape)
    return inverse.griffin_lim(magnitude, params, cfg.resolved_iterations, phase)
