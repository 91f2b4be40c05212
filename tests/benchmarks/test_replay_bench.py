"""benchmarks/replay_bench.py end to end at a tiny size (one trained tiny model, one one-week
step per period, a few requests): it chooses settings on validation, replays the test period
with every policy and writes the results files with the issue's keys."""

from __future__ import annotations

import json

import torch

import replay_bench
from replay_helpers import copy_checkpoint, make_workspace, tiny_causal_checkpoint

POLICIES = ("static", "edit", "finetune", "merge", "retrain", "merge+edit")


def test_replay_bench_writes_its_results(tmp_path, ml_split, ml_sids):
    work = make_workspace(tmp_path / "work", ml_split, ml_sids)
    ckpt = copy_checkpoint(tiny_causal_checkpoint(ml_split, ml_sids), tmp_path / "ckpt")
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    try:
        replay_bench.main(
            [
                "--seeds", "0", "--checkpoint", str(ckpt), "--step-days", "7",
                "--max-steps", "1", "--valid-steps", "1", "--max-requests", "8",
                "--retrain-epochs", "1", "--retrain-days", "14", "--valid-align", "start",
                "--policies", ",".join(POLICIES), "--threads", "1",
                "--set", f"work_dir={work}", "--set", "fresh.calibrate=false",
                "--work", str(tmp_path / "replay"), "--out", str(out),
            ]
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    res = json.loads((out / "replay.json").read_text())
    assert set(res["policies"]) == set(POLICIES)
    for name, p in res["policies"].items():
        for key in ("mean_recall20", "mean_cold_recall20", "mean_warm_recall20"):
            assert p[key] is None or 0.0 <= p[key] <= 1.0, (name, key)
        assert p["update_cpu_seconds"] >= 0
        assert p["peak_mem_mb"] > 0
        assert p["n_requests"] > 0
    assert res["policies"]["retrain"]["catchup_cpu_seconds"] > 1  # retrained before the test
    assert res["policies"]["static"]["update_cpu_seconds"] < 0.5
    assert res["step_days"] == 7
    assert res["n_steps"] == 1
    assert res["seeds"] == [0]
    assert len(res["selection"]["edit"]) == 2
    assert res["chosen"]["merge"]["method"] in ("linear", "ties")
    assert res["meta"]["command"].startswith("python")
    assert res["checks"]["best_non_retrain"] in POLICIES
    assert "recall_vs_retrain" in res["checks"]
    assert "edit_beats_static" in res["checks"]
    assert (out / "replay.png").stat().st_size > 0
    md = (out / "replay.md").read_text()
    assert "## Done when" in md
    assert "merge+edit" in md
