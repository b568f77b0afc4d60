"""Seam scores: how much a join in a sound stands out from the sound's own changes.

A join is a place where two pieces meet: the wrap of a loop (its end followed by its start), the
border between windows or clips of a long generation, a splice. Two numbers per join:

* ``seam``: the log-mel spectral flux between the last analysis frame that ends before the join and
  the first that starts after it, divided by the median of the same flux (frames the same distance
  apart) over the rest of the sound. 1.0: the join changes the sound no more than a typical moment
  of it does; a splice of two different sounds scores several times that.
* ``click``: the sample jump across the join divided by the root mean square of the sound's
  sample-to-sample changes. Below about 2 for any ordinary pair of neighbouring samples; a step in
  the waveform (a click) scores far above :data:`CLICK_LIMIT`.

``rank`` is the share of the interior changes that are smaller than the join's (0.5 typical,
1.0 larger than all of them), a scale-free view of the same comparison.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from riffmask.common.errors import RiffmaskError

#: Analysis frames: 2048 samples (46 ms at 44.1 kHz), hop 256, 64 mel bands up to 16 kHz.
N_FFT = 2048
HOP = 256
N_MELS = 64
#: Flux is measured on log-mel with a floor 80 dB below the sound's loudest cell.
FLOOR_DB = 80.0
#: A join whose sample jump exceeds this many RMS sample-to-sample changes is reported as a click.
CLICK_LIMIT = 4.0
#: Added to the join's and the interior's flux: changes well under 1 dB are inaudible, and without it
#: a steady tone (interior flux near 0) would turn numerical noise into huge ratios.
FLUX_FLOOR_DB = 1.0
#: Interior frame pairs needed for a meaningful median.
MIN_INTERIOR = 8


@dataclass(frozen=True)
class SeamScore:
    """Scores of one join at ``seconds`` (the wrap of a loop sits at the sound's length)."""

    seconds: float
    seam: float
    click: float
    rank: float
    wrap: bool = False

    @property
    def clicks(self) -> bool:
        return self.click > CLICK_LIMIT

    def as_dict(self) -> dict:
        return {
            "at": "wrap" if self.wrap else round(self.seconds, 3),
            "seam": self.seam,
            "click": self.click,
            "rank": self.rank,
        }


def _log_mel(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(
        y=audio, sr=sample_rate, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, center=False, power=2.0
    )
    floor = max(float(mel.max()), 1e-20) * 10 ** (-FLOOR_DB / 10)
    return np.log10(np.maximum(mel, floor)) * 10  # dB, (bands, frames)


def seam_scores(
    audio: np.ndarray,
    sample_rate: int = 44100,
    at: Sequence[float] = (),
    wrap: bool = False,
) -> list[SeamScore]:
    """Scores of the joins at ``at`` seconds and, with ``wrap``, of the end followed by the start.

    Raises :class:`RiffmaskError` when the sound is too short to compare a join with its interior
    or a join lies outside it.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise RiffmaskError(f"expected mono audio, got shape {audio.shape}")
    n = len(audio)
    joins = sorted({int(round(t * sample_rate)) for t in at})
    if any(j <= 0 or j >= n for j in joins):
        raise RiffmaskError(f"join times must lie inside the sound (0 to {n / sample_rate:.3f} s), got {list(at)}")
    if wrap:
        # The loop played end to start: the start again after the end, far enough for frames after the wrap.
        extra = min(n, sample_rate)
        audio = np.concatenate([audio, audio[:extra]])
        joins.append(n)
    if not joins:
        return []
    mel = _log_mel(audio, sample_rate)
    frames = mel.shape[1]
    # Frame k covers samples [k*HOP, k*HOP + N_FFT). Across a join at j: the last frame ending by j
    # and the first starting at or after j; interior pairs keep the same distance in frames.
    lefts = [(j - N_FFT) // HOP for j in joins]
    rights = [-(-j // HOP) for j in joins]
    gap = max(r - left for left, r in zip(lefts, rights, strict=True))
    starts = np.arange(max(frames - gap, 0))
    if not len(starts):
        raise RiffmaskError(f"sound too short to score joins ({n / sample_rate:.3f} s)")
    flux = np.abs(mel[:, starts + gap] - mel[:, starts]).mean(axis=0)
    span_start, span_end = starts * HOP, (starts + gap) * HOP + N_FFT
    interior = np.ones(len(starts), dtype=bool)
    for j in joins:
        interior &= ~((span_start < j) & (span_end > j))
    if wrap:
        interior &= starts * HOP < n  # the repeated start is counted once
    reference = flux[interior]
    if len(reference) < MIN_INTERIOR:
        raise RiffmaskError(f"sound too short to score joins ({n / sample_rate:.3f} s)")
    median = float(np.median(reference)) + FLUX_FLOOR_DB
    diffs = np.diff(audio[: n + 1] if wrap else audio)
    typical = float(np.sqrt(np.mean(diffs.astype(np.float64) ** 2)))
    scores = []
    for j, left, right in zip(joins, lefts, rights, strict=True):
        change = float(np.abs(mel[:, right] - mel[:, max(left, 0)]).mean())
        jump = abs(float(audio[j]) - float(audio[j - 1]))
        scores.append(
            SeamScore(
                seconds=j / sample_rate,
                seam=(change + FLUX_FLOOR_DB) / median,
                click=jump / typical if typical > 0 else (math.inf if jump > 0 else 0.0),
                rank=float(np.mean(reference < change)),
                wrap=wrap and j == n,
            )
        )
    return scores


def file_row(name: str, scores: Sequence[SeamScore]) -> dict:
    """One result row: the worst and mean seam, the worst click, and every join (JSON only)."""
    if not scores:
        return {"name": name, "joins": 0, "error": "no joins to score"}
    seams = [s.seam for s in scores]
    return {
        "name": name,
        "joins": len(scores),
        "seam_mean": float(np.mean(seams)),
        "seam_max": float(np.max(seams)),
        "click_max": float(max(s.click for s in scores)),
        "clicks": sum(s.clicks for s in scores),
        "wrap_seam": next((s.seam for s in scores if s.wrap), None),
        "error": "",
        "at": [s.as_dict() for s in scores],
    }


COLUMNS = ["name", "joins", "seam_mean", "seam_max", "click_max", "clicks", "wrap_seam", "error"]


@dataclass(frozen=True)
class SeamJob:
    """A sound to score and where its joins are."""

    name: str
    path: Path
    at: tuple[float, ...] = ()
    wrap: bool = False


def jobs_for(paths: Sequence[str | os.PathLike], at: Sequence[float] = (), wrap: bool = False) -> list[SeamJob]:
    """What to score: audio files as given; a ``riffmask generate`` folder by its sidecars (their
    recorded window joins, and the wrap of loops); any other folder by its audio files."""
    from riffmask.common.io import safe_stem
    from riffmask.core.audio import is_audio_file
    from riffmask.metrics.embeddings import audio_files
    from riffmask.metrics.pairs import read_sidecars, sidecar_file

    jobs: list[SeamJob] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise RiffmaskError(f"{path}: no such file or folder")
        if path.is_file():
            if not is_audio_file(path):
                raise RiffmaskError(f"{path}: not an audio file")
            jobs.append(SeamJob(safe_stem(path.stem), path, tuple(at), wrap))
            continue
        sidecars = read_sidecars(path)
        if not sidecars:
            jobs += [SeamJob(safe_stem(p.stem), p, tuple(at), wrap) for p in audio_files(path)]
            continue
        for name, sidecar in sidecars:
            audio = sidecar_file(path, sidecar, "output_audio")
            if audio is None:
                continue
            joins = tuple(sorted({*at, *(float(t) for t in sidecar.get("joins") or ())}))
            looped = wrap or sidecar_loops(sidecar)
            jobs.append(SeamJob(name, audio, joins, looped))
    if not jobs:
        raise RiffmaskError(f"no sounds to score in {' '.join(map(str, paths))}")
    return jobs


def sidecar_loops(sidecar: dict) -> bool:
    """Whether a ``riffmask generate`` sidecar records a loop (its config's ``looping.loop``)."""
    looping = (sidecar.get("config") or {}).get("looping")
    return isinstance(looping, dict) and bool(looping.get("loop"))


def score_jobs(jobs: Sequence[SeamJob], sample_rate: int = 44100) -> tuple[list[dict], dict]:
    """Rows per sound and the summary over all of them; a sound that fails is a row with its error."""
    from riffmask.core.audio import load_audio
    from riffmask.metrics.results import summarize

    rows = []
    for job in jobs:
        try:
            scores = seam_scores(load_audio(job.path, sample_rate), sample_rate, job.at, job.wrap)
            rows.append(file_row(job.name, scores))
        except RiffmaskError as exc:
            rows.append({"name": job.name, "joins": 0, "error": str(exc)})
    scored = [r for r in rows if not r["error"]]
    summary = summarize(rows, ["seam_mean", "seam_max", "click_max"])
    all_seams = [a["seam"] for r in scored for a in r["at"]]
    summary.update(
        joins=len(all_seams),
        seam_median=float(np.median(all_seams)) if all_seams else math.nan,
        clicks=sum(r["clicks"] for r in scored),
    )
    return rows, summary
