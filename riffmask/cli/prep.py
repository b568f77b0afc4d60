"""``riffmask spectrogram``, ``riffmask audio`` and ``riffmask prep``: the data stage's commands."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from riffmask.common.config import add_config_arguments, add_option_flags, config_from_args
from riffmask.core.decode import DecodeConfig
from riffmask.core.params import SpectrogramOptions
from riffmask.data_prep.config import PrepConfig
from riffmask.infer.config import InputConfig


@dataclass
class SpectrogramConfig:
    """Options of ``riffmask spectrogram``: generate's part of a sound (whole by default) and image format."""

    input: InputConfig = field(default_factory=lambda: InputConfig(max_seconds=None))
    spectrogram: SpectrogramOptions = field(default_factory=SpectrogramOptions)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "spectrogram",
        help="audio file -> spectrogram PNG",
        description="Write the Riffusion spectrogram image (with EXIF) of an audio file or part of it. "
        "Options may also be given as key=value (duration=5.11 gives 512 px).",
    )
    p.add_argument("in_audio", metavar="IN_AUDIO")
    p.add_argument("out_png", metavar="OUT_PNG")
    add_option_flags(p, SpectrogramConfig, skip=("spectrogram_mode",))
    p.add_argument(
        "--mode",
        dest="spectrogram.spectrogram_mode",
        choices=("paper", "riffusion"),
        default=argparse.SUPPRESS,
        help="pixel scaling, also spectrogram_mode=...: paper (max volume rounded up, default) or riffusion",
    )
    p.set_defaults(func=spectrogram_command)

    p = subparsers.add_parser(
        "audio",
        help="spectrogram PNG -> WAV",
        description="Reconstruct audio from a spectrogram image (pseudo-inverse mel, then a decoder: Griffin-Lim).",
    )
    p.add_argument("in_png", metavar="IN_PNG")
    p.add_argument("out_wav", metavar="OUT_WAV")
    add_config_arguments(p, DecodeConfig, skip=("phase_start",))
    p.add_argument(
        "--phase-start",
        dest="phase_start",
        choices=("pghi", "random"),
        default=argparse.SUPPRESS,
        help="Griffin-Lim start: the phase the magnitudes predict (pghi, default, 10 iterations) or random "
        "(the paper's torchaudio path, 32 iterations)",
    )
    p.set_defaults(func=audio_command)

    p = subparsers.add_parser(
        "prep",
        help="genre folders -> training dataset",
        description=(
            "Cut every audio file under GENRE_ROOT/<genre>/ into clips, write their spectrograms, "
            "WAVs, captions and metadata as a Hugging Face dataset in OUT_DIR. Safe to interrupt and "
            "rerun; new files are added incrementally. Options may also be given as key=value."
        ),
    )
    p.add_argument("genre_root", metavar="GENRE_ROOT")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--dry-run", action="store_true", help="show what would be done; write nothing")
    add_config_arguments(p, PrepConfig)
    p.set_defaults(func=prep_command)


def spectrogram_command(args: argparse.Namespace) -> int:
    from riffmask.common.io import output_file
    from riffmask.core.audio import load_part
    from riffmask.core.forward import audio_to_image  # numpy and torch's FFT library: no torch import
    from riffmask.core.image import save_image

    cfg = config_from_args(SpectrogramConfig, args, args.overrides)
    output_file(args.out_png, "OUT_PNG", ".png", keep={"IN_AUDIO": args.in_audio})
    params = cfg.spectrogram.params
    audio = load_part(args.in_audio, params, cfg.input.start, cfg.input.seconds)
    image = audio_to_image(audio, params, mode=cfg.spectrogram.spectrogram_mode)
    save_image(image, args.out_png)
    print(f"{args.out_png}: {image.width}x{image.height} px, {len(audio) / params.sample_rate:.2f} s of audio")
    return 0


def audio_command(args: argparse.Namespace) -> int:
    import numpy as np

    from riffmask.common.io import output_file
    from riffmask.core.audio import write_wav
    from riffmask.core.decode import image_to_audio
    from riffmask.core.image import ImageError, load_image, params_from_image

    cfg = config_from_args(DecodeConfig, args, args.overrides)
    output_file(args.out_wav, "OUT_WAV", ".wav", keep={"IN_PNG": args.in_png})
    image = load_image(args.in_png)
    try:  # the image's EXIF and size are checked on the way: name the file in what goes wrong
        params = params_from_image(image)
        audio = image_to_audio(image, cfg)
    except ImageError as exc:
        raise ImageError(f"{args.in_png}: {exc}") from None
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 1.0:  # the image's own max volume restores the loudness; only avoid clipping
        audio = audio / peak
    write_wav(args.out_wav, audio.T, params.sample_rate)
    print(f"{args.out_wav}: {audio.shape[-1] / params.sample_rate:.2f} s from {image.width} px")
    return 0


def prep_command(args: argparse.Namespace) -> int:
    from riffmask.data_prep.dataset import prepare_dataset, summary_lines

    cfg = config_from_args(PrepConfig, args, args.overrides)
    try:
        result = prepare_dataset(Path(args.genre_root), Path(args.out_dir), cfg, dry_run=args.dry_run)
    except KeyboardInterrupt:
        print(
            f"riffmask prep: interrupted; the files prepared so far are kept in {args.out_dir}: "
            "run the same command again to continue",
            file=sys.stderr,
        )
        return 130
    print("\n".join(summary_lines(result)))
    return 0
