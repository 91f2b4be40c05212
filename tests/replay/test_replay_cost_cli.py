"""The update cost meter, and `freshrec replay` end to end on a workspace laid out as `prepare`
+ `tokenize` leave it, with its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from freshrec.cli import app
from freshrec.errors import ConfigError
from freshrec.replay import Cost, CostMeter
from freshrec.replay.cli import parse_options
from replay_helpers import copy_checkpoint, make_workspace

runner = CliRunner()


def test_cost_meter_measures_cpu_wall_and_memory():
    with CostMeter() as meter:
        a = np.ones((600, 600))
        for _ in range(20):
            a = a @ a / 600.0
    c = meter.cost
    assert c.cpu_s > 0
    assert c.wall_s > 0
    assert c.peak_mb > 1
    total = c + Cost(1.0, 2.0, 0.5)
    assert total.cpu_s == pytest.approx(c.cpu_s + 1.0)
    assert total.peak_mb == c.peak_mb


def test_parse_options():
    got = parse_options(["edit.edit.lam=300", "edit.max_real=3", "merge.weights=[0.5, 1.0]"])
    assert got == {"edit": {"edit": {"lam": 300}, "max_real": 3}, "merge": {"weights": [0.5, 1.0]}}
    with pytest.raises(ConfigError, match=r"expected <policy>\.<key>=<value>"):
        parse_options(["lam=3"])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, ml_split, ml_sids, causal_ckpt) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("replay-cli")
    work = make_workspace(root / "work", ml_split, ml_sids)
    return work, copy_checkpoint(causal_ckpt, root / "ckpt")


def _invoke(work: Path, *args: str):
    return runner.invoke(app, ["replay", *args, "--set", f"work_dir={work}"])


def test_replay_command_end_to_end(workspace):
    work, ckpt = workspace
    out = work / "report.json"
    res = _invoke(
        work, str(ckpt), "--policy", "static", "--policy", "finetune", "--step-days", "7",
        "--parts", "test", "--max-steps", "2", "--max-requests", "10",
        "--option", "finetune.lr=0.001", "--out", str(out),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "deployment replay" in res.output
    report = json.loads(out.read_text())
    assert [r["policy"] for r in report["results"]] == ["static", "finetune({'lr': 0.001})"]
    steps = report["results"][1]["parts"]["test"]["steps"]
    assert len(steps) == 2
    assert all(s["n"] == 10 for s in steps)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--policy", "nope"], "unknown update policy"),
        (["--option", "merge.method=ties"], "not in any --policy"),
        (["--parts", "train"], "parts"),
        (["--align", "middle"], "align"),
        (["--option", "static.x"], "expected <policy>"),
    ],
)
def test_replay_command_errors_are_one_line(workspace, args: list[str], match: str):
    work, ckpt = workspace
    res = _invoke(work, str(ckpt), "--max-steps", "1", *args)
    assert res.exit_code == 2, res.output
    assert match in res.output
