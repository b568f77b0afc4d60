"""``riffmask eval pairs|fad|clap`` and ``riffmask sweep``: the paper's metrics from the command line."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from riffmask.errors import RiffmaskError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser("eval", help="score generated music: SSIM, chroma, FAD, CLAP score")
    which = evaluate.add_subparsers(dest="metric", metavar="METRIC", required=True)

    pairs = which.add_parser("pairs", help="SSIM and chroma similarity of input/output pairs (SPEC §4)")
    pairs.add_argument("input_dir", type=Path, help="inputs (spectrogram images or audio); or a generate output")
    pairs.add_argument(
        "output_dir", type=Path, nargs="?", help="outputs with matching names (omit for a generate output)"
    )
    pairs.add_argument("--iterations", type=int, default=32, help="Griffin-Lim iterations for chroma (default 32)")
    pairs.add_argument(
        "--phase-init",
        choices=("random", "pghi"),
        default="random",
        help="Griffin-Lim start for chroma: random (the paper's, default) or the codec's PGHI estimate",
    )
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

    from metrics.sweep import register_sweep

    register_sweep(subparsers)


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
    from metrics.pairs import PAIR_METRICS, evaluate_pairs, find_pairs, generation_pairs
    from metrics.results import emit

    if args.output_dir is None:
        pairs = generation_pairs(args.input_dir)
    else:
        pairs, unmatched = find_pairs(args.input_dir, args.output_dir)
        if unmatched:
            log.warning("no partner for: %s", ", ".join(unmatched))
        if not pairs:
            raise RiffmaskError(f"no files with matching names in {args.input_dir} and {args.output_dir}")
    with progress_bar(len(pairs), "pairs") as bar:
        rows, summary = evaluate_pairs(
            pairs, n_iter=args.iterations, progress=lambda _: bar.update(), phase_init=args.phase_init
        )
    print(emit(rows, summary, ["name", *PAIR_METRICS, "error"], args.json, args.csv))
    if args.report:
        from metrics.report import items_from_pairs, write_report

        print(f"report: {write_report(args.report, items_from_pairs(pairs, rows), 'SSIM and chroma', summary)}")
    return 1 if summary["failed"] and not summary["n"] else 0


def _embeddings_of(folder: Path, cache: Path | None, get_embedder, desc: str):
    """``{name: frames}`` of a folder of audio (through ``cache``) or of ``.npy`` files."""
    from metrics.embeddings import audio_files, embed_files, load_embedding_dir

    if folder.is_dir() and not any(p.suffix != ".npy" for p in folder.iterdir() if p.is_file()):
        return load_embedding_dir(folder), []
    files = audio_files(folder)
    with progress_bar(len(files), desc) as bar:
        return embed_files(files, _LazyEmbedder(get_embedder), cache, progress=lambda _: bar.update())


class _LazyEmbedder:
    """Loads the model on first use, so that fully cached folders never load it."""

    def __init__(self, get):
        self._get, self._model = get, None

    def _load(self):
        if self._model is None:
            self._model = self._get()
        return self._model

    @property
    def sample_rate(self) -> int:
        return self._load().sample_rate

    def embed(self, audio):
        return self._load().embed(audio)


def run_fad(args: argparse.Namespace) -> int:
    import functools

    from metrics.embeddings import load_embedder
    from metrics.fad import (
        fad_infinity,
        gaussian_stats,
        load_reference_stats,
        per_file_fad,
        save_stats,
        set_fad,
        stack_frames,
    )
    from metrics.results import emit

    get = functools.cache(
        lambda: load_embedder(args.embedding_model, args.clap_model, args.revision, args.allow_pickle)
    )
    generated, failed = _embeddings_of(args.generated_dir, args.embeddings, get, "embed generated")
    stats_model = args.stats_model or args.embedding_model
    if args.reference_stats:
        reference = load_reference_stats(args.reference_stats, stats_model)
        ref_files = None
    else:
        ref_emb, ref_failed = _embeddings_of(args.reference, args.reference_embeddings, get, "embed reference")
        failed += ref_failed
        reference = gaussian_stats(stack_frames(ref_emb), files=len(ref_emb))
        ref_files = len(ref_emb)
        if args.save_stats:
            save_stats(args.save_stats, reference, stats_model)
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
    return 0


def run_clap(args: argparse.Namespace) -> int:
    from data_prep.audio import load_audio
    from metrics.clap import DEFAULT_CLAP_MODEL, ClapEmbedder, clap_score
    from metrics.embeddings import audio_files
    from metrics.results import emit, summarize
    from riffmask.io import safe_stem

    files = audio_files(args.generated_dir)
    embedder = ClapEmbedder.from_pretrained(args.clap_model or DEFAULT_CLAP_MODEL, args.revision, args.allow_pickle)
    clips, failed = {}, []
    with progress_bar(len(files), "CLAP") as bar:
        for path in files:
            try:
                clips[safe_stem(path.stem)] = embedder.embed_clip(load_audio(path, sample_rate=embedder.sample_rate))
            except RiffmaskError as exc:
                failed.append({"name": safe_stem(path.stem), "clap": None, "error": str(exc)})
            bar.update()
    rows = [{**r, "error": ""} for r in clap_score(clips, embedder.embed_text([args.prompt])[0])] + failed
    summary = {**summarize(rows, ["clap"]), "prompt": args.prompt}
    print(emit(rows, summary, ["name", "clap", "error"], args.json, args.csv))
    if args.report:
        _file_report(args.report, f"CLAP score: {args.prompt}", rows, summary, args.generated_dir, ("clap",))
    return 0 if clips else 1


def _file_report(path: Path, title: str, rows: list, summary: dict, folder: Path, metrics: tuple) -> None:
    """A report with one player and the scores per file of ``folder``."""
    from data_prep.audio import is_audio_file
    from metrics.report import ReportItem, write_report
    from riffmask.io import safe_stem

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
