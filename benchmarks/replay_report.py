"""Tables, curves and the plot of the replay benchmark (benchmarks/replay_bench.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

KEYS = (
    "mean_recall20",
    "mean_cold_recall20",
    "mean_warm_recall20",
    "mean_ndcg10",
    "mean_warm_ndcg10",
    "mean_cold_ndcg10",
    "update_cpu_seconds",
    "update_wall_seconds",
    "peak_mem_mb",
    "catchup_cpu_seconds",
    "score_cpu_seconds",
    "n_requests",
    "unlisted_targets",
)


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.median(vals)) if vals else None


def summary_row(
    runs: dict[int, dict[str, Any]], name: str, chosen: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Medians over seeds of each summary key, the settings, and every seed's summary."""
    row: dict[str, Any] = {k: _median([r["summary"][k] for r in runs.values()]) for k in KEYS}
    row["settings"] = {p: chosen[p] for p in name.split("+")}
    row["per_seed"] = {str(seed): r["summary"] for seed, r in runs.items()}
    return row


def curves(tests: dict[str, dict[int, dict[str, Any]]]) -> dict[str, dict[str, list[Any]]]:
    """Per policy: step start times, seed-median R@20 per step (None where no requests) and the
    seed-median cumulative update CPU-seconds after each step (catch-up included at 0)."""
    out = {}
    for name, runs in tests.items():
        first = next(iter(runs.values()))
        n = len(first["steps"])
        rec = [
            _median([r["steps"][i].get("overall_recall20") for r in runs.values()])
            for i in range(n)
        ]
        cum = np.median(
            [
                r["catchup"]["cpu_s"] + np.cumsum([s["update"]["cpu_s"] for s in r["steps"]])
                for r in runs.values()
            ],
            axis=0,
        )
        out[name] = {
            "t0": [s["t0"] for s in first["steps"]],
            "n_requests": [s["n"] for s in first["steps"]],
            "recall20": rec,
            "cum_update_cpu_seconds": [float(c) for c in cum],
        }
    return out


def plot(result: dict[str, Any], path: Path) -> Path:
    """R@20 per step (seed medians) and cumulative update CPU-seconds, one line per policy."""
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for name, c in result["curves"].items():
        x = np.arange(len(c["recall20"]))
        y = np.array([np.nan if v is None else v for v in c["recall20"]], dtype=float)
        ax1.plot(x, y, marker="o", ms=3, label=name)
        ax2.plot(x, c["cum_update_cpu_seconds"], label=name)
    ax1.set_ylabel("R@20 of the step's requests")
    ax1.set_title(
        f"deployment replay, test period, {result['step_days']:g}-day steps "
        f"(median of seeds {result['seeds']})"
    )
    ax1.legend(fontsize=8)
    ax2.set_ylabel("cumulative update CPU-s\n(catch-up included)")
    ax2.set_yscale("symlog")
    ax2.set_xlabel("step")
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _f(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    meta, checks = result["meta"], result["checks"]
    machine = meta.get("machine", {})
    lines = [
        "# Deployment replay (issue 16)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Seeds: {result['seeds']} (training seeds; settings chosen on seed "
        f"{result['seeds'][0]}'s validation walk)  ",
        f"Machine: {machine}, {meta.get('threads')} torch threads  ",
        f"Date: {meta['date']}, commit {meta.get('git_commit')}; whole benchmark "
        f"{meta['benchmark_cpu_seconds']:.0f} CPU-s",
        "",
        f"Test period walked in {result['n_steps']} steps of {result['step_days']:g} days from "
        f"its start (validation: {result['valid_steps']} steps at the {result['valid_align']} of "
        f"its period), at most {result['max_requests']} requests scored per step "
        "(seeded sample); each walk starts from the trained checkpoint and the policy first "
        "catches up on the time since the training cut-off as one update; recommendations "
        "through `Session.recommend` mode fresh, top 20, exact full-SID hits; warm / cold = "
        "the target had / had no training-period "
        "interaction. R@20 and N@10 are over every scored request of the period (each scored by "
        "the model deployed at its step); update CPU-seconds are summed over the steps (the "
        "catch-up on the validation period before the first test step is shown apart); peak "
        "memory is the process's peak RSS during updates. Medians over seeds.",
        "",
        "| policy | R@20 | warm R@20 | cold R@20 | N@10 | update CPU-s | update wall-s | "
        "catch-up CPU-s | peak MiB | requests |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, p in result["policies"].items():
        lines.append(
            f"| {name} | {_f(p['mean_recall20'])} | {_f(p['mean_warm_recall20'])} | "
            f"{_f(p['mean_cold_recall20'])} | {_f(p['mean_ndcg10'])} | "
            f"{_f(p['update_cpu_seconds'], 1)} | {_f(p['update_wall_seconds'], 1)} | "
            f"{_f(p['catchup_cpu_seconds'], 1)} | {_f(p['peak_mem_mb'], 0)} | "
            f"{_f(p['n_requests'], 0)} |"
        )
    lines += ["", "## Done when", ""]
    if "best_non_retrain" in checks:
        lines.append(
            f"- best policy without retraining: `{checks['best_non_retrain']}`, R@20 "
            f"x{_f(checks['recall_vs_retrain'], 3)} of `retrain` (target >= 0.98) at "
            f"x{_f(checks['cpu_vs_retrain'], 4)} its update CPU-seconds (target <= 0.05): "
            f"{'met' if checks['best_non_retrain_ok'] else 'not met'}"
        )
    for name in ("edit", "merge"):
        key = f"{name}_minus_static_recall20"
        if key in checks:
            verdict = "beats" if checks[f"{name}_beats_static"] else "does not beat"
            lines.append(f"- `{name}` {verdict} `static`: R@20 {checks[key]:+.4f}")
    lines += ["", "## Settings chosen on validation", ""]
    for name, rows in result["selection"].items():
        lines.append(f"- `{name}`: {result['chosen'][name]}")
        for r in rows:
            v = r["valid"]
            lines.append(
                f"  - {r['settings']}: valid R@20 {_f(v['mean_recall20'])}, cold "
                f"{_f(v['mean_cold_recall20'])}, update {_f(v['update_cpu_seconds'], 1)} CPU-s"
            )
    lines += ["", "Plot: `replay.png` (R@20 per step, cumulative update CPU-seconds).", ""]
    return "\n".join(lines)
