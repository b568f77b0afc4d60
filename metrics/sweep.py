"""``riffmask sweep``: generate every combination of swept settings, score it, plot the paper's figures.

Swept values are comma lists; ``a,b,...,z`` expands to the arithmetic series a, b, ... up to z, with
z itself included (``0,20,...,255`` -> 0, 20, ..., 240, 255). Every combination of every input and
prompt is generated with infer's Python API and scored (SSIM and chroma, SPEC §4). Results go to
``OUT/sweep.csv`` after each item, so an interrupted sweep resumes where it stopped; each row records
the input (path and SHA-256, as ``riffmask generate`` identifies it) and the settings that are not
swept, and a folder whose rows were made otherwise is refused before a model loads. ``--ablation``
adds the paper's ablation: every combination also without the brightness step and without the
contrast step, compared with all steps by a paired t-test and Cohen's d.

``ssim_vae`` is the SSIM of the output to the input as the model's VAE gives it back (encoded and
decoded): what the model kept, without what its VAE loses anyway. With Riffusion's VAE it is close
to ``ssim``; with the tiny model's random VAE, whose round trip alone leaves an SSIM of 0.14-0.43 on
the real sounds, ``ssim`` is dominated by the VAE and only ``ssim_vae`` follows the downshift.

With two prompts or more, each output also gets its genre rate (``genre``: 1 when the pipeline
itself classifies the output latent, the one the output image was decoded from, as the prompt it
was made with, among the sweep's prompts, by diffusion classification, ``metrics.genre``) beside
the input's own (``input_genre``: 1 when the input's latent already reads as that prompt): keeping
the sound's structure (SSIM) against moving it to the genre, per downshift, is the paper's trade-off.

Layout: ``OUT/sweep.csv``, ``OUT/summary.json``, ``OUT/sweep_<param>.png``, ``OUT/ablation.png``,
``OUT/report.html`` and, per combination, ``OUT/items/<combination>/`` in the layout of
``riffmask generate`` (spectrograms, sounds and a sidecar per input).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from riffmask.common.config import config_dict, replace_options
from riffmask.common.errors import RiffmaskError
from riffmask.common.io import safe_stem
from riffmask.core.decode import DecodeConfig
from riffmask.metrics.results import Row, read_csv, write_csv
from riffmask.metrics.similarity import PAPER_DECODE

log = logging.getLogger(__name__)

#: Swept flag -> GenerateConfig field and value type.
SWEPT = {"downshift": int, "brightness": float, "contrast": float, "strength": float, "guidance": float, "seed": int}
#: The paper's ablation: mask variants as overrides of the config.
ABLATION = {"all steps": {}, "no brightness": {"brightness": None}, "no contrast": {"contrast": None}}
METRICS = ("ssim", "chroma")
#: SSIM of the output to the input after a round trip through the model's VAE (see the module docstring).
VAE_METRIC = "ssim_vae"
#: Added when the sweep has two prompts or more (see the module docstring).
GENRE_METRICS = ("genre", "input_genre")


def parse_values(text: str, kind: type = float) -> list:
    """``"0,20,...,100"`` -> ``[0, 20, 40, 60, 80, 100]``; plain lists are taken as they are.

    A series ``a,b,...,z`` steps from ``a`` by ``b - a`` up to ``z``, which is included; ``z`` must lie
    at or beyond ``b`` (``0,20,...,10`` and ``10,20,...,0`` are refused, not cut to ``0,10`` or ``10``).
    """
    words = [w.strip() for w in text.split(",") if w.strip()]
    if not words:
        raise RiffmaskError(f"{text!r}: no values")
    if "..." not in words:
        return [_number(w, kind) for w in words]
    at = words.index("...")
    if at < 2 or at != len(words) - 2:
        raise RiffmaskError(f"{text!r}: write a series as a,b,...,z (two values, '...', the last value)")
    listed = [_number(w, kind) for w in words[:at]]
    first, second, last = listed[-2], listed[-1], _number(words[-1], kind)
    step = second - first
    if step == 0 or (last - second) / step < 0:
        raise RiffmaskError(
            f"{text!r}: the series {words[at - 2]}, {words[at - 1]}, ... never reaches {words[-1]} "
            f"(the last value must lie at or beyond {words[at - 1]})"
        )
    count = int((last - first) / step + 1e-9)
    values = listed[:-2] + [kind(first + i * step) for i in range(count + 1)]
    return list(dict.fromkeys([*values, last]))


def _number(word: str, kind: type) -> int | float:
    try:
        value = kind(word)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value):
        raise RiffmaskError(f"{word!r} is not {'an integer' if kind is int else 'a finite number'}")
    return value


def grid(swept: dict[str, list], ablation: bool) -> list[dict[str, Any]]:
    """Every combination of the swept values (and of the ablation variants when asked)."""
    axes = dict(swept)
    if ablation:
        axes["variant"] = list(ABLATION)
    keys = list(axes)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(axes[k] for k in keys))]


def combination_id(combo: dict[str, Any]) -> str:
    return safe_stem("_".join(f"{k}={v}" for k, v in combo.items()).replace(" ", "-"))


def combination_configs(cfg, swept: dict[str, list], ablation: bool) -> dict[tuple[str, str], Any]:
    """The config of every (prompt, combination id) of a sweep, all built at once: a value that no config
    takes (``--downshift 0,300``) is refused before anything is made."""
    return {(p, combination_id(c)): _config_for(cfg, c, p) for c in grid(swept, ablation) for p in cfg.sampling.prompt}


def _config_for(cfg, combo: dict[str, Any], prompt: str):
    changes = {k: v for k, v in combo.items() if k in SWEPT}
    changes.update(ABLATION[combo["variant"]] if "variant" in combo else {})
    return replace_options(cfg, prompt=[prompt], num_variations=1, **changes)


def run_sweep(
    cfg,
    inputs: Sequence[str | os.PathLike],
    swept: dict[str, list],
    out_dir: str | os.PathLike,
    ablation: bool = False,
    chroma_decode: DecodeConfig = PAPER_DECODE,
    save_items: bool = True,
    pipe=None,
    state=None,
) -> list[Row]:
    """Generate and score every (input, prompt, combination) not yet in ``out_dir/sweep.csv``; refuse
    a ``sweep.csv`` whose rows were made from other input content or with other settings.

    ``cfg`` is an ``infer.generate.GenerateConfig`` holding everything that is not swept; ``pipe``
    a loaded pipeline (loaded from ``cfg`` on first need when omitted). Returns all rows.

    ``state``: accelerate's ``PartialState`` under ``accelerate launch`` (every process calls this). Process
    k of n makes the to-do items k, k + n, ..., writing them into the one folder and keeping its rows in
    ``sweep.part-k.csv`` as it goes; once all are through, every process gets all rows and the main one
    writes ``sweep.csv`` as one process would have, then drops the parts. Parts that a killed run left
    are taken into ``sweep.csv`` when the next run starts.
    """
    from riffmask.infer import distributed
    from riffmask.infer.files import expand_inputs, output_names

    out_dir = Path(out_dir)
    table = out_dir / "sweep.csv"
    main = state is None or state.is_main_process
    if main:
        _take_parts(table)
    if state is not None:
        state.wait_for_everyone()  # every process plans from the same sweep.csv
    configs = combination_configs(cfg, swept, ablation)
    rows = [r for r in read_csv(table) if not r.get("error")] if table.is_file() else []
    combos = grid(swept, ablation)
    sources = expand_inputs([str(p) for p in inputs])
    names = output_names(sources)
    settings = settings_sha256(cfg)
    made_from = {s: _made_from(s, settings) for s in sources}
    _refuse_rows_made_otherwise(table, rows, {names[s]: m for s, m in made_from.items()}, settings)
    done = {_key(r) for r in rows}
    todo = [
        (s, p, c)
        for s in sources
        for p in cfg.sampling.prompt
        for c in combos
        if (names[s], p, combination_id(c)) not in done
    ]
    log.info("sweep: %d combinations done before, %d to do", len(done), len(todo))
    mine = [item for k, item in enumerate(todo) if distributed.is_mine(k, state)]
    # One process keeps sweep.csv itself up to date; several keep a part each (no two writers of one file).
    part, earlier = (table, rows) if state is None or state.num_processes == 1 else (_part(table, state), [])
    made = _make_items(cfg, configs, mine, names, made_from, out_dir, chroma_decode, save_items, pipe, state,
                       lambda new: write_csv(part, _ordered(earlier, new, todo, names)))  # fmt: skip
    everything = _ordered(rows, distributed.gather_lists(state, made), todo, names)  # waits for every process
    if main:
        write_csv(table, everything)
        if part != table:
            for leftover in _parts(table):
                leftover.unlink()
    return everything


def settings_sha256(cfg) -> str:
    """SHA-256 of what decides a sweep's results besides its swept values and prompts: the settings
    ``riffmask generate`` compares results on (the model among them), without the prompt."""
    from riffmask.infer.out_folder import settings

    fixed = settings(config_dict(cfg))
    del fixed["sampling.prompt"]
    return hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()


def _made_from(source: Path, settings: str) -> Row:
    """What a row of ``source`` records of how it was made: the input as ``riffmask generate`` identifies
    it (path and content) and the ``settings`` (:func:`settings_sha256`). Empty when ``source`` cannot be
    read (its items fail)."""
    from riffmask.common.io import file_sha256

    try:
        digest = file_sha256(source)
    except OSError:
        return {}
    return {"input_file": str(source.resolve()), "input_sha256": digest, "settings_sha256": settings}


def _refuse_rows_made_otherwise(table: Path, rows: list[Row], made_from: dict[str, Row], settings: str) -> None:
    """Refuse a ``sweep.csv`` whose rows were made with other settings, or from another input file or
    content than the one of their name now: one folder holds one sweep, whose plots and statistics
    compare the swept values only. Checked before a model loads."""
    for row in rows:
        if str(row.get("settings_sha256")) != settings:
            raise RiffmaskError(
                f"{table}: made with other settings (another model, or an option that is not swept) or by an "
                "older riffmask; a folder holds one sweep: choose another --out"
            )
        mine = made_from.get(row["input"])
        if mine and any(str(row.get(k)) != mine[k] for k in ("input_file", "input_sha256")):
            was = "other content of it" if row.get("input_file") == mine["input_file"] else row.get("input_file")
            raise RiffmaskError(
                f"{table}: its rows of {row['input']} were made from {was}, not from {mine['input_file']} as it "
                "is now; a folder holds one sweep: choose another --out"
            )


def _key(row: Row) -> tuple[str, str, str]:
    return str(row["input"]), str(row["prompt"]), str(row["combination"])


def _ordered(earlier: list[Row], made: list[Row], todo: list, names: dict) -> list[Row]:
    """``earlier`` rows, then the new ones in to-do order, failures last: the order of one process."""
    index = {(names[s], p, combination_id(c)): k for k, (s, p, c) in enumerate(todo)}
    made = sorted(made, key=lambda r: index[_key(r)])
    return [*earlier, *(r for r in made if not r["error"]), *(r for r in made if r["error"])]


def _part(table: Path, state) -> Path:
    return table.with_name(f"{table.stem}.part-{state.process_index}.csv")


def _parts(table: Path) -> list[Path]:
    return sorted(table.parent.glob(f"{table.stem}.part-*.csv"))


def _take_parts(table: Path) -> None:
    """Move the finished rows of the parts a killed run left into ``sweep.csv`` (its failures are tried again)."""
    parts = _parts(table)
    if not parts:
        return
    rows = [r for path in [table, *parts] if path.is_file() for r in read_csv(path) if not r.get("error")]
    write_csv(table, rows)
    for path in parts:
        path.unlink()


def _make_items(
    cfg, configs, todo, names, made_from, out_dir, chroma_decode, save_items, pipe, state, save
) -> list[Row]:
    """Generate, score and write the items of ``todo`` (their ``configs``: :func:`combination_configs`);
    ``save(rows)`` after each one. Returns the rows."""
    from tqdm.auto import tqdm

    # The exact reading and file layout of `riffmask generate`.
    from riffmask.infer import distributed
    from riffmask.infer.files import item_sidecar, read_part, write_item
    from riffmask.infer.generate import generate_sound
    from riffmask.infer.load import load_pipeline
    from riffmask.metrics.similarity import chroma_cosine, image_chroma, ssim

    if todo and pipe is None:
        pipe = load_pipeline(distributed.on_process_device(cfg, state))  # a model that cannot load stops the sweep
    rater = None
    if todo and len(cfg.sampling.prompt) > 1:
        from riffmask.metrics.genre import GenreRater

        rater = GenreRater(pipe, cfg.sampling.prompt)
    made: list[Row] = []
    with tqdm(total=len(todo), desc="sweep", unit="item", disable=None) as bar:
        for source, group in itertools.groupby(todo, key=lambda t: t[0]):
            name = names[source]
            try:
                audio = read_part(source, cfg)
            except RiffmaskError as exc:
                group = list(group)
                made += [_failure(name, p, c, exc) for _, p, c in group]
                save(made)
                bar.update(len(group))
                continue
            reference = round_trip = input_reading = None
            for _, prompt, combo in group:
                item_cfg = configs[prompt, combination_id(combo)]
                try:
                    gen = generate_sound(pipe, audio, item_cfg)[0]
                    if reference is None:  # the input image is the same for every combination
                        reference = image_chroma(gen.input_image, chroma_decode)
                        round_trip = vae_round_trip(pipe, gen.input_image)
                    scores = {
                        "ssim": ssim(gen.input_image, gen.output_image),
                        "chroma": chroma_cosine(reference, image_chroma(gen.output_image, chroma_decode)),
                        "ssim_vae": ssim(round_trip, gen.output_image),
                    }
                    if rater is not None:
                        input_reading = input_reading or rater.classify(rater.image_latent(gen.input_image))
                        scores["genre"] = float(rater.classify(gen.latent) == prompt)
                        scores["input_genre"] = float(input_reading == prompt)
                except (RiffmaskError, ValueError, RuntimeError) as exc:
                    made.append(_failure(name, prompt, combo, exc))
                    save(made)
                    bar.update()
                    continue
                row = {
                    "input": name,
                    "prompt": prompt,
                    "combination": combination_id(combo),
                    **combo,
                    **scores,
                    "error": "",
                    **made_from[source],
                }
                if save_items:
                    digest = made_from[source].get("input_sha256")
                    sidecar = item_sidecar(gen, item_cfg, source, name, gen.model_seconds, pipe, digest)
                    write_item(gen, out_dir / "items" / row["combination"], name, sidecar | combo | {"metrics": scores})
                made.append(row)
                save(made)  # after every item: an interruption loses at most one
                log.info("sweep: %s %s (%s) done", name, row["combination"], prompt)
                bar.update()
    return made


def _failure(name: str, prompt: str, combo: dict, exc: Exception) -> Row:
    log.error("%s (%s): %s", name, combination_id(combo), exc)
    return {
        "input": name,
        "prompt": prompt,
        "combination": combination_id(combo),
        **combo,
        "ssim": None,
        "chroma": None,
        "error": str(exc),
    }


def analyse(rows: Sequence[Row], swept: dict[str, list], out_dir: str | os.PathLike, ablation: bool) -> dict:
    """Plots and statistics of a finished sweep: ``OUT/sweep_<param>.png``, ``OUT/ablation.png``."""
    from riffmask.metrics.plots import group_mean_sem, plot_ablation, plot_sweep
    from riffmask.metrics.results import summarize
    from riffmask.metrics.stats import paired_comparison

    out_dir = Path(out_dir)
    good = [r for r in rows if not r.get("error")]
    base = [r for r in good if r.get("variant", "all steps") == "all steps"]
    metrics = metrics_of(good)
    summary: dict[str, Any] = {**summarize(rows, metrics), "plots": [], "by_value": {}}
    for param, values in swept.items():
        if len(values) < 2:
            continue
        path = out_dir / f"sweep_{param}.png"
        plot_sweep(base, param, path, metrics)
        summary["plots"].append(path.name)
        summary["by_value"][param] = {
            m: [{"value": v, "mean": mean, "sem": sem, "n": n} for v, mean, sem, n in group_mean_sem(base, param, m)]
            for m in metrics
        }
    if ablation:
        groups, tests = _ablation_groups(good), {}  # the paper's ablation: SSIM and chroma
        for variant in list(groups)[1:]:
            tests[variant] = {m: paired_comparison(groups["all steps"][m], groups[variant][m]) for m in METRICS}
        if groups["all steps"]["ssim"]:
            plot_ablation(groups, tests, out_dir / "ablation.png", METRICS)
            summary["plots"].append("ablation.png")
        summary["ablation"] = tests
    return summary


def metrics_of(rows: Sequence[Row]) -> tuple[str, ...]:
    """SSIM and chroma, then the later metrics the rows have (``ssim_vae``; the genre rates of sweeps of
    several prompts)."""
    later = (m for m in (VAE_METRIC, *GENRE_METRICS) if any(r.get(m) is not None for r in rows))
    return METRICS + tuple(later)


def vae_round_trip(pipe, image):
    """``image`` (PIL) encoded by the pipeline's VAE (posterior mean) and decoded again: the input as the
    model itself can show it, whatever it generates."""
    import torch

    from riffmask.metrics.genre import encode_latents, image_pixels

    vae = pipe.vae
    latent = encode_latents(vae, [image_pixels(image)]) / vae.config.scaling_factor
    with torch.no_grad():
        decoded = vae.decode(latent.to(vae.device, vae.dtype)).sample
    return pipe.image_processor.postprocess(decoded, output_type="pil")[0]


def _ablation_groups(rows: Sequence[Row]) -> dict[str, dict[str, list[float]]]:
    """Per variant and metric, the values of the combinations that every variant completed, paired."""

    def key(r: Row) -> tuple:
        scores = (*METRICS, VAE_METRIC, *GENRE_METRICS)
        return tuple((k, r[k]) for k in sorted(r) if k not in (*scores, "variant", "combination", "error"))

    by_variant = {v: {key(r): r for r in rows if r.get("variant") == v} for v in ABLATION}
    shared = sorted(set.intersection(*(set(d) for d in by_variant.values())), key=str)
    return {v: {m: [by_variant[v][k][m] for k in shared] for m in METRICS} for v in ABLATION}


def write_sweep_report(out_dir: str | os.PathLike, summary: dict, max_items: int = 16) -> Path:
    """``OUT/report.html``: the plots, the statistics and the first input at each combination."""
    from riffmask.metrics.report import items_from_generation, write_report

    out_dir = Path(out_dir)
    items = []
    for folder in sorted((out_dir / "items").glob("*"))[:max_items]:
        for item in items_from_generation(folder, with_metrics=False)[:1]:
            item.name = f"{folder.name}: {item.name}"
            items.append(item)
    flat = {k: v for k, v in summary.items() if not isinstance(v, dict | list)}
    for variant, tests in summary.get("ablation", {}).items():
        for metric, test in tests.items():
            flat[f"{variant} vs all steps, {metric}"] = (
                f"Δ={test['mean_diff']:.4f}  t={test['t']:.3f}  p={test['p']:.3g}  "
                f"d={test['cohens_d']:.2f}  n={test['n']}"
            )
    plots = [(name, out_dir / name) for name in summary.get("plots", [])]
    return write_report(out_dir / "report.html", items, "riffmask sweep", flat, plots)
