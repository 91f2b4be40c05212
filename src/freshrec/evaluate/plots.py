"""Report figures (matplotlib, Agg backend), saved as PNG atomically.

(a) cold-start collapse: warm vs cold Recall@K per method, grouped bars;
(b) per-position SID token accuracy: one line per method.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from freshrec import atomic
from freshrec.errors import ConfigError
from freshrec.evaluate.protocol import EvalResult
from freshrec.evaluate.report import group_runs


def _save(fig: plt.Figure, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())
    return Path(path)


def _label(group: list[EvalResult]) -> str:
    r = group[0]
    label = r.method if r.catalog == "full" else f"{r.method} [warm]"
    return label + (f" ×{len(group)}" if len(group) > 1 else "")


def _median_range(values: list[float]) -> tuple[float, float, float]:
    """(median, median - min, max - median) ignoring NaN (0, 0, 0 when all are NaN)."""
    v = np.asarray([x for x in values if not np.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return 0.0, 0.0, 0.0
    med = float(np.median(v))
    return med, med - float(v.min()), float(v.max()) - med


def plot_cutoffs(results: Sequence[EvalResult], ks: Sequence[int]) -> list[int]:
    """`ks` if every result has them, else the len(ks) largest cut-offs all results share."""
    if not results:
        raise ConfigError("no results to plot")
    common = sorted(set.intersection(*(set(r.metrics.ks) for r in results)))
    if not common:
        raise ConfigError("the results share no Recall@K cut-off to plot")
    wanted = [k for k in ks if k in common]
    return wanted if len(wanted) == len(ks) else common[-len(ks) :]


def plot_cold_collapse(
    results: Sequence[EvalResult], path: str | Path, ks: Sequence[int] = (20, 50)
) -> Path:
    """Grouped bars of warm vs cold Recall@K (one panel per K) per method; runs of one method
    (seeds) are merged: bar = median, error bar = range. Cut-offs missing from a result (e.g.
    an evaluation with top_k 10) fall back to the largest ones every result has. Returns
    `path`."""
    ks = plot_cutoffs(results, ks)
    groups = group_runs(results)
    labels = [_label(g) for g in groups]
    x = np.arange(len(groups))
    multi = np.array([len(g) > 1 for g in groups])  # error bars only for merged runs
    width = 0.38
    fig, axes = plt.subplots(
        1, len(ks), figsize=(max(4.0, 1.3 * len(groups)) * len(ks), 3.8), squeeze=False
    )
    for ax, k in zip(axes[0], ks, strict=True):
        for offset, subset, color in ((-1, "warm", "#4C72B0"), (1, "cold", "#DD8452")):
            stats = np.array(
                [_median_range([r.metrics.subset(subset).recall[k] for r in g]) for g in groups]
            )
            bars = ax.bar(
                x + offset * width / 2,
                stats[:, 0],
                width,
                yerr=np.where(multi[:, None], stats[:, 1:], np.nan).T if multi.any() else None,
                capsize=3,
                label=subset,
                color=color,
            )
            ax.bar_label(bars, fmt="%.3f", fontsize=7)
        ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(f"Recall@{k}")
        ax.set_title(f"Warm vs cold Recall@{k}")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_position_accuracy(
    results: Sequence[EvalResult], path: str | Path, which: Sequence[str] = ("top1",)
) -> Path:
    """Per-position SID token accuracy (share of requests whose first j+1 tokens are right),
    one line per method (median over its runs, shaded range) and `which` entry ("top1" solid,
    others dashed). Results without SID accuracy are skipped; ConfigError when none has it."""
    series = []
    for group in group_runs(results):
        for name in which:
            accs = [r.metrics.pos_acc[name] for r in group if name in r.metrics.pos_acc]
            if accs:
                series.append((_label(group), name, np.asarray(accs, dtype=np.float64)))
    if not series:
        raise ConfigError("no result carries per-position accuracy (evaluate with sids=...)")
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    method_color: dict[str, str] = {}
    for label, name, acc in series:
        color = method_color.setdefault(label, colors[len(method_color) % len(colors)])
        pos = np.arange(1, acc.shape[1] + 1)
        ax.plot(
            pos,
            np.median(acc, axis=0),
            marker="o",
            color=color,
            linestyle="-" if name == "top1" else "--",
            label=f"{label} {name}",
        )
        if acc.shape[0] > 1:
            ax.fill_between(pos, acc.min(axis=0), acc.max(axis=0), color=color, alpha=0.15)
    n_pos = max(acc.shape[1] for _, _, acc in series)
    ax.set_xticks(np.arange(1, n_pos + 1))
    ax.set_xlabel("SID prefix length (tokens)")
    ax.set_ylabel("share of requests with the right prefix")
    ax.set_ylim(bottom=0)
    ax.set_title("How far the right SID prefix gets")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
