"""``riffmask eval pairs|fad|clap|genre|seams`` and ``riffmask sweep``: metrics from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from riffmask.common.errors import RiffmaskError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    from riffmask.cli.generate import add_lora_flags
    from riffmask.common.config import add_option_flags
    from riffmask.infer.config import CheckpointConfig

    evaluate = subparsers.add_parser("eval", help="score generated music: SSIM, chroma, FAD, CLAP score")
    which = evaluate.add_subparsers(dest="metric", metavar="METRIC", required=True)

    pairs = which.add_parser("pairs", help="SSIM and chroma similarity of input/output pairs (docs/metrics.md)")
    pairs.add_argument("input_dir", type=Path, help="inputs (spectrogram images or audio); or a generate output")
    pairs.add_argument(
        "output_dir", type=Path, nargs="?", help="outputs with matching names (omit for a generate output)"
    )
    _add_chroma_decode(pairs)
    _add_outputs(pairs)
    pairs.set_defaults(func=run_pairs)

    fad = which.add_parser("fad", help="Fréchet Audio Distance (+ FAD-infinity) against a reference")
    fad.add_argument("generated_dir", type=Path, help="generated audio files (or NAME.npy embeddings)")
    ref = fad.add_mutually_exclusive_group(required=True)
    ref.add_argument("--reference", type=Path, help="reference audio files (or NAME.npy embeddings)")
    ref.add_argument("--reference-stats", type=Path, help=".npz with <model>.mu and <model>.cov (fadtk layout)")
    fad.add_argument(
        "--embedding-model",
        default="clap-laion-audio",
        help="clap-laion-audio (the paper's; the only one)",
    )
    fad.add_argument(
        "--embeddings",
        type=Path,
        help="NAME.npy per generated file: used when present, else computed and stored",
    )
    fad.add_argument("--reference-embeddings", type=Path, help="the same for the reference files")
    fad.add_argument("--stats-model", help="name of the statistics in the .npz (default: the embedding model)")
    fad.add_argument("--save-stats", type=Path, help="write the reference statistics to this .npz for reuse")
    fad.add_argument("--fad-inf", action=argparse.BooleanOptionalAction, default=True, help="also FAD-infinity")
    _add_model_options(fad)
    _add_outputs(fad)
    fad.set_defaults(func=run_fad)

    clap = which.add_parser("clap", help="CLAP score: cosine of the prompt's and each output's CLAP embedding")
    clap.add_argument("generated_dir", type=Path, help="generated audio files")
    clap.add_argument("--prompt", required=True, help="the text prompt the music was generated from")
    _add_model_options(clap)
    _add_outputs(clap)
    clap.set_defaults(func=run_clap)

    genre = which.add_parser(
        "genre",
        help="genre accuracy of a model on held-out clips (diffusion classification)",
        description="For each clip of DATASET and each candidate genre prompt, the mean denoising error over the "
        "same seeded (timestep, noise) pairs; the prompt with the lowest error is the prediction (Li et al. 2023). "
        "Prints accuracy, per-genre recall and loss, and the confusion matrix.",
    )
    genre.add_argument("dataset", type=Path, help="a folder written by `riffmask prep` with at least two genres")
    # The model is loaded as `riffmask generate` loads it, with the same options (in float32: see run_genre).
    add_option_flags(genre, CheckpointConfig, skip=("lora", "lora_scale", "scheduler", "dtype", "compile"))
    add_lora_flags(genre)
    genre.add_argument("--split", default="validation", help="train or validation (default validation: held out)")
    genre.add_argument(
        "--prompts",
        help="candidate prompts, comma-separated, as GENRE=PROMPT or one PROMPT per genre in sorted order "
        "(default: each genre written as its training captions were)",
    )
    genre.add_argument("--pairs", type=int, default=None,
                       help="(timestep, noise) pairs per clip and prompt (default 16: see docs/genre.md)")
    genre.add_argument("--seed", type=int, default=0, help="seed of the noise shared by every clip and prompt")
    genre.add_argument("--confusion", type=Path, help="write the confusion matrix as a PNG")
    _add_outputs(genre)
    genre.set_defaults(func=run_genre)

    seams = which.add_parser(
        "seams",
        help="seam scores of joins: a loop's wrap, given times, or a generate folder's window joins",
        description="Score every join asked for: the change across it (log-mel flux) over the median change "
        "inside the sound (1.0: no seam), and the sample jump across it over the typical one (clicks).",
    )
    seams.add_argument("paths", nargs="+", type=Path, metavar="FILES_OR_FOLDER", help="audio files or folders")
    seams.add_argument("--loop", action="store_true", help="score the wrap: the end followed by the start")
    seams.add_argument("--at", type=_seconds_list, default=(), metavar="SECONDS,...", help="join times to score")
    _add_outputs(seams)
    seams.set_defaults(func=run_seams)

    register_sweep(subparsers)


def _add_chroma_decode(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """How chroma decodes both images: the paper's way (random start, 32 iterations) unless told."""
    parser.add_argument(
        f"--{prefix}iterations", dest="chroma_iterations", type=int, metavar="N",
        help="decoder iterations for chroma (default: the phase start's: random 32, pghi 10)",
    )  # fmt: skip
    parser.add_argument(
        f"--{prefix}phase-start", dest="chroma_phase_start", choices=("random", "pghi"), default="random",
        help="Griffin-Lim start for chroma: random (the paper's, default) or the PGHI estimate",
    )  # fmt: skip


def _chroma_decode(args: argparse.Namespace):
    from riffmask.core.decode import DecodeConfig

    cfg = DecodeConfig(iterations=args.chroma_iterations, phase_start=args.chroma_phase_start)
    cfg.validate()
    return cfg


def _add_outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, help="write the summary and per-file results as JSON")
    parser.add_argument("--csv", type=Path, help="write the per-file results as CSV")
    parser.add_argument("--report", type=Path, help="write a self-contained HTML report (players, metrics)")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--clap-model",
        default=None,
        help="CLAP checkpoint: Hub id or folder (default laion/clap-htsat-unfused)",
    )
    parser.add_argument("--revision", help="Hub revision of the CLAP checkpoint")
    parser.add_argument(
        "--allow-pickle", action="store_true", help="allow PyTorch .bin weights (default: safetensors only)"
    )


def progress_bar(total: int, desc: str):
    """A tqdm bar on stderr (hidden when not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="file", disable=None)


def run_pairs(args: argparse.Namespace) -> int:
    from riffmask.metrics.pairs import PAIR_METRICS, evaluate_pairs, find_pairs, generation_pairs
    from riffmask.metrics.results import emit

    unmatched: list[Path] = []
    if args.output_dir is None:
        pairs = generation_pairs(args.input_dir)
    else:
        pairs, unmatched = find_pairs(args.input_dir, args.output_dir)
        if unmatched:
            log.warning("no partner for: %s", ", ".join(map(str, unmatched)))
        if not pairs:
            raise RiffmaskError(f"no files with matching names in {args.input_dir} and {args.output_dir}")
    with progress_bar(len(pairs), "pairs") as bar:
        rows, summary = evaluate_pairs(pairs, _chroma_decode(args), progress=lambda _: bar.update())
    if unmatched:
        summary["unmatched"] = [str(p) for p in unmatched]
    print(emit(rows, summary, ["name", *PAIR_METRICS, "error"], args.json, args.csv))
    if args.report:
        from riffmask.metrics.report import items_from_pairs, write_report

        print(f"report: {write_report(args.report, items_from_pairs(pairs, rows), 'SSIM and chroma', summary)}")
    return 1 if summary["failed"] else 0  # a batch command: any failed item shows in the status


def _process_state():
    """accelerate's state under ``accelerate launch`` of several processes (each takes a share), else None."""
    from riffmask.infer import distributed

    return distributed.process_state() if distributed.launched() else None


def _device(state) -> str:
    """Where the embedding model runs: this process's device under ``accelerate launch``, else the CPU."""
    from riffmask.infer.distributed import process_device

    return "cpu" if state is None else process_device(state)


def _embeddings_of(folder: Path, cache: Path | None, get_embedder, desc: str, state=None):
    """``{name: frames}`` of a folder of audio (through ``cache``; shared among processes) or of ``.npy`` files."""
    from riffmask.metrics.embeddings import audio_files, embed_files, load_embedding_dir

    if folder.is_dir() and not any(p.suffix != ".npy" for p in folder.iterdir() if p.is_file()):
        return load_embedding_dir(folder)
    files = audio_files(folder)
    with progress_bar(len(files), desc) as bar:
        return embed_files(files, _LazyEmbedder(get_embedder), cache, progress=lambda _: bar.update(), state=state)


class _LazyEmbedder:
    """Loads the model on first use, so that fully cached folders never load it."""

    def __init__(self, get):
        self._get, self._model = get, None

    def _load(self):
        from riffmask.metrics.embeddings import EmbedderUnavailable

        if self._model is None:
            try:
                self._model = self._get()
            except RiffmaskError as exc:  # stops the batch: every file would fail the same way
                raise EmbedderUnavailable(str(exc)) from None
        return self._model

    @property
    def sample_rate(self) -> int:
        return self._load().sample_rate

    def embed(self, audio):
        return self._load().embed(audio)


def run_fad(args: argparse.Namespace) -> int:
    import functools

    import numpy as np

    from riffmask.metrics.embeddings import load_embedder
    from riffmask.metrics.fad import (
        fad_infinity,
        gaussian_stats,
        load_reference_stats,
        of_size,
        per_file_fad,
        save_stats,
        set_fad,
        stack_frames,
    )
    from riffmask.metrics.results import emit

    state = _process_state()
    get = functools.cache(
        lambda: load_embedder(args.embedding_model, args.clap_model, args.revision, args.allow_pickle, _device(state))
    )
    generated, failed = _embeddings_of(args.generated_dir, args.embeddings, get, "embed generated", state)
    if not args.reference_stats:
        ref_emb, ref_failed = _embeddings_of(args.reference, args.reference_embeddings, get, "embed reference", state)
        failed += ref_failed
    if state is not None and not state.is_main_process:
        return 0  # the embeddings are shared; the main process scores and reports (infer/distributed.py)
    stats_model = args.stats_model or args.embedding_model
    if args.reference_stats:
        reference = load_reference_stats(args.reference_stats, stats_model)
        ref_files = None
    else:
        ref_emb, odd = of_size(ref_emb)
        failed += odd
        frames = stack_frames(ref_emb) if ref_emb else np.zeros((0, 0))
        if frames.shape[0] < 2:  # the covariance needs two
            raise RiffmaskError(
                f"--reference {args.reference}: {frames.shape[0]} embedding frame(s) from {len(ref_emb)} file(s); "
                "a covariance needs at least 2 (give more or longer reference files)"
            )
        reference = gaussian_stats(frames, files=len(ref_emb))
        ref_files = len(ref_emb)
        if args.save_stats:
            save_stats(args.save_stats, reference, stats_model)
    generated, odd = of_size(generated, reference.dims)
    failed += odd
    if not generated:
        raise RiffmaskError(f"{args.generated_dir}: no file could be embedded")
    rows = per_file_fad(generated, reference) + [{"name": f["name"], "error": f["error"]} for f in failed]
    summary = {
        **set_fad(generated, reference),
        "reference_files": ref_files,
        "reference_frames": reference.frames,
        "embedding_model": args.embedding_model,
    }
    if args.fad_inf:
        try:
            inf = fad_infinity(stack_frames(generated), reference)
            summary.update(fad_inf=inf["fad_inf"], fad_inf_r2=inf["r2"])
        except RiffmaskError as exc:
            log.warning("FAD-infinity skipped: %s", exc)
    summary["failed"] = len(failed)
    print(emit(rows, summary, ["name", "frames", "fad", "error"], args.json, args.csv))
    if args.report:
        _file_report(args.report, "Fréchet Audio Distance", rows, summary, args.generated_dir, ("frames", "fad"))
    return 1 if failed else 0


def run_clap(args: argparse.Namespace) -> int:
    from riffmask.metrics.clap import DEFAULT_CLAP_MODEL, ClapEmbedder, clap_score
    from riffmask.metrics.embeddings import audio_files, embed_files
    from riffmask.metrics.results import emit, summarize

    files = audio_files(args.generated_dir)
    state = _process_state()
    model = args.clap_model or DEFAULT_CLAP_MODEL
    embedder = ClapEmbedder.from_pretrained(model, args.revision, args.allow_pickle, _device(state))
    with progress_bar(len(files), "CLAP") as bar:
        clips, failures = embed_files(
            files, embedder, progress=lambda _: bar.update(), state=state, embed=embedder.embed_clip
        )
    if state is not None and not state.is_main_process:
        return 0  # the embeddings are shared; the main process scores and reports (infer/distributed.py)
    failed = [{"name": f["name"], "clap": None, "error": f["error"]} for f in failures]
    rows = [{**r, "error": ""} for r in clap_score(clips, embedder.embed_text([args.prompt])[0])] + failed
    summary = {**summarize(rows, ["clap"]), "prompt": args.prompt}
    print(emit(rows, summary, ["name", "clap", "error"], args.json, args.csv))
    if args.report:
        _file_report(args.report, f"CLAP score: {args.prompt}", rows, summary, args.generated_dir, ("clap",))
    return 1 if failed else 0


def run_genre(args: argparse.Namespace) -> int:
    from riffmask.common.config import config_from_args
    from riffmask.common.io import write_json_atomic
    from riffmask.infer.config import CheckpointConfig
    from riffmask.metrics import genre
    from riffmask.metrics.results import emit, format_table

    # float32 everywhere: the genres differ by a fraction of a percent of the denoising error.
    checkpoint = config_from_args(CheckpointConfig, args, args.overrides, dtype="float32")
    rows = genre.split_rows(args.dataset, args.split)
    genres = genre.genres_of(rows)
    if args.prompts:
        prompts = genre.prompts_from_list(genre.parse_prompt_list(args.prompts), genres)
    else:
        prompts = genre.genre_prompts(rows, genres, genre.trained_template([*checkpoint.lora, checkpoint.model]))
    model = genre.load_genre_model(checkpoint)
    latents = genre.clip_latents(model.vae, rows)
    pairs = genre.DEFAULT_PAIRS if args.pairs is None else args.pairs
    with progress_bar(len(rows), "genre") as bar:
        result = genre.classify(model, latents, [r["genre"] for r in rows], prompts, pairs, args.seed,
                                progress=lambda _: bar.update())
    summary = {**result.summary(), "split": args.split, "pairs": pairs, "seed": args.seed,
               "model": checkpoint.model, "lora": checkpoint.lora}
    clip_rows = result.clip_rows([r["id"] for r in rows])
    emit(clip_rows, summary, None, None, args.csv)
    if args.json:
        write_json_atomic(args.json, {"accuracy": result.accuracy, "summary": summary, "items": clip_rows})
    if args.confusion:
        genre.save_confusion_png(result, args.confusion)
    print(format_table(result.per_genre()))
    print()
    print(format_table(genre.confusion_table(result)))
    print(f"\naccuracy {result.accuracy:.4f} on {len(rows)} {args.split} clips "
          f"(chance {1 / len(genres):.4f}), {pairs} (t, noise) pairs, seed {args.seed}")
    if args.report:
        from riffmask.metrics.report import write_report

        figure = genre.confusion_figure(result)
        report = write_report(args.report, [], f"Genre accuracy: {checkpoint.model}", summary,
                              sections=[genre.report_section(result, figure)])
        print(f"report: {report}")
    return 0

def _seconds_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--at: seconds separated by commas, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"--at: positive seconds separated by commas, got {text!r}")
    return values


def run_seams(args: argparse.Namespace) -> int:
    from riffmask.metrics.results import emit
    from riffmask.metrics.seams import COLUMNS, jobs_for, score_jobs

    jobs = jobs_for(args.paths, args.at, args.loop)
    if not any(job.at or job.wrap for job in jobs):
        raise RiffmaskError("no joins to score: give --loop, --at SECONDS,... or a generate folder with window joins")
    rows, summary = score_jobs(jobs)
    print(emit(rows, summary, COLUMNS, args.json, args.csv))
    if args.report:
        from riffmask.metrics.report import items_from_seams, write_report

        print(f"report: {write_report(args.report, items_from_seams(jobs, rows), 'Seams', summary)}")
    return 0 if summary["n"] else 1


def _file_report(path: Path, title: str, rows: list, summary: dict, folder: Path, metrics: tuple) -> None:
    """A report with one player and the scores per file of ``folder``."""
    from riffmask.common.io import safe_stem
    from riffmask.core.audio import is_audio_file
    from riffmask.metrics.report import ReportItem, write_report

    sounds = {safe_stem(p.stem): p for p in sorted(folder.iterdir()) if is_audio_file(p)}
    items = [
        ReportItem(
            name=row["name"],
            output_audio=sounds.get(row["name"]),
            metrics={m: row[m] for m in metrics if row.get(m) is not None},
            error=row.get("error", ""),
        )
        for row in rows
    ]
    print(f"report: {write_report(path, items, title, summary)}")


# --------------------------------------------------------------------------- sweep
def register_sweep(subparsers: argparse._SubParsersAction) -> None:
    from riffmask.common.config import add_config_arguments
    from riffmask.infer.config import GenerateConfig
    from riffmask.metrics.sweep import SWEPT
    from riffmask.metrics.sweep import __doc__ as sweep_doc

    sweep = subparsers.add_parser(
        "sweep",
        help="generate every combination of mask/sampler settings and plot SSIM and chroma against them",
        description=sweep_doc.split("\n\n")[1],
    )
    sweep.add_argument("inputs", nargs="+", help="input sounds (files, folders or globs)")
    for flag in SWEPT:
        sweep.add_argument(
            _sweep_flag(flag), dest=f"sweep_{flag}", metavar="LIST", help=f"{flag} values, e.g. 0,20,...,255"
        )
    sweep.add_argument("--ablation", action="store_true", help="also without brightness / without contrast (paired)")
    sweep.add_argument(
        "--out",
        dest="sweep_out",
        type=Path,
        default=Path("riffmask_sweep"),
        help="output folder (resumed if it exists)",
    )
    _add_chroma_decode(sweep, prefix="chroma-")
    sweep.add_argument("--no-save", dest="save_items", action="store_false", help="keep only the CSV, not the files")
    add_config_arguments(sweep, GenerateConfig, skip=(*SWEPT, "out", "overwrite", "report", "num_variations"))
    sweep.set_defaults(func=run_sweep_command)


def _sweep_flag(option: str) -> str:
    return "--seeds" if option == "seed" else f"--{option}"


def _swept_values(args: argparse.Namespace) -> dict[str, list]:
    """The values of each swept option given, parsed; a word that is not a value is an error naming its flag."""
    from riffmask.metrics.sweep import SWEPT, parse_values

    swept = {}
    for option, kind in SWEPT.items():
        text = getattr(args, f"sweep_{option}")
        if text:
            try:
                swept[option] = parse_values(text, kind)
            except RiffmaskError as exc:
                raise RiffmaskError(f"{_sweep_flag(option)}: {exc}") from None
    return swept


def run_sweep_command(args: argparse.Namespace) -> int:
    """``riffmask sweep``; under ``accelerate launch`` each process makes its share of the combinations."""
    import contextlib

    from riffmask.common.config import config_from_args
    from riffmask.common.io import locked, write_json_atomic
    from riffmask.infer.config import GenerateConfig
    from riffmask.metrics.sweep import analyse, combination_configs, run_sweep, write_sweep_report

    cfg = config_from_args(GenerateConfig, args, args.overrides)
    swept = _swept_values(args)
    if not swept and not args.ablation:
        raise RiffmaskError(
            "nothing to sweep: give --downshift, --brightness, --contrast, --strength, --guidance or --seeds"
        )
    combination_configs(cfg, swept, args.ablation)  # every value checked before the folder or a model
    state = _process_state()
    main = state is None or state.is_main_process
    # One sweep per folder: its main process holds the lock from planning to the report.
    folder = locked(args.sweep_out, "riffmask sweep") if main else contextlib.nullcontext(args.sweep_out)
    with folder as out:
        rows = run_sweep(cfg, args.inputs, swept, out, args.ablation, _chroma_decode(args), args.save_items,
                         state=state)  # fmt: skip
        if not main:
            return 0  # the main process reports the sweep (infer/distributed.py says why)
        summary = analyse(rows, swept, out, args.ablation)
        write_json_atomic(
            out / "summary.json",
            {**summary, "swept": swept, "ablation_run": args.ablation, "config": dataclasses.asdict(cfg)},
        )
        report = write_sweep_report(out, summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "by_value"}, indent=2, default=str))
    print(f"results: {out / 'sweep.csv'}\nreport: {report}")
    return 0 if summary["n"] else 1
