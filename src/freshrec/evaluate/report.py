"""Result files: JSON + markdown tables with the run metadata docs/EVAL.md requires, and a rich
table.

Rows = methods; results of the same (method, catalog, part) from several seeds are merged into
one row showing the median and the range, as docs/EVAL.md asks.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich import box
from rich.console import Console
from rich.table import Table

from freshrec import atomic
from freshrec.errors import ConfigError
from freshrec.evaluate.protocol import EvalResult

TABLE_KS: tuple[int, ...] = (10, 20, 50)
REQUIRED_META: tuple[str, ...] = ("command", "git_commit", "seeds", "dataset", "split", "machine")


def git_commit(cwd: str | Path | None = None) -> str | None:
    """`git rev-parse HEAD` of the repository containing `cwd` (default: this package), or None."""
    cwd = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """Cores, torch/numpy/python versions, platform."""
    return {
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _command_line() -> str:
    """This process's command line without machine paths: `python <script>.py args` for a
    script (named by its file name), else the program's name and its arguments."""
    if not sys.argv:
        return "python"
    script = Path(sys.argv[0])
    if script.name == "__main__.py":  # python -m package
        head = ["python", "-m", script.parent.name]
    elif script.suffix == ".py":
        head = ["python", script.name]
    else:
        head = [script.name or "python"]
    return " ".join([*head, *sys.argv[1:]])


def run_metadata(
    *,
    dataset: str,
    split: str,
    seeds: Sequence[int] = (0,),
    command: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The header every results file carries: command, git commit, seeds, dataset + split,
    machine (cores, torch version), date (UTC, ISO 8601). `extra` keys are added as they are.

    command defaults to this process's command line.
    """
    return {
        "command": command if command is not None else _command_line(),
        "git_commit": git_commit(),
        "seeds": list(seeds),
        "dataset": dataset,
        "split": split,
        "machine": machine_info(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **extra,
    }


# --------------------------------------------------------------------------- tables


def group_runs(results: Sequence[EvalResult]) -> list[list[EvalResult]]:
    """Results grouped by (method, catalog, part), in first-appearance order."""
    groups: dict[tuple[str, str, str], list[EvalResult]] = {}
    for r in results:
        groups.setdefault((r.method, r.catalog, r.part), []).append(r)
    return list(groups.values())


def _cell(values: list[float], digits: int = 4, ranges: bool = True) -> str:
    vals = [v for v in values if v is not None and not np.isnan(v)]
    if not vals:
        return "–"
    med = float(np.median(vals))
    if not ranges or len(vals) == 1 or min(vals) == max(vals):
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(vals):.{digits}f}–{max(vals):.{digits}f})"


def _table_ks(results: Sequence[EvalResult], ks: Sequence[int]) -> list[int]:
    """`ks` present in the results; all the results' cut-offs when none of `ks` is."""
    have = sorted({k for r in results for k in r.metrics.ks})
    return [k for k in ks if k in have] or have


def table_columns(
    ks: Sequence[int] = TABLE_KS, exposure_k: int | None = None
) -> list[tuple[str, str]]:
    """(header, flat metric key) of the metric columns, in table order. Exposure at
    `exposure_k`, default 10 (or the smallest cut-off when 10 is not among `ks`)."""
    cols = []
    for subset in ("overall", "warm", "cold"):
        cols += [(f"{subset} R@{k}", f"{subset}/recall@{k}") for k in ks]
        cols += [(f"{subset} N@{k}", f"{subset}/ndcg@{k}") for k in ks]
    k_exp = exposure_k or (10 if 10 in ks or not ks else min(ks))
    cols.append((f"exposure@{k_exp}", f"exposure@{k_exp}"))
    return cols


def table_rows(
    results: Sequence[EvalResult], ks: Sequence[int] = TABLE_KS, *, ranges: bool = True
) -> tuple[list[str], list[list[str]]]:
    """(header, rows of cells) for `results`; runs of one method merged as median (range;
    median only with `ranges=False`). Cut-offs of `ks` that no result has are dropped."""
    cols = table_columns(_table_ks(results, ks))
    header = ["method", "catalog", *[c[0] for c in cols], "n (warm/cold)"]
    rows = []
    for group in group_runs(results):
        flats = [r.metrics.to_dict() for r in group]
        first = group[0]
        label = first.method + (f" ×{len(group)} runs" if len(group) > 1 else "")
        cells = [
            _cell([float(f.get(key, float("nan"))) for f in flats], ranges=ranges)
            for _, key in cols
        ]
        m = first.metrics
        rows.append([label, first.catalog, *cells, f"{m.overall.n} ({m.warm.n}/{m.cold.n})"])
    return header, rows


def markdown_table(results: Sequence[EvalResult], ks: Sequence[int] = TABLE_KS) -> str:
    header, rows = table_rows(results, ks)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_markdown(
    results: Sequence[EvalResult],
    meta: dict[str, Any],
    title: str = "freshrec evaluation",
    ks: Sequence[int] = TABLE_KS,
) -> str:
    """A markdown document: metadata header, the table, and per-row evaluation details."""
    machine = meta.get("machine", {})
    parts = sorted({r.part for r in results})
    lines = [
        f"# {title}",
        "",
        f"- command: `{meta.get('command')}`",
        f"- git commit: `{meta.get('git_commit')}`",
        f"- seeds: {meta.get('seeds')}",
        f"- dataset: {meta.get('dataset')}; split: {meta.get('split')}; part: {', '.join(parts)}",
        f"- machine: {machine.get('cores')} cores, torch {machine.get('torch')}, "
        f"python {machine.get('python')}, {machine.get('platform')}",
        f"- date: {meta.get('date')}",
    ]
    for key, value in meta.items():
        if key not in (*REQUIRED_META, "date"):
            lines.append(f"- {key}: {value}")
    lines += [
        "",
        "Protocol: docs/EVAL.md. R = Recall (hit rate), N = NDCG; a hit is the exact "
        "target item (full SID). catalog: `warm` = training-period items only, `full` = incl. "
        "new items. Multiple seeds: median (min–max).",
        "",
        markdown_table(results, ks),
        "| method | part | requests | sampled (seed) | history | coverage@K | seconds "
        "| ms/request |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        sample = (
            f"{r.n_requests} of {r.n_available} (seed {r.sample_seed})"
            if r.sample_seed is not None
            else f"all {r.n_available}"
        )
        k_cov = max(r.metrics.ks)
        lines.append(
            f"| {r.method}{seed_note(r)} | {r.part} | {r.n_requests} | {sample} | "
            f"{'all' if r.history_len is None else f'last {r.history_len}'} | "
            f"{r.metrics.coverage[k_cov]:.4f} (K={k_cov}) | "
            f"{r.seconds:.2f} | {r.ms_per_request:.3f} |"
        )
    return "\n".join(lines) + "\n"


def seed_note(r: EvalResult) -> str:
    """ " (seed N)" when the run recorded a training seed in `extra["seed"]`."""
    return f" (seed {r.extra['seed']})" if r.extra.get("seed") is not None else ""


def write_report(
    path: str | Path,
    results: Sequence[EvalResult],
    meta: dict[str, Any],
    title: str = "freshrec evaluation",
    ks: Sequence[int] = TABLE_KS,
) -> tuple[Path, Path]:
    """Write `<path>.json` and `<path>.md` atomically (`path` without suffix; a `.json`/`.md`
    suffix is stripped). Returns (json_path, md_path)."""
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ConfigError(f"report metadata lacks {missing}; build it with run_metadata(...)")
    path = Path(path)
    if path.suffix in (".json", ".md"):
        path = path.with_suffix("")
    json_path, md_path = path.with_name(path.name + ".json"), path.with_name(path.name + ".md")
    payload = {"meta": meta, "results": [r.to_dict() for r in results]}
    atomic.write_text(json_path, json.dumps(_jsonable(payload), indent=2, sort_keys=True) + "\n")
    atomic.write_text(md_path, render_markdown(results, meta, title, ks))
    return json_path, md_path


def _jsonable(obj: Any) -> Any:
    """NaN -> None (strict JSON), numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and np.isnan(obj):
        return None
    return obj


def load_report(path: str | Path) -> tuple[dict[str, Any], list[EvalResult]]:
    """Read a JSON report written by `write_report`: (meta, results)."""
    data = json.loads(Path(path).read_text())
    results = []
    for d in data["results"]:
        d["metrics"] = {k: float("nan") if v is None else v for k, v in d["metrics"].items()}
        results.append(EvalResult.from_dict(d))
    return data["meta"], results


# --------------------------------------------------------------------------- rich


def rich_table(
    results: Sequence[EvalResult], title: str | None = None, ks: Sequence[int] = (20,)
) -> Table:
    """A compact `rich.table.Table` for the CLI: per method, R/N at `ks` for all/warm/cold,
    exposure@10 (medians over runs; request counts in the caption, or in an `n` column when
    they differ). Fits 80 columns with the default `ks=(20,)`."""
    have = _table_ks(results, TABLE_KS)
    ks = _table_ks(results, ks)
    cols = table_columns(ks, exposure_k=10 if 10 in have else None)
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    table.add_column("method", overflow="fold", min_width=14, max_width=24)
    table.add_column("cat")
    short = {"overall": "all", "exposure": "exp"}
    for head, _ in cols:
        for long, abbrev in short.items():
            head = head.replace(long, abbrev)
        table.add_column(head.replace(" ", "\n"), justify="right", no_wrap=True)
    counts = {(r.metrics.overall.n, r.metrics.warm.n, r.metrics.cold.n) for r in results}
    if len(counts) != 1:
        table.add_column("n", justify="right", no_wrap=True)
    for group in group_runs(results):
        flats = [r.metrics.to_dict() for r in group]
        first, m = group[0], group[0].metrics
        label = first.method + (f" ×{len(group)}" if len(group) > 1 else "")
        cells = [
            _cell([float(f.get(key, float("nan"))) for f in flats], digits=3, ranges=False)
            for _, key in cols
        ]
        table.add_row(
            label, first.catalog, *cells, *([str(m.overall.n)] if len(counts) > 1 else [])
        )
    if len(counts) == 1:
        n, w, c = counts.pop()
        table.caption = f"{n} requests: {w} warm, {c} cold"
    return table


def print_results(
    results: Sequence[EvalResult],
    title: str | None = None,
    console: Console | None = None,
    ks: Sequence[int] = (20,),
) -> None:
    """Print `rich_table(results, title, ks)` to `console` (default: a new stdout console)."""
    (console or Console()).print(rich_table(results, title, ks))
