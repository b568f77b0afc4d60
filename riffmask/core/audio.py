"""Reading and writing audio: any common format and rate in, mono float32 at 44.1 kHz out."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import soxr

from riffmask.common.errors import RiffmaskError
from riffmask.common.io import atomic_path

if TYPE_CHECKING:
    from riffmask.core.params import SpectrogramParams

log = logging.getLogger(__name__)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".opus")


class AudioError(RiffmaskError):
    """An input that cannot be used as audio; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


#: What libsndfile raises for a file it cannot parse.
_LIBSNDFILE_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError)


def _existing_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path; :class:`AudioError` when it is a folder, no file or an empty one."""
    path = Path(path)
    if path.is_dir():
        raise AudioError(path, "is a folder, not an audio file")
    if not path.is_file():
        raise AudioError(path, "no such file")
    if path.stat().st_size == 0:
        raise AudioError(path, "the file is empty")
    return path


def _unreadable(path: Path, exc: Exception) -> AudioError:
    return AudioError(path, f"not a readable audio file ({_why_unreadable(path, exc)})")


def _why_unreadable(path: Path, exc: Exception) -> str:
    """libsndfile's reason, unless it misleads: for content it does not know it blames pipes."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head and all(32 <= b < 127 or b in b"\t\n\r" for b in head):
        return "it holds text, not audio"
    if "possibly a pipe" in str(exc):
        return f"its contents are in no audio format that libsndfile {sf.__libsndfile_version__} reads"
    return str(exc)


def _warn_if_cancelled(path: Path, channels: np.ndarray, mono: np.ndarray) -> None:
    """Warn when the channels (nearly) cancel in the mono mix: what remains is noise, scaled up to full level."""
    if channels.shape[1] < 2:
        return
    loudest = float(np.sqrt(np.mean(np.square(channels, dtype=np.float64), axis=0)).max())
    mixed = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64))))
    if loudest > 1e-4 and mixed < 0.1 * loudest:
        log.warning(
            "%s: the channels cancel out in the mono mix (%.0f dB below the loudest channel); "
            "the result is made from what is left. Use one channel of the file instead",
            path, 20 * np.log10(max(mixed, 1e-12) / loudest),
        )  # fmt: skip


def is_audio_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def audio_header(path: str | os.PathLike) -> sf._SoundFileInfo:
    """``path``'s header (``samplerate``, ``frames``, ``duration``, …) without reading its samples.

    Raises :class:`AudioError` as :func:`load_audio` does for a missing, empty or unreadable file.
    """
    path = _existing_file(path)
    try:
        return sf.info(str(path))
    except _LIBSNDFILE_ERRORS as exc:
        raise _unreadable(path, exc) from None


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = 44100,
    start: float = 0.0,
    duration: float | None = None,
) -> np.ndarray:
    """Load ``path`` as mono float32 at ``sample_rate``, from ``start`` seconds for ``duration``.

    Stereo is averaged to mono; other rates are resampled with soxr (high quality). Raises
    :class:`AudioError` for a missing, empty, unreadable or non-audio file, or one holding NaN/Inf.
    """
    path = _existing_file(path)
    # not (start >= 0) is also true for NaN; an infinite start or duration counts no samples.
    if not (0 <= start < math.inf) or (duration is not None and not (0 < duration < math.inf)):
        raise AudioError(path, f"invalid range start={start} duration={duration}")
    try:
        with sf.SoundFile(str(path)) as f:
            native_rate = f.samplerate
            first = int(round(start * native_rate))
            if f.frames and first >= f.frames:
                raise AudioError(path, f"start {start:.2f} s is past the end ({f.frames / native_rate:.2f} s)")
            if first:
                f.seek(first)
            count = -1 if duration is None else int(round(duration * native_rate))
            data = f.read(count, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except _LIBSNDFILE_ERRORS as exc:
        raise _unreadable(path, exc) from None
    if data.shape[0] == 0:
        raise AudioError(path, "contains no audio samples")
    if not np.isfinite(data).all():
        raise AudioError(path, "contains NaN or infinite samples")
    mono = data.mean(axis=1, dtype=np.float32)
    _warn_if_cancelled(path, data, mono)
    if native_rate != sample_rate:
        mono = soxr.resample(mono, native_rate, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(mono)


def load_part(path: str | os.PathLike, params: SpectrogramParams, start: float = 0.0,
              seconds: float | None = None) -> np.ndarray:
    """:func:`load_audio` at the format's rate, refusing a part too short for a spectrogram
    (:data:`MIN_FRAMES` columns): a file cut off after its header, a start just before the end."""
    audio = load_audio(path, params.sample_rate, start=start, duration=seconds)
    if len(audio) < params.min_samples:
        raise AudioError(
            path,
            f"too short: {len(audio)} samples from start={start:g} s; a spectrogram needs at least "
            f"{params.min_samples} samples ({params.min_samples / params.sample_rate * 1000:g} ms)",
        )
    return audio


def peak_normalize(audio: np.ndarray, peak: float = 0.99) -> np.ndarray:
    """Scale so that the largest magnitude is ``peak``; silence stays silence."""
    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio if top == 0.0 else (audio * (peak / top)).astype(np.float32)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = 44100) -> None:
    """Write 16-bit PCM WAV atomically (nothing half-written is left if this fails)."""
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
