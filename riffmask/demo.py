"""``make demo``: the whole toolkit end to end on built-in (or your own) material, on a CPU.

1. genre folders -> training dataset (``riffmask prep``)
2. one everyday sound -> spectrogram -> audio, the codec's round trip
3. a tiny random Riffusion-architecture pipeline, briefly fine-tuned on that dataset
4. music from the everyday sound with the fine-tuned model (masked img2img), plus a report
5. does fine-tuning learn the genres? The same genre folder as small (64 px) clips, the tiny model
   fine-tuned with ``configs/train/cpu_genre.yaml`` for ``--learn-steps`` steps, its held-out genre
   accuracy measured before and after (``riffmask eval genre``; docs/genre.md).

Every step is the ``riffmask`` command a user would type, printed before it runs. The tiny model is
random: the music it makes is noise shaped by the mask. The same commands with
``--model riffusion/riffusion-model-v1`` (or your fine-tune) on a GPU give real music.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from riffmask.cli import main as riffmask

DEMO_PROMPT = "instrumental, saxophone, flute"
#: Steps of the learning check: enough for the accuracy to rise clearly on the built-in genres in about
#: a minute (docs/genre.md).
LEARN_STEPS = 300


def run(*words: str) -> None:
    """Run one ``riffmask`` command in this process, echoing it; stop the demo if it fails."""
    print(f"\n$ riffmask {shlex.join(words)}", flush=True)
    started = time.perf_counter()
    code = riffmask(list(words))
    if code:
        raise SystemExit(f"demo step failed (exit {code}): riffmask {shlex.join(words)}")
    print(f"  ({time.perf_counter() - started:.1f} s)", flush=True)


def learning_check(genres: Path, base: Path, folder: Path, steps: int) -> tuple[float, float] | None:
    """Fine-tune ``base`` on ``genres`` as 64 px clips; held-out genre accuracy before and after, or None
    when the held-out files do not span two genres."""
    dataset, model = folder / "dataset", folder / "tiny-finetuned"
    # 64 px clips (0.64 s) keep a step at milliseconds; a third of the files is held out.
    run("prep", str(genres), str(dataset), "width=64", "num_frequencies=64", "validation_fraction=0.34")
    if len(held_out_genres(dataset)) < 2:
        print("  (the held-out files span fewer than two genres: no genre accuracy to measure)")
        return None
    before = genre_accuracy(base, dataset, folder / "genre_before.json")
    run(
        "train", "--config", "cpu_genre", f"pretrained_model_name_or_path={base}", f"dataset={dataset}",
        f"output_dir={model}", "overwrite=true", f"max_train_steps={steps}", "validation_steps=0",
        "checkpointing_steps=0",
    )  # fmt: skip
    return before, genre_accuracy(model, dataset, folder / "genre_after.json")


def held_out_genres(dataset: Path) -> set[str]:
    from riffmask.data_prep.readers import load_prepared

    prepared = load_prepared(dataset)
    return {row["genre"] for row in prepared["validation"]} if "validation" in prepared else set()


def genre_accuracy(model: Path, dataset: Path, json_path: Path) -> float:
    """``riffmask eval genre`` of ``model`` on the held-out clips; returns the accuracy."""
    import json

    run("eval", "genre", str(dataset), "--model", str(model), "--json", str(json_path))
    return json.loads(json_path.read_text(encoding="utf-8"))["accuracy"]


def builtin_material(out: Path, genres: Path | None, sound: Path | None) -> tuple[Path, Path]:
    """The user's genre folder and sound, or the project's synthetic ones written under ``out``."""
    from riffmask.data_prep.synth import write_builtin_genres, write_builtin_sound

    if genres is None:
        genres = out / "material" / "genres"
        if not genres.is_dir():
            write_builtin_genres(genres)
        print(f"built-in genres (synthetic, made by data_prep.synth): {genres}")
    if sound is None:
        sound = out / "material" / "kettle.wav"
        if not sound.is_file():
            write_builtin_sound(sound)
        print(f"built-in everyday sound (a synthetic kettle): {sound}")
    return genres, sound


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="folder for everything the demo makes")
    parser.add_argument("--genres", type=Path, help="your genre root (sub-folder per genre of audio files)")
    parser.add_argument("--sound", type=Path, help="your everyday sound (any audio file)")
    parser.add_argument("--train-steps", type=int, default=8, help="fine-tuning steps of the tiny model")
    parser.add_argument("--learn-steps", type=int, default=LEARN_STEPS,
                        help=f"fine-tuning steps of the genre-learning check (default {LEARN_STEPS}; 0 skips it)")
    args = parser.parse_args(argv)
    for given in (args.genres, args.sound):
        if given is not None and not given.exists():
            parser.error(f"{given} does not exist")

    out = args.out
    genres, sound = builtin_material(out, args.genres, args.sound)
    dataset, codec_dir = out / "dataset", out / "codec"
    base, model, music = out / "tiny-base", out / "tiny-finetuned", out / "music"

    run("prep", str(genres), str(dataset))
    run("spectrogram", str(sound), str(codec_dir / f"{sound.stem}.png"), "--duration", "5.11")
    run("audio", str(codec_dir / f"{sound.stem}.png"), str(codec_dir / f"{sound.stem}_roundtrip.wav"))
    run("tiny-model", str(base))
    run(
        "train", "--config", "cpu_smoke",
        f"pretrained_model_name_or_path={base}", f"dataset={dataset}", f"output_dir={model}",
        f"max_train_steps={args.train_steps}",
    )  # fmt: skip
    run(
        "generate", "--config", "fast", "--model", str(model), "--prompt", DEMO_PROMPT,
        "--out", str(music), "--max-seconds", "10", "--overwrite", "--report", str(sound),
    )  # fmt: skip

    learned = learning_check(genres, base, out / "learning", args.learn_steps) if args.learn_steps else None
    if learned:
        chance = 1 / len(held_out_genres(out / "learning" / "dataset"))
        print(f"\nHeld-out genre accuracy of the tiny model: {learned[0]:.2f} before fine-tuning, {learned[1]:.2f} "
              f"after {args.learn_steps} steps (chance {chance:.2f}; docs/genre.md)")
    print("\nDone. Listen and look:")
    print(f"  dataset          {dataset}  (report.json, train/, validation/)")
    print(f"  codec round trip {codec_dir}")
    print(f"  fine-tuned model {model}")
    print(f"  music            {music}")
    print(f"  report           {(music / 'report.html').resolve()}")
    if learned:
        print(f"  genre learning   {out / 'learning'}  (genre_before.json, genre_after.json, tiny-finetuned/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
