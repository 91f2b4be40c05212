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


def _save(fig: plt.Figure, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())
    return Path(path)


def _label(r: EvalResult) -> str:
    return r.method if r.catalog == "full" else f"{r.method} [warm]"


def plot_cold_collapse(
    results: Sequence[EvalResult], path: str | Path, ks: Sequence[int] = (20, 50)
) -> Path:
    """Grouped bars of warm vs cold Recall@K (one panel per K) for each method. Returns path."""
    if not results:
        raise ConfigError("no results to plot")
    ks = [k for k in ks if all(k in r.metrics.ks for r in results)]
    if not ks:
        raise ConfigError("none of the requested cut-offs is in every result")
    labels = [_label(r) for r in results]
    x = np.arange(len(results))
    width = 0.38
    fig, axes = plt.subplots(
        1, len(ks), figsize=(max(4.0, 1.3 * len(results)) * len(ks), 3.8), squeeze=False
    )
    for ax, k in zip(axes[0], ks, strict=True):
        warm = [r.metrics.warm.recall[k] for r in results]
        cold = [r.metrics.cold.recall[k] for r in results]
        bw = ax.bar(x - width / 2, np.nan_to_num(warm), width, label="warm", color="#4C72B0")
        bc = ax.bar(x + width / 2, np.nan_to_num(cold), width, label="cold", color="#DD8452")
        ax.bar_label(bw, fmt="%.3f", fontsize=7)
        ax.bar_label(bc, fmt="%.3f", fontsize=7)
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
    one line per method and `which` entry ("top1", "top10", ...). Results without SID
    accuracy are skipped; raises ConfigError when none has it."""
    series = [
        (f"{_label(r)} {name}", r.metrics.pos_acc[name])
        for r in results
        for name in which
        if name in r.metrics.pos_acc
    ]
    if not series:
        raise ConfigError("no result carries per-position accuracy (evaluate with sids=...)")
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for label, acc in series:
        ax.plot(np.arange(1, len(acc) + 1), acc, marker="o", label=label)
    n_pos = max(len(acc) for _, acc in series)
    ax.set_xticks(np.arange(1, n_pos + 1))
    ax.set_xlabel("SID prefix length (tokens)")
    ax.set_ylabel("share of requests with the right prefix")
    ax.set_ylim(0, 1.02)
    ax.set_title("How far the right SID prefix gets")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
