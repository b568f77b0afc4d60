"""Built-in material made by code: short synthetic genres and an everyday-like sound.

Nothing here is recorded or third-party: every file is synthesised from a seed, so the demo and the
tests have music and a "found sound" on any machine. The genres differ where a spectrogram shows it
(harmony, rhythm, timbre), and each file of a genre gets its own key and tempo.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from riffmask.core.audio import peak_normalize

SR = 44100
#: MIDI roots of the keys the files cycle through (C, E, G, A, D).
_ROOTS = (48, 52, 55, 57, 50)
#: A pop progression as scale degrees (I-V-vi-IV) and the major/minor triads built on them.
_PROGRESSION = ((0, (0, 4, 7)), (7, (0, 4, 7)), (9, (0, 3, 7)), (5, (0, 4, 7)))


def _hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def _time(seconds: float) -> np.ndarray:
    return np.arange(int(round(seconds * SR))) / SR


def _envelope(n: int, attack: float, release: float) -> np.ndarray:
    """Linear attack and release (seconds) over ``n`` samples."""
    env = np.ones(n)
    a, r = min(n, int(attack * SR)), min(n, int(release * SR))
    if a:
        env[:a] = np.linspace(0.0, 1.0, a)
    if r:
        env[n - r :] *= np.linspace(1.0, 0.0, r)
    return env


def _saw(freq: float, t: np.ndarray, harmonics: int = 8) -> np.ndarray:
    return sum(np.sin(2 * np.pi * k * freq * t) / k for k in range(1, harmonics + 1))


def _lowpass(noise: np.ndarray, cutoff_hz: float) -> np.ndarray:
    """One-pole low-pass: coloured noise without the comb notches of a moving average."""
    a = np.exp(-2 * np.pi * cutoff_hz / SR)
    return lfilter([1 - a], [1, -a], noise)


def _add(out: np.ndarray, start: int, sound: np.ndarray) -> None:
    end = min(len(out), start + len(sound))
    if start < end:
        out[start:end] += sound[: end - start]


def _finish(audio: np.ndarray, peak: float = 0.8) -> np.ndarray:
    return peak_normalize(audio.astype(np.float32), peak)


def synthpop(seconds: float, root: int, bpm: float, rng: np.random.Generator) -> np.ndarray:
    """Saw-wave chords over I-V-vi-IV, a bass line, kick on the beat, noise hi-hats and snares."""
    out = np.zeros(len(_time(seconds)))
    beat = 60.0 / bpm
    bar = 4 * beat
    for i, start in enumerate(np.arange(0.0, seconds, bar)):
        degree, triad = _PROGRESSION[i % len(_PROGRESSION)]
        t = _time(bar)
        chord = sum(_saw(_hz(root + 12 + degree + step), t) for step in triad) * 0.08
        bass = _saw(_hz(root - 12 + degree), t, harmonics=4) * 0.2
        _add(out, int(start * SR), (chord + bass) * _envelope(len(t), 0.01, 0.05))
    kick_t = _time(0.25)
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-kick_t * 30)) * kick_t) * np.exp(-kick_t * 12)
    hat = rng.standard_normal(int(0.04 * SR)) * np.exp(-np.arange(int(0.04 * SR)) / (0.008 * SR)) * 0.15
    snare_n = int(0.15 * SR)
    snare = rng.standard_normal(snare_n) * np.exp(-np.arange(snare_n) / (0.04 * SR)) * 0.3
    for k, start in enumerate(np.arange(0.0, seconds, beat / 2)):
        at = int(start * SR)
        _add(out, at, hat)
        if k % 2 == 0:
            _add(out, at, kick * 0.6)
        if k % 4 == 2:
            _add(out, at, snare)
    return _finish(out)


def ambient(seconds: float, root: int, bpm: float, rng: np.random.Generator) -> np.ndarray:
    """Slow, detuned sine pads swelling over minor-seventh chords, with a breath of filtered noise."""
    t = _time(seconds)
    out = np.zeros(len(t))
    chord_len = 16 * 60.0 / bpm
    for i, start in enumerate(np.arange(0.0, seconds, chord_len)):
        tt = _time(min(chord_len * 1.5, seconds - start))
        offset = (0, 5, -2, 3)[i % 4]
        pad = sum(
            np.sin(2 * np.pi * _hz(root + offset + step) * (1 + detune) * tt)
            for step in (0, 3, 7, 10, 12)
            for detune in (-0.003, 0.003)
        )
        _add(out, int(start * SR), pad * 0.05 * _envelope(len(tt), chord_len * 0.15, chord_len * 0.5))
    noise = _lowpass(rng.standard_normal(len(t)), 600.0)
    out += noise * (0.04 + 0.03 * np.sin(2 * np.pi * t / 3.0))
    return _finish(out, peak=0.6)


def chiptune(seconds: float, root: int, bpm: float, rng: np.random.Generator) -> np.ndarray:
    """Square-wave arpeggios in sixteenth notes, a triangle bass and noise-channel drums."""
    out = np.zeros(len(_time(seconds)))
    step = 60.0 / bpm / 4
    note_t = _time(step)
    for k, start in enumerate(np.arange(0.0, seconds, step)):
        degree, triad = _PROGRESSION[(k // 16) % len(_PROGRESSION)]
        pitch = root + 24 + degree + (triad + (12,))[k % 4]
        square = np.sign(np.sin(2 * np.pi * _hz(pitch) * note_t)) * 0.12
        note = square * _envelope(len(note_t), 0.002, step * 0.3)
        if k % 4 == 0:
            tri = 2 / np.pi * np.arcsin(np.sin(2 * np.pi * _hz(root - 12 + degree) * note_t)) * 0.3
            note = note + tri
        if k % 8 == 4:
            note = note + rng.uniform(-0.25, 0.25, len(note_t)) * np.exp(-note_t * 40)
        _add(out, int(start * SR), note)
    return _finish(out)


GENRES: dict[str, Callable[[float, int, float, np.random.Generator], np.ndarray]] = {
    "synthpop": synthpop,
    "ambient": ambient,
    "chiptune": chiptune,
}
_TEMPOS = {"synthpop": (112, 124, 100), "ambient": (70, 60, 80), "chiptune": (140, 150, 132)}


def genre_clip(genre: str, index: int, seconds: float, seed: int = 0) -> np.ndarray:
    """File ``index`` of a built-in genre: its own key and tempo, deterministic from ``seed``."""
    if genre not in GENRES:
        raise ValueError(f"unknown built-in genre {genre!r}; choose from {', '.join(GENRES)}")
    tempos = _TEMPOS[genre]
    rng = np.random.default_rng([seed, index, sorted(GENRES).index(genre)])
    root = _ROOTS[index % len(_ROOTS)]
    return GENRES[genre](seconds, root, float(tempos[index % len(tempos)]), rng)


def write_builtin_genres(
    root: str | os.PathLike,
    seconds: float = 12.0,
    files_per_genre: int = 3,
    seed: int = 0,
    genres: tuple[str, ...] = tuple(GENRES),
    fmt: str = "wav",
) -> list[Path]:
    """Write ``root/<genre>/<genre>_<k>.<fmt>`` for the built-in genres; returns the files written.

    ``fmt`` is any format libsndfile writes by extension (``wav``, ``flac``, ``ogg``, ``mp3``).
    """
    written = []
    for genre in genres:
        folder = Path(root) / genre
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(files_per_genre):
            path = folder / f"{genre}_{index}.{fmt}"
            sf.write(str(path), genre_clip(genre, index, seconds, seed), SR)
            written.append(path)
    return written


def kettle(seconds: float = 6.0, seed: int = 0) -> np.ndarray:
    """A kettle: a rumble of boiling noise growing, then a whistle rising in pitch out of it."""
    rng = np.random.default_rng(seed)
    t = _time(seconds)
    growth = np.clip(t / seconds, 0.0, 1.0)
    rumble = _lowpass(rng.standard_normal(len(t)), 400.0)
    bubbles = np.zeros(len(t))
    for at in rng.uniform(0, seconds, int(25 * seconds)):
        n = int(rng.uniform(0.01, 0.04) * SR)
        pop = np.sin(2 * np.pi * rng.uniform(300, 900) * _time(n / SR)) * np.exp(-np.arange(n) / (0.005 * SR))
        _add(bubbles, int(at * SR), pop * rng.uniform(0.05, 0.2) * (at / seconds))
    onset = 0.3 * seconds
    rise = np.clip((t - onset) / (seconds - onset), 0.0, 1.0)
    freq = 1400 + 900 * rise + 15 * np.sin(2 * np.pi * 5.5 * t)  # glide up, with a flutter
    whistle = np.sin(2 * np.pi * np.cumsum(freq) / SR) * np.sqrt(rise) * 0.6
    audio = rumble * (0.1 + 0.4 * growth) + bubbles + whistle + rng.standard_normal(len(t)) * 0.01 * rise
    return _finish(audio)


def write_builtin_sound(path: str | os.PathLike, seconds: float = 6.0, seed: int = 0) -> Path:
    """Write the built-in everyday-like sound (a kettle coming to the boil) as a WAV; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), kettle(seconds, seed), SR, subtype="PCM_16")
    return path
