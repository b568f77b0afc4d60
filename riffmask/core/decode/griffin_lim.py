"""Griffin-Lim decoding: pseudo-inverse mel -> linear magnitude, then fast Griffin-Lim (Perraudin et al.,
2013) from a PGHI, random or known-sound phase start."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from riffmask.core.codec import (
    ArrayLike,
    _as_tensor,
    _band,
    _circular_istft_frames,
    _circular_stft_frames,
    istft_frames,
    linear_from_mel,
    stft,
    stft_frames,
)
from riffmask.core.params import SpectrogramParams


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
    elif init_phase == "random":
        phase = 2 * math.pi * torch.rand(mag.shape, generator=torch.Generator().manual_seed(seed))
    elif init_phase == "pghi":
        from riffmask.core.phase import pghi  # numba: loaded only for this start

        flat = mag.reshape(-1, *mag.shape[-2:]).numpy()
        phase = torch.from_numpy(np.stack([pghi(m, params, seed=seed) for m in flat])).reshape(mag.shape)
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


def phase_of(audio: ArrayLike, params: SpectrogramParams, shape: torch.Size) -> torch.Tensor:
    """STFT phase of a known sound, cut or zero-padded to the frames of ``shape``."""
    samples = params.samples_for(shape[-1])
    audio = _as_tensor(audio)[..., :samples]
    audio = torch.nn.functional.pad(audio, (0, samples - audio.shape[-1]))
    phase = torch.angle(stft(audio, params))
    if phase.shape != shape:
        raise ValueError(f"init audio gives a phase of shape {tuple(phase.shape)}, need {tuple(shape)}")
    return phase


def decode(mel: ArrayLike, params: SpectrogramParams, cfg, known_audio: ArrayLike | None, seed: int) -> np.ndarray:
    """The ``griffin_lim`` decoder of :mod:`riffmask.core.decode`."""
    magnitude = linear_from_mel(mel, params)
    start: torch.Tensor | str = cfg.phase_start
    if known_audio is not None:
        known = _as_tensor(known_audio)
        if known.ndim < magnitude.ndim - 1:  # one sound for a batch of spectrograms
            known = known.expand(*magnitude.shape[:-2], known.shape[-1])
        start = phase_of(known, params, magnitude.shape)
    return griffin_lim(magnitude, params, cfg.resolved_iterations, init_phase=start, seed=seed).numpy()
