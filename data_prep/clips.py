"""Cutting a long recording into fixed-length clips and telling music from near-silence."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Clip:
    """One clip of a recording: its position and samples (zero-padded when it is the short tail)."""

    index: int
    start: int
    audio: np.ndarray
    length: int  # samples of real audio; the rest of a tail clip is zero padding

    @property
    def padded(self) -> bool:
        return self.length < len(self.audio)


def clip_starts(num_samples: int, clip_samples: int, hop_samples: int, min_tail_samples: int) -> list[int]:
    """Start samples of the clips: every ``hop_samples``, plus a final partial clip of at least
    ``min_tail_samples`` (a tail already covered by the previous clip is not repeated)."""
    if clip_samples <= 0 or hop_samples <= 0:
        raise ValueError("clip and hop lengths must be positive")
    starts = list(range(0, num_samples - clip_samples + 1, hop_samples))
    tail = starts[-1] + hop_samples if starts else 0
    covered = starts[-1] + clip_samples if starts else 0
    if num_samples - tail >= max(min_tail_samples, 1) and num_samples > covered:
        starts.append(tail)
    return starts


def cut_clips(audio: np.ndarray, clip_samples: int, hop_samples: int, min_tail_samples: int) -> list[Clip]:
    """The clips of ``audio`` (see :func:`clip_starts`); a short tail is zero-padded to full length."""
    clips = []
    for index, start in enumerate(clip_starts(len(audio), clip_samples, hop_samples, min_tail_samples)):
        piece = audio[start : start + clip_samples]
        length = len(piece)
        if length < clip_samples:
            piece = np.pad(piece, (0, clip_samples - length))
        clips.append(Clip(index, start, np.ascontiguousarray(piece, dtype=np.float32), length))
    return clips


def rms_db(audio: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale (-inf for digital silence)."""
    if audio.size == 0:
        return float("-inf")
    power = float(np.mean(np.square(audio, dtype=np.float64)))
    return 10.0 * np.log10(power) if power > 0 else float("-inf")
