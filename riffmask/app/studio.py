"""What the studio does, without its page: read a sound's part, draw its spectrogram and mask, make
takes, list them. Every step is the stage function that the commands use, so the studio's mask is
``riffmask mask``'s and its takes are ``riffmask generate``'s, byte for byte.

Takes are written to the output folder in ``riffmask generate``'s layout (``NAME.wav``,
``NAME_input.wav``, the three PNGs and the sidecar ``NAME.json``, last). The sound a take was made
from is kept under ``sources/`` in that folder, and the sidecar names it, so
``riffmask generate --like NAME.json`` makes the take again and ``riffmask eval pairs`` scores the
folder. Problems a user can fix raise :class:`RiffmaskError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image, ImageChops

from riffmask.app.models import ModelCache, leaves
from riffmask.common.config import build_config, config_dict
from riffmask.common.errors import RiffmaskError
from riffmask.common.io import safe_stem
from riffmask.core.audio import AudioError, write_wav
from riffmask.infer.config import GenerateConfig
from riffmask.infer.files import item_sidecar, read_part, write_item
from riffmask.infer.generate import generate_sound, input_spectrogram
from riffmask.infer.mask import MaskParams, make_mask, mask_steps, steps_image
from riffmask.infer.out_folder import item_files, item_names
from riffmask.metrics.similarity import chroma_similarity, ssim

log = logging.getLogger(__name__)

#: Longest file accepted: a part is at most ``max_seconds`` anyway, and decoding more costs time.
MAX_FILE_SECONDS = 600.0
#: Peak below which a part counts as silence (-80 dBFS): its mask would be empty.
SILENCE_PEAK = 1e-4
#: Options a request may set, named as ``riffmask generate``'s; the rest come from the app's config.
REQUEST_KEYS = (
    "prompt", "negative_prompt", "strength", "guidance", "steps", "seed", "num_variations",
    "invert", "brightness", "contrast", "downshift", "start", "duration",
    "iterations", "phase_start", "model", "lora", "lora_scale", "scheduler",
)  # fmt: skip
SOURCES = "sources"


class Cancelled(RiffmaskError):
    """The user pressed Cancel; the run stopped between two denoising steps."""


@dataclass
class Take:
    """One result written to the output folder, with its similarity to the input: SSIM of the two
    spectrograms (SPEC §4) and the chroma similarity of the input part and the music."""

    name: str
    files: dict[str, Path]
    sidecar: dict[str, Any]
    ssim: float
    chroma: float


def overlay(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The spectrogram in grey with the mask laid over it in red: red where the input is kept longest."""
    grey = image.convert("L")
    red = ImageChops.lighter(grey, mask.convert("L"))
    return Image.merge("RGB", (red, grey, grey))


class Studio:
    """The studio's state: the app's base config, its output folder and the loaded models."""

    def __init__(self, base: GenerateConfig):
        self.base = base
        self.defaults = leaves(config_dict(base))
        self.out = Path(self.defaults["out"]).expanduser().resolve()
        self.models = ModelCache()
        self.metrics: dict[str, tuple[float, float]] = {}

    # ------------------------------------------------------------------ settings
    def config(self, settings: dict[str, Any]) -> GenerateConfig:
        """The app's config with a request's settings on top (unknown or bad values: one-line error)."""
        unknown = sorted(set(settings) - set(REQUEST_KEYS))
        if unknown:
            raise RiffmaskError(f"unknown setting(s): {', '.join(unknown)}")
        return build_config(GenerateConfig, ("riffmask app", config_dict(self.base)), ("the request", settings))

    def load(self, settings: dict[str, Any]) -> None:
        """Load (or reuse) the model, LoRAs and scheduler that ``settings`` name, ahead of a generation."""
        cfg = self.config(settings)
        with self.models.lock:
            self.models.pipeline(cfg)

    # ------------------------------------------------------------------ sound
    def read_sound(self, sound: str | None, cfg: GenerateConfig) -> np.ndarray:
        """The part of ``sound`` that ``cfg`` selects, checked: readable, not too long, short or silent."""
        if not sound:
            raise RiffmaskError("no sound: upload a file, record one or pick an example")
        name = Path(sound).name
        options = leaves(config_dict(cfg))
        limit = options["max_seconds"]
        if options["duration"] is not None and limit is not None and options["duration"] > limit:
            raise RiffmaskError(f"duration {options['duration']:g} s is over max_seconds ({limit:g} s)")
        try:
            info = sf.info(sound)
        except (sf.LibsndfileError, RuntimeError, TypeError, OSError):
            info = None  # load_audio names the problem (empty, unreadable) below
        if info is not None and info.duration > MAX_FILE_SECONDS:
            raise RiffmaskError(f"{name}: too long ({info.duration:.0f} s; at most {MAX_FILE_SECONDS:.0f} s)")
        try:
            audio = read_part(Path(sound), cfg)
        except AudioError as exc:
            raise RiffmaskError(f"{name}: {exc.problem}") from None
        if float(np.max(np.abs(audio))) < SILENCE_PEAK:
            raise RiffmaskError(f"{name}: the part from {options['start']:g} s is silent")
        return audio

    def spectrogram(self, sound: str | None, start: float = 0.0, duration: float | None = None) -> Image.Image:
        """The spectrogram image of the part, exactly as ``riffmask generate`` feeds it to the model."""
        cfg = self.config({"start": start, "duration": duration})
        return input_spectrogram(self.read_sound(sound, cfg), cfg)[1]

    def part(self, sound: str | None, start: float = 0.0, duration: float | None = None) -> tuple[int, np.ndarray]:
        """(sample rate, samples) of the part that will be processed, to listen to."""
        cfg = self.config({"start": start, "duration": duration})
        return cfg.spectrogram.params.sample_rate, self.read_sound(sound, cfg)

    # ------------------------------------------------------------------ mask
    @staticmethod
    def mask(image: Image.Image, invert: float, brightness: float, contrast: float, downshift: float) -> Image.Image:
        """``riffmask mask`` of a spectrogram image with these values (negative skips a step)."""
        return make_mask(image, mask_params(invert, brightness, contrast, downshift))

    @staticmethod
    def mask_views(
        image: Image.Image, invert: float, brightness: float, contrast: float, downshift: float
    ) -> tuple[Image.Image, Image.Image]:
        """(overlay of the mask on the spectrogram, ``riffmask mask --steps-image``'s sheet)."""
        steps = mask_steps(image, mask_params(invert, brightness, contrast, downshift))
        return overlay(image, steps[-1][1]), steps_image(steps)

    # ------------------------------------------------------------------ generate
    def generate(
        self, sound: str | None, settings: dict[str, Any], on_step: Callable[[int, int], None] | None = None
    ) -> list[Take]:
        """Takes of ``sound`` with ``settings``, written to the output folder like ``riffmask generate``."""
        cfg = self.config(settings)
        audio = self.read_sound(sound, cfg)
        source = self.keep_source(Path(sound))
        with self.models.lock:
            pipe = self.models.pipeline(cfg)
            started = time.perf_counter()
            generations = generate_sound(pipe, audio, cfg, on_step)
            seconds = (time.perf_counter() - started) / len(generations)
            names = self.new_names(source, len(generations))
            takes = []
            for name, gen in zip(names, generations, strict=True):
                sidecar = item_sidecar(gen, cfg, source, name, seconds, pipe)
                write_item(gen, self.out, name, sidecar)
                # Chroma of the two sounds heard (no decoding: 0.1 s, where the paper's way of decoding
                # both images again, as `riffmask eval pairs` does, takes 20 s per 5 s clip on a CPU).
                scores = ssim(gen.input_image, gen.output_image), chroma_similarity(gen.input_audio, gen.audio)
                self.metrics[name] = scores
                paths = {role: self.out / file for role, file in item_files(name).items()}
                takes.append(Take(name, paths, sidecar, *scores))
        return takes

    def keep_source(self, sound: Path) -> Path:
        """A copy of the uploaded file under ``OUT/sources`` (named by its content), which sidecars name."""
        digest = hashlib.sha256(sound.read_bytes()).hexdigest()[:12]
        kept = self.out / SOURCES / f"{safe_stem(sound.stem, 'sound')}-{digest}{sound.suffix.lower()}"
        if not kept.is_file():
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sound, kept)
        return kept

    def new_names(self, source: Path, count: int) -> list[str]:
        """Names for ``count`` new takes of ``source`` that no file in the output folder has yet."""
        stem = source.stem.rsplit("-", 1)[0]
        for k in itertools.count(1):
            names = item_names(f"{stem}_{k:03d}", count)
            if not any((self.out / f).exists() for n in names for f in item_files(n).values()):
                return names

    # ------------------------------------------------------------------ takes
    def takes(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, sidecar) of every take in the output folder, newest first (app or ``riffmask generate``)."""
        from riffmask.metrics.pairs import read_sidecars

        if not self.out.is_dir():
            return []
        found = read_sidecars(self.out)
        return sorted(found, key=lambda item: (self.out / f"{item[0]}.json").stat().st_mtime, reverse=True)

    def take_files(self, name: str) -> list[Path]:
        """The files of take ``name`` (its sidecar last), all inside the output folder."""
        names = item_files(safe_stem(name))
        paths = [self.out / f for f in names.values()]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise RiffmaskError(f"take {name!r}: missing {', '.join(missing)} in {self.out}")
        return paths

    def take_settings(self, name: str) -> tuple[dict[str, Any], Path | None]:
        """(the request settings a take was made with, its kept source sound when in the folder)."""
        path = self.out / f"{safe_stem(name)}.json"
        sidecar = dict(self.takes()).get(path.stem)
        if sidecar is None or not isinstance(sidecar.get("config"), dict):
            raise RiffmaskError(f"take {name!r}: no sidecar with settings in {self.out}")
        options = leaves(sidecar["config"])
        source = Path(str(sidecar.get("input", "")))
        inside = source.is_file() and source.resolve().is_relative_to(self.out)
        return {k: options[k] for k in REQUEST_KEYS if k in options}, source if inside else None


def mask_params(invert: float, brightness: float, contrast: float, downshift: float) -> MaskParams:
    """The mask knobs as the slider values give them (negative skips a step, as in the CLI)."""
    params = MaskParams(float(invert), float(brightness), float(contrast), int(round(float(downshift))))
    params.validate()
    return params


def write_example(folder: Path, name: str, make: Callable[[], np.ndarray]) -> Path:
    """A built-in example sound as ``folder/NAME.wav`` (written once)."""
    path = folder / f"{name}.wav"
    if not path.is_file():
        write_wav(path, make())
    return path
