"""The paper's two figures: metric means with standard-error bars against a swept value, and the
ablation (all steps / no brightness / no contrast) with its paired statistics. PNG via matplotlib's
Agg backend (no display needed)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from riffmask.common.io import atomic_path
from riffmask.metrics.results import Row, mean_sem

METRIC_LABELS = {"ssim": "SSIM", "chroma": "chroma similarity", "ssim_vae": "SSIM to the VAE round trip",
                 "genre": "genre rate", "input_genre": "genre rate of the input"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def group_mean_sem(rows: Sequence[Row], by: str, metric: str) -> list[tuple[float, float, float, int]]:
    """``(value, mean, sem, count)`` of ``metric`` for each distinct ``by`` value, sorted."""
    values = sorted({r[by] for r in rows if r.get(by) is not None})
    out = []
    for value in values:
        mean, sem, n = mean_sem(r.get(metric) for r in rows if r.get(by) == value)
        out.append((value, mean, sem, n))
    return out


def plot_sweep(rows: Sequence[Row], param: str, path: str | os.PathLike, metrics: Sequence[str] = ("ssim", "chroma")):
    """Mean of each metric with standard-error bars against ``param`` (one line per metric)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for metric in metrics:
        points = group_mean_sem(rows, param, metric)
        ax.errorbar(
            [p[0] for p in points],
            [p[1] for p in points],
            yerr=[0 if p[2] != p[2] else p[2] for p in points],
            marker="o",
            capsize=3,
            label=METRIC_LABELS.get(metric, metric),
        )
    count = max((p[3] for m in metrics for p in group_mean_sem(rows, param, m)), default=0)
    ax.set_xlabel(param)
    ax.set_ylabel("mean ± standard error")
    ax.set_title(f"{', '.join(METRIC_LABELS.get(m, m) for m in metrics)} vs {param} (n = {count} per point)")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
    plt.close(fig)


def plot_ablation(
    groups: Mapping[str, Mapping[str, Sequence[float]]],
    tests: Mapping[str, Mapping[str, dict]],
    path: str | os.PathLike,
    metrics: Sequence[str] = ("ssim", "chroma"),
) -> None:
    """Bars of mean ± s.e. per variant and metric; each non-baseline bar's label carries the paired
    t-test p value and Cohen's d against the first variant. ``groups[variant][metric]`` holds values
    per input (same order in every variant); ``tests[variant][metric]`` the comparisons."""
    import numpy as np

    plt = _pyplot()
    variants = list(groups)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        stats = [mean_sem(groups[v][metric]) for v in variants]
        x = np.arange(len(variants))
        ax.bar(
            x,
            [s[0] for s in stats],
            yerr=[0 if s[1] != s[1] else s[1] for s in stats],
            capsize=4,
            color=["#4c72b0", "#dd8452", "#55a868", "#c44e52"][: len(variants)],
        )
        labels = [variants[0]]
        for variant in variants[1:]:
            test = tests.get(variant, {}).get(metric)
            labels.append(f"{variant}\np={test['p']:.3g}, d={test['cohens_d']:.2f}" if test else variant)
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_ylabel(f"mean {METRIC_LABELS.get(metric, metric)}")
        ax.set_title(f"{METRIC_LABELS.get(metric, metric)} (n = {stats[0][2]})")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("ablation: paired t-test and Cohen's d against " + variants[0])
    _save(fig, path)
    plt.close(fig)
