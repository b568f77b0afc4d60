"""Self-contained HTML reports: spectrograms side by side, audio players, parameters, metrics, plots.

Everything is embedded as data URIs, so the page can be mailed or archived as one file. Used by
``riffmask generate --report`` (:func:`write_generation_report`), ``riffmask eval pairs --report``,
``riffmask eval genre`` (a section of tables and the confusion matrix), ``riffmask sweep`` and
training validation (:func:`write_report` with a list of :class:`ReportItem`, whose images and
sounds may be files or in-memory objects).
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from riffmask.common.io import write_text_atomic
from riffmask.core.decode import DecodeConfig
from riffmask.infer.out_folder import REPORT, SUMMARY

log = logging.getLogger(__name__)

ImageSource = Image.Image | str | os.PathLike | None
AudioSource = np.ndarray | str | os.PathLike | None

_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
_AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg"}


@dataclass
class ReportItem:
    """One input and what was made from it. Any part may be missing (``None``)."""

    name: str
    input_image: ImageSource = None
    mask_image: ImageSource = None
    output_image: ImageSource = None
    input_audio: AudioSource = None
    output_audio: AudioSource = None
    sample_rate: int = 44100
    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    error: str = ""


def _data_uri(mime: str, payload: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def _file_uri(path: Path, types: Mapping[str, str], kind: str) -> str | None:
    mime = types.get(path.suffix.lower())
    if mime is None or not path.is_file():
        log.warning("%s: not %s file; left out of the report", path, kind)
        return None
    return _data_uri(mime, path.read_bytes())


def image_uri(source: ImageSource) -> str | None:
    """A PNG/JPEG file or a PIL image as a data URI (None when absent or unreadable)."""
    if source is None:
        return None
    if isinstance(source, Image.Image):
        buffer = io.BytesIO()
        source.save(buffer, format="PNG")
        return _data_uri("image/png", buffer.getvalue())
    return _file_uri(Path(source), _IMAGE_TYPES, "an image")


def audio_uri(source: AudioSource, sample_rate: int = 44100) -> str | None:
    """An audio file (WAV, FLAC, OGG, MP3) or a float array as a data URI (arrays become 16-bit WAV)."""
    if source is None:
        return None
    if isinstance(source, np.ndarray):
        import soundfile as sf

        buffer = io.BytesIO()
        sf.write(
            buffer,
            np.clip(np.asarray(source, dtype=np.float32).T, -1, 1),
            sample_rate,
            "PCM_16",
            format="WAV",
        )
        return _data_uri("audio/wav", buffer.getvalue())
    return _file_uri(Path(source), _AUDIO_TYPES, "an audio")


# --------------------------------------------------------------------------- HTML pieces
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d1d1f;
  background:#fafafa}
h1{margin:0 0 4px}.sub{color:#666;margin-bottom:18px}
.card{background:#fff;border:1px solid #ddd;border-radius:10px;padding:14px 18px;margin:16px 0}
.card.failed{border-color:#d33}.err{color:#b00;font-weight:600}
.row{display:flex;gap:12px;flex-wrap:wrap}.row figure{margin:0;flex:1 1 220px;max-width:360px}
.row img{width:100%;image-rendering:pixelated;border:1px solid #ccc;background:#fff}
figcaption{font-size:13px;color:#555;text-align:center}
.players{display:flex;gap:24px;flex-wrap:wrap;margin:10px 0}
.players label{font-size:13px;color:#555;display:block}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
td,th{border:1px solid #e3e3e3;padding:3px 8px;text-align:left}
th{background:#f2f2f2}.tables{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
.plots img{max-width:100%;border:1px solid #ddd;background:#fff}
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str)
    return str(value)


def figure_uri(fig) -> str:
    """A matplotlib figure as a PNG data URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return _data_uri("image/png", buffer.getvalue())


def rows_table(title: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """An HTML table of rows (one dict each) under a title."""
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(row.get(c, '')))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def _table(title: str, mapping: Mapping[str, Any]) -> str:
    if not mapping:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in mapping.items()
    )
    return f"<table><tr><th colspan=2>{html.escape(title)}</th></tr>{rows}</table>"


def _item_html(item: ReportItem) -> str:
    figures = []
    for caption, source in (
        ("input", item.input_image),
        ("mask", item.mask_image),
        ("output", item.output_image),
    ):
        uri = image_uri(source)
        if uri:
            figures.append(
                f'<figure><img alt="{caption} spectrogram" src="{uri}"><figcaption>{caption}</figcaption></figure>'
            )
    players = []
    for caption, source in (("input", item.input_audio), ("output", item.output_audio)):
        uri = audio_uri(source, item.sample_rate)
        if uri:
            players.append(
                f'<div><label>{caption}</label><audio controls preload="metadata" src="{uri}"></audio></div>'
            )
    error = f'<p class="err">{html.escape(item.error)}</p>' if item.error else ""
    return (
        f'<section class="card{" failed" if item.error else ""}"><h2>{html.escape(item.name)}</h2>{error}'
        f'<div class="row">{"".join(figures)}</div><div class="players">{"".join(players)}</div>'
        f'<div class="tables">{_table("metrics", item.metrics)}{_table("parameters", item.params)}</div>'
        "</section>"
    )


def render_report(
    items: Sequence[ReportItem],
    title: str = "riffmask report",
    summary: Mapping[str, Any] | None = None,
    plots: Iterable[ImageSource | tuple[str, ImageSource]] = (),
    sections: Iterable[str] = (),
) -> str:
    """The whole page as a string; ``sections`` are HTML fragments placed after the plots."""
    plot_html = []
    for plot in plots:
        caption, source = plot if isinstance(plot, tuple) else ("", plot)
        uri = image_uri(source)
        if uri:
            label = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
            plot_html.append(f'<figure><img alt="plot" src="{uri}">{label}</figure>')
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f'<div class="sub">{len(items)} item(s) · written {stamp} by riffmask</div>',
        _table("summary", summary or {}),
        f'<div class="plots">{"".join(plot_html)}</div>' if plot_html else "",
        *sections,
        *(_item_html(item) for item in items),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def write_report(
    path: str | os.PathLike,
    items: Sequence[ReportItem],
    title: str = "riffmask report",
    summary: Mapping[str, Any] | None = None,
    plots: Iterable[ImageSource | tuple[str, ImageSource]] = (),
    sections: Iterable[str] = (),
) -> Path:
    """Write the self-contained HTML page (atomically) and return its path."""
    path = Path(path)
    write_text_atomic(path, render_report(items, title, summary, plots, sections))
    return path


# --------------------------------------------------------------------------- from folders
_PARAM_SKIP = ("files", "metrics")


def items_from_generation(
    out_dir: str | os.PathLike, with_metrics: bool = True, decode: DecodeConfig | None = None
) -> list[ReportItem]:
    """One item per sidecar of a ``riffmask generate`` folder; SSIM and chroma computed when asked
    (and when the sidecar does not already carry ``metrics``)."""
    from riffmask.metrics.pairs import read_sidecars, sidecar_file
    from riffmask.metrics.seams import sidecar_loops

    items = []
    for name, sidecar in read_sidecars(out_dir):
        files = {role: sidecar_file(out_dir, sidecar, role) for role in sidecar["files"]}
        item = ReportItem(
            name=name,
            input_image=files.get("input_image"),
            mask_image=files.get("mask_image"),
            output_image=files.get("output_image"),
            input_audio=files.get("input_audio"),
            output_audio=files.get("output_audio"),
            params={k: v for k, v in sidecar.items() if k not in _PARAM_SKIP},
            metrics=dict(sidecar.get("metrics") or {}),
        )
        if with_metrics and not item.metrics and item.input_image and item.output_image:
            item.metrics = _pair_metrics(item.input_image, item.output_image, decode)
        looped = sidecar_loops(sidecar)
        if with_metrics and item.output_audio and (sidecar.get("joins") or looped):
            item.metrics = {**item.metrics, **_seam_metrics(name, item.output_audio, sidecar.get("joins"), looped)}
        items.append(item)
    return items


def _pair_metrics(input_image: ImageSource, output_image: ImageSource, decode: DecodeConfig | None) -> dict:
    """SSIM and chroma of two images (files or in memory); ``{"error": ...}`` when they cannot be scored."""
    from riffmask.common.errors import RiffmaskError
    from riffmask.core.codec import load_image
    from riffmask.metrics.similarity import PAPER_DECODE, pair_metrics

    try:
        images = [im if isinstance(im, Image.Image) else load_image(im) for im in (input_image, output_image)]
        return pair_metrics(*images, decode or PAPER_DECODE)
    except (RiffmaskError, ValueError) as exc:
        return {"error": str(exc)}


def _seam_metrics(name: str, audio: Path, joins: Sequence[float] | None, wrap: bool) -> dict:
    """Worst seam and click over the window joins (and a loop's wrap) of one output."""
    from riffmask.metrics.seams import SeamJob, score_jobs

    (row,), _ = score_jobs([SeamJob(name, audio, tuple(joins or ()), wrap)])
    if row["error"]:
        return {"seam_error": row["error"]}
    return {"seam_max": row["seam_max"], "click_max": row["click_max"]}


def write_generation_report(
    out_dir: str | os.PathLike, title: str | None = None, with_metrics: bool = True, decode: DecodeConfig | None = None
) -> Path:
    """``out_dir/report.html`` for a ``riffmask generate`` output folder."""
    from riffmask.metrics.results import summarize

    out_dir = Path(out_dir)
    items = items_from_generation(out_dir, with_metrics, decode)
    summary: dict[str, Any] = {}
    run = out_dir / SUMMARY
    if run.is_file():
        try:
            data = json.loads(run.read_text(encoding="utf-8"))
            summary.update(
                {k: (len(v) if isinstance(v, list) else v) for k, v in data.items() if not isinstance(v, dict)}
            )
        except ValueError:
            log.warning("%s: not valid JSON; summary left out", run)
    for metrics in (("ssim", "chroma"), ("seam_max", "click_max")):
        rows = [dict(i.metrics) for i in items if metrics[0] in i.metrics]
        if rows:
            summary.update({k: v for k, v in summarize(rows, metrics).items() if k not in ("n", "failed")})
    return write_report(out_dir / REPORT, items, title or f"riffmask generate: {out_dir.name}", summary)


def items_from_pairs(pairs: Sequence, rows: Sequence[Mapping[str, Any]]) -> list[ReportItem]:
    """Report items for ``eval pairs`` results (image files shown; audio files played)."""
    from riffmask.metrics.pairs import IMAGE_EXTENSIONS

    items = []
    for pair, row in zip(pairs, rows, strict=True):
        sides = {}
        for role, path in (("input", pair.input_path), ("output", pair.output_path)):
            kind = "image" if path.suffix.lower() in IMAGE_EXTENSIONS else "audio"
            sides[f"{role}_{kind}"] = path
        metrics = {k: row[k] for k in ("ssim", "chroma") if row.get(k) is not None}
        items.append(ReportItem(name=pair.name, metrics=metrics, error=row.get("error", ""), **sides))
    return items


def items_from_seams(jobs: Sequence, rows: Sequence[Mapping[str, Any]]) -> list[ReportItem]:
    """Report items for ``eval seams`` results: a player per sound, its worst seam and click, and
    the seam and click of every join."""
    items = []
    for job, row in zip(jobs, rows, strict=True):
        metrics = {k: row[k] for k in ("seam_max", "click_max", "clicks") if row.get(k) is not None}
        for join in row.get("at", ()):
            where = "wrap" if join["at"] == "wrap" else f"{join['at']:.2f} s"
            metrics[f"seam / click at {where}"] = f"{join['seam']:.3g} / {join['click']:.3g}"
        items.append(ReportItem(name=row["name"], output_audio=job.path, metrics=metrics, error=row.get("error", "")))
    return items
