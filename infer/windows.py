"""MultiDiffusion windows over a wide latent: where they lie, how they blend, where they join.

A long input is a line: the fewest windows that share at least ``overlap`` columns, spread evenly
from edge to edge. A loop is a circle: windows spread evenly around it, the last ones running past
the end into the start (as diffusers' panorama pipeline does with ``circular_padding``). Either way
every join is made alike: a window ramps in over the columns it shares with the window before it
and out over those it shares with the one after, so neighbours' opposite ramps sum to one.
"""

from __future__ import annotations

import math

import torch

Columns = slice | torch.Tensor


def window_starts(width: int, window: int, overlap: int, loop: bool = False) -> list[int]:
    """First column of each window (latent px); one window at 0 when the whole width fits."""
    if width <= window:
        return [0]
    if not 0 <= overlap < window:
        raise ValueError(f"window overlap {overlap} must be at least 0 and less than the window {window}")
    stride = window - overlap
    if loop:
        count = math.ceil(width / stride)
        return [round(k * width / count) for k in range(count)]
    count = math.ceil((width - window) / stride) + 1
    return [round(k * (width - window) / (count - 1)) for k in range(count)]


def window_layout(
    width: int, window: int, overlap: int, loop: bool = False
) -> tuple[list[Columns], list[torch.Tensor]]:
    """The columns of each window (a slice, or indices that wrap for a loop) and its weights (1, 1, 1, w)."""
    starts = window_starts(width, window, overlap, loop)
    if len(starts) == 1:
        return [slice(0, width)], [torch.ones(1, 1, 1, width)]
    shared_after = [window - (b - a) for a, b in _neighbours(starts, width, loop)] + ([] if loop else [0])
    shared_before = shared_after[-1:] + shared_after[:-1] if loop else [0] + shared_after[:-1]
    weights = [_profile(window, before, after) for before, after in zip(shared_before, shared_after, strict=True)]
    if loop:
        return [(torch.arange(window) + s) % width for s in starts], weights
    return [slice(s, s + window) for s in starts], weights


def window_joins(width: int, window: int, overlap: int, loop: bool = False) -> list[float]:
    """Where neighbouring windows meet (the middle of their overlap), in columns; none for one window."""
    starts = window_starts(width, window, overlap, loop)
    if len(starts) == 1:
        return []
    joins = [(a + window + b) / 2 for a, b in _neighbours(starts, width, loop)]
    return sorted(j % width for j in joins) if loop else joins


def _neighbours(starts: list[int], width: int, loop: bool) -> list[tuple[int, int]]:
    """The starts of each pair of neighbouring windows; a loop's last window is followed by the first,
    one lap on."""
    ends = starts[1:] + ([starts[0] + width] if loop else [])
    return list(zip(starts, ends, strict=False))


def _profile(window: int, before: int, after: int) -> torch.Tensor:
    profile = torch.ones(window)
    if before > 0:
        profile[:before] = _ramp(before)
    if after > 0:
        profile[-after:] = torch.minimum(profile[-after:], _ramp(after).flip(0))
    return profile.view(1, 1, 1, -1)


def _ramp(columns: int) -> torch.Tensor:
    return torch.arange(1, columns + 1, dtype=torch.float32) / (columns + 1)
