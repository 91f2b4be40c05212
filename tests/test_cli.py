"""The `freshrec` CLI end to end on the bundled MovieLens with a tiny recipe, and its errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from freshrec.cli import app
from freshrec.embed import cache_path
from model_helpers import TINY_CAUSAL

runner = CliRunner()
TINY = [
    *TINY_CAUSAL,
    "train.epochs=1",
    "train.valid_requests=100",
    "train.valid_beam=10",
    "eval.max_requests=200",
    "eval.beam_size=20",
    "eval.baselines=[popularity,textknn]",
    "fresh.valid_requests=600",
]


def invoke(*args: str, work: Path, extra: list[str] | None = None):
    sets = [f"work_dir={work}", *TINY, *(extra or [])]
    argv = [*args]
    for s in sets:
        argv += ["--set", s]
    return runner.invoke(app, argv)


def seeded_work(work: Path, texts: list[str]) -> Path:
    """`work` with its embedding cache pre-seeded from the test cache (same texts, same key)."""
    src = cache_path(Path(__file__).resolve().parents[1] / ".freshrec" / "test-cache", texts)
    dst = cache_path(work / "ml-latest-small" / "embeddings", texts)
    dst.parent.mkdir(parents=True)
    shutil.copy(src, dst)
    return work


@pytest.fixture(scope="module")
def work(tmp_path_factory, ml_dataset, ml_emb) -> Path:
    return seeded_work(tmp_path_factory.mktemp("work"), ml_dataset.items.texts)


def test_pipeline_end_to_end(work: Path):
    res = invoke("prepare", work=work)
    assert res.exit_code == 0, res.output
    assert "71888" in res.output.replace(",", "")  # training interactions, default split

    res = invoke("tokenize", work=work)
    assert res.exit_code == 0, res.output
    report = json.loads((work / "ml-latest-small" / "tokenizer" / "report.json").read_text())
    assert report["all"]["sids_unique"] is True
    assert report["all"]["n_assigned"] == 9724

    res = invoke("train", work=work)
    assert res.exit_code == 0, res.output
    best = work / "ml-latest-small" / "checkpoints" / "causal-s0" / "best"
    assert (best / "model.safetensors").exists()

    fresh = json.loads((best / "fresh.json").read_text())  # calibrated after training
    assert fresh["fitted"]["part"] == "valid"
    assert fresh["fitted"]["n_requests"] == 600
    assert "fresh ranker calibrated on 600 validation requests" in res.output

    res = invoke("calibrate", str(best), work=work, extra=["fresh.budget=0.05"])
    assert res.exit_code == 0, res.output
    assert json.loads((best / "fresh.json").read_text())["fitted"]["budget"] == 0.05

    res = invoke("evaluate", str(best), work=work)
    assert res.exit_code == 0, res.output
    out = work / "ml-latest-small" / "reports" / "evaluate"
    results = json.loads((out / "results.json").read_text())
    by = {r["method"]: r for r in results["results"]}
    assert {"CAUSAL", "CAUSAL_C", "FRESH", "most-popular", "text-sim"} <= set(by)
    # the fused ranker recommends new items where the plain GR model does not
    assert by["FRESH"]["metrics"]["exposure@20"] > by["CAUSAL"]["metrics"]["exposure@20"]
    assert (out / "cold_collapse.png").stat().st_size > 0
    assert (out / "position_accuracy.png").stat().st_size > 0

    res = invoke("recommend", "--user", "1", "--checkpoint", str(best), "--top-k", "5", work=work)
    assert res.exit_code == 0, res.output
    assert res.output.count("score") == 5


def test_unknown_user_is_a_clear_error(work: Path):
    best = work / "ml-latest-small" / "checkpoints" / "causal-s0" / "best"
    if not best.exists():
        pytest.skip("needs the end-to-end test's checkpoint")
    res = invoke("recommend", "--user", "no-such-user", "--checkpoint", str(best), work=work)
    assert res.exit_code == 2
    assert "unknown user id 'no-such-user'" in res.output


def test_bad_override_and_missing_stage_are_clear_errors(tmp_path: Path):
    res = invoke("prepare", work=tmp_path, extra=["train.epochs=-3"])
    assert res.exit_code == 2
    assert "invalid recipe: train.epochs" in res.output

    res = invoke("prepare", work=tmp_path, extra=["nonsense"])
    assert res.exit_code == 2
    assert "must look like section.key=value" in res.output

    res = invoke("train", work=tmp_path / "empty")
    assert res.exit_code == 2
    assert "run `freshrec prepare` first" in res.output

    res = runner.invoke(app, ["prepare", "--recipe", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2
    assert "neither a file nor a built-in recipe" in res.output


def test_demo_runs_the_whole_pipeline(tmp_path_factory, ml_dataset, ml_emb):
    """`freshrec demo` (the README's main command) with a tiny recipe: every stage's output."""
    work = seeded_work(tmp_path_factory.mktemp("demo"), ml_dataset.items.texts)
    res = invoke("demo", work=work)
    assert res.exit_code == 0, res.output
    root = work / "ml-latest-small"
    assert (root / "prepared").is_dir()
    assert (root / "tokenizer" / "report.json").exists()
    assert (root / "checkpoints" / "causal-s0" / "best" / "model.safetensors").exists()
    assert (root / "reports" / "evaluate" / "results.md").exists()
    assert "done in" in res.output
    assert "…" not in res.output  # the results table fits the 80-column output (no cut cells)
