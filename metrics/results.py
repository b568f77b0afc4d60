"""Tables of per-item results: printed for a person, written as CSV and JSON for tools.

Every evaluation command returns rows (one dict per file or combination) plus a summary; this
module is the one place that turns them into text, so that `eval pairs`, `eval fad`, `eval clap`
and `sweep` print and save alike.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from riffmask.common.io import write_json_atomic, write_text_atomic

Row = dict[str, Any]


def columns_of(rows: Iterable[Row]) -> list[str]:
    """Column names in first-seen order over all rows."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def format_table(rows: Sequence[Row], columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """A plain-text table with aligned columns (floats shown with ``digits`` decimals)."""
    columns = list(columns or columns_of(rows))
    cells = [[_cell(row.get(c), digits) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def csv_text(rows: Sequence[Row], columns: Sequence[str] | None = None) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns or columns_of(rows)), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(path: str | os.PathLike, rows: Sequence[Row], columns: Sequence[str] | None = None) -> None:
    """Write rows as CSV atomically."""
    write_text_atomic(path, csv_text(rows, columns))


def read_csv(path: str | os.PathLike) -> list[Row]:
    """Rows of a CSV written by :func:`write_csv`; numbers come back as floats or ints."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def write_json(path: str | os.PathLike, rows: Sequence[Row], summary: Row) -> None:
    """``{"summary": ..., "items": rows}``, atomically."""
    write_json_atomic(path, {"summary": summary, "items": list(rows)})


def mean_sem(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, standard error of the mean (ddof 1; NaN below two values) and count of finite values."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan, 0
    sem = float(data.std(ddof=1) / math.sqrt(data.size)) if data.size > 1 else math.nan
    return float(data.mean()), sem, int(data.size)


def summarize(rows: Sequence[Row], metrics: Sequence[str]) -> Row:
    """``{metric}_mean``, ``{metric}_sem`` per metric, ``n`` items scored and ``failed`` items."""
    failed = sum(1 for r in rows if r.get("error"))
    summary: Row = {"n": len(rows) - failed, "failed": failed}
    for name in metrics:
        mean, sem, _ = mean_sem(r[name] for r in rows if isinstance(r.get(name), int | float))
        summary[f"{name}_mean"] = mean
        summary[f"{name}_sem"] = sem
    return summary


def emit(
    rows: Sequence[Row],
    summary: Row,
    columns: Sequence[str] | None = None,
    json_path: str | os.PathLike | None = None,
    csv_path: str | os.PathLike | None = None,
) -> str:
    """Write the requested files and return the table followed by the summary, for printing."""
    if csv_path:
        write_csv(csv_path, rows, columns)
    if json_path:
        write_json(json_path, rows, summary)
    lines = [format_table(rows, columns)] if rows else []
    lines.append("  ".join(f"{k}={_cell(v, 4)}" for k, v in summary.items()))
    return "\n".join(lines)
