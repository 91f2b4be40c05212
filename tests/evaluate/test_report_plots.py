"""Report writer (JSON + markdown with metadata) and plot writer (non-empty PNGs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from freshrec.data.schema import Split
from freshrec.errors import ConfigError
from freshrec.evaluate import (
    EvalResult,
    evaluate_ranker,
    load_report,
    print_results,
    run_metadata,
    write_report,
)
from freshrec.evaluate.baselines import PopularityRanker, TextKNNRanker
from freshrec.evaluate.plots import plot_cold_collapse, plot_cutoffs, plot_position_accuracy

KS = (1, 5)


def _results(split: Split) -> list[EvalResult]:
    sids = np.stack([np.arange(8) // 4, np.arange(8) // 2 % 2, np.arange(8) % 2], axis=1)
    emb = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    return [
        evaluate_ranker(PopularityRanker(), split, top_k=5, ks=KS, sids=sids),
        evaluate_ranker(TextKNNRanker(emb), split, top_k=5, ks=KS, sids=sids, extra={"seed": 0}),
        evaluate_ranker(TextKNNRanker(emb * 2), split, top_k=5, ks=KS, sids=sids),
    ]


def test_report_md_json_metadata(tiny_split: Split, tmp_path: Path) -> None:
    results = _results(tiny_split)
    meta = run_metadata(dataset="tiny", split="time 0.8/0.1/0.1", seeds=[0, 1], command="pytest")
    json_path, md_path = write_report(tmp_path / "reports" / "baselines", results, meta)
    data = json.loads(json_path.read_text())
    for key in ("command", "git_commit", "seeds", "dataset", "split", "machine", "date"):
        assert key in data["meta"]
    assert data["meta"]["machine"]["cores"] >= 1
    assert "torch" in data["meta"]["machine"]
    assert data["results"][0]["metrics"]["cold/n"] == 2
    md = md_path.read_text()
    assert "git commit" in md
    assert "seeds: [0, 1]" in md
    assert "| most-popular | warm | 0.0000 | 0.0000 |" in md  # falls back to R@1, R@5
    assert "cold R@5" in md
    assert "text-knn ×2 runs" in md  # same method twice -> one row, median (range)
    assert md.count("\n| most-popular") == 2  # table row + details row
    meta2, back = load_report(json_path)
    assert meta2["dataset"] == "tiny"
    assert back[1].metrics.to_dict() == results[1].metrics.to_dict()


def test_report_cites_repo_docs_not_machine_paths(tiny_split: Split, tmp_path: Path) -> None:
    meta = run_metadata(dataset="tiny", split="time")  # the default command: this process's
    assert not meta["command"].split()[0].startswith("/")
    assert sys.executable not in meta["command"]
    _, md_path = write_report(tmp_path / "r", _results(tiny_split), meta)
    md = md_path.read_text()
    assert "Protocol: docs/EVAL.md." in md
    assert "/work/" not in md


def test_rich_table_renders(tiny_split: Split) -> None:
    console = Console(record=True, width=250)
    print_results(_results(tiny_split), title="baselines", console=console, ks=(5,))
    text = console.export_text()
    assert "most-popular" in text
    assert "R@5" in text
    assert "4 requests: 2 warm, 2 cold" in text


def test_plots_nonempty_png(tiny_split: Split, tmp_path: Path) -> None:
    results = _results(tiny_split)
    a = plot_cold_collapse(results, tmp_path / "cold.png", ks=(1, 5))
    b = plot_position_accuracy(results, tmp_path / "pos.png", which=("top1", "top5"))
    for p in (a, b):
        data = p.read_bytes()
        assert len(data) > 1000
        assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_cutoffs_fall_back_to_shared_ones(tiny_split: Split, tmp_path: Path) -> None:
    """An evaluation with a small top_k (cut-offs 1 and 5 here) still plots: the default
    Recall@20/50 panels become the largest cut-offs every result has."""
    results = _results(tiny_split)
    assert plot_cutoffs(results, (20, 50)) == [1, 5]
    assert plot_cutoffs(results, (5,)) == [5]
    assert plot_cold_collapse(results, tmp_path / "cold.png").stat().st_size > 1000


def test_plot_cutoffs_refuse_results_without_a_shared_one(tiny_split: Split) -> None:
    a = evaluate_ranker(PopularityRanker(), tiny_split, top_k=5, ks=(1,))
    b = evaluate_ranker(PopularityRanker(), tiny_split, top_k=5, ks=(5,))
    with pytest.raises(ConfigError, match="share no Recall@K cut-off"):
        plot_cutoffs([a, b], (20, 50))
    with pytest.raises(ConfigError, match="no results"):
        plot_cutoffs([], (20,))
