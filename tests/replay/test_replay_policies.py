"""The update-policy registry and the policies' building blocks: names, combinations and
settings errors; a policy defined here is used by name; the latest real requests per item;
merging two state dicts with registered merge methods."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from pydantic import BaseModel, ConfigDict

from freshrec.errors import ConfigError
from freshrec.replay import (
    POLICIES,
    Combined,
    ReplayConfig,
    UpdatePolicy,
    make_policy,
    register_policy,
    replay_part,
)
from freshrec.replay.policies.edit import latest_per_item
from freshrec.replay.policies.merge import merge_states
from freshrec.replay.timeline import DAY, observed_requests


def test_builtin_policies_and_combinations():
    assert {"static", "edit", "finetune", "merge", "retrain"} <= set(POLICIES.names())
    combo = make_policy("merge+edit", {"merge": {"method": "ties"}, "edit": {"max_real": 3}})
    assert isinstance(combo, Combined)
    assert [p.name for p in combo.parts] == ["merge", "edit"]
    assert combo.parts[0].settings.method == "ties"
    assert combo.parts[1].settings.max_real == 3
    assert combo.parts[1].edit_config.measure_reliability is False  # diagnostics off by default
    loud = make_policy("edit", {"edit": {"edit": {"measure_reliability": True, "lam": 30}}})
    assert loud.edit_config.measure_reliability is True
    assert loud.edit_config.lam == 30
    assert "merge" in combo.describe()
    assert "max_real" in combo.describe()


@pytest.mark.parametrize(
    ("spec", "settings", "match"),
    [
        (
            "nope",
            None,
            "unknown update policy 'nope'; expected one of: edit, finetune",
        ),
        ("edit+edit", None, "each at most once"),
        ("edit+", None, "joined by"),
        ("static", {"edit": {}}, "not in policy"),
        ("finetune", {"finetune": {"lr": -1}}, "lr"),
        ("merge", {"merge": {"colour": 1}}, "colour"),
        ("edit", {"edit": {"editor": "nope"}}, "unknown editor"),
        ("edit", {"edit": {"edit": {"lam": "x"}}}, "lam"),
    ],
)
def test_bad_policies_are_clear_errors(spec: str, settings: Any, match: str):
    with pytest.raises(ConfigError, match=match):
        make_policy(spec, settings)


class CountSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    every: int = 1


def test_a_policy_defined_here_is_used_by_name(ctx):
    """One class in one file plus its registration: the runner calls it once per step but
    the last."""

    @register_policy("count_steps", settings=CountSettings)
    class CountSteps(UpdatePolicy):
        settings: CountSettings

        def start(self, state, ctx) -> None:
            state.info["calls"] = []

        def update(self, state, ctx, t0: int, t1: int) -> dict[str, Any]:
            state.info["calls"].append((t0, t1))
            return {"calls": len(state.info["calls"])}

    try:
        cfg = ReplayConfig(step_days=7, max_steps=2, max_requests=5, parts=("valid",))
        out = replay_part(
            ctx, make_policy("count_steps", {"count_steps": {"every": 2}}), "valid", cfg
        )
        # no update after the last step: nothing later would be served by it
        assert [s["update"]["info"].get("calls") for s in out["steps"]] == [1, None]
        assert out["steps"][-1]["update"]["info"] == {"skipped": "after the last step"}
        assert out["steps"][-1]["update"]["cpu_s"] == 0
        assert out["policy"] == "count_steps({'every': 2})"
    finally:
        POLICIES.remove("count_steps")


def test_latest_per_item_keeps_the_most_recent(ml_split):
    _, cut2 = ml_split.cutoffs
    req = observed_requests(ml_split, cut2, cut2 + 400 * DAY, np.flatnonzero(ml_split.is_new))
    kept = latest_per_item(req, 2)
    counts = np.bincount(kept.target)
    assert counts.max() <= 2
    assert set(kept.target.tolist()) == set(req.target.tolist())


def test_merge_states_with_registered_methods():
    torch.manual_seed(0)
    origin = {"w": torch.randn(4, 4), "step": torch.tensor([3])}
    running = {"w": origin["w"] + 0.1 * torch.randn(4, 4), "step": torch.tensor([3])}
    tuned = {"w": origin["w"] + 0.1 * torch.randn(4, 4), "step": torch.tensor([3])}
    lin0 = merge_states("linear", origin, running, tuned, 0.0)
    lin1 = merge_states("linear", origin, running, tuned, 1.0)
    assert torch.allclose(lin0["w"], running["w"])
    assert torch.allclose(lin1["w"], tuned["w"])
    half = merge_states("task_arithmetic", origin, running, tuned, 0.5)
    assert torch.allclose(half["w"], (running["w"] + tuned["w"]) / 2, atol=1e-6)
    ties = merge_states("ties", origin, running, tuned, 0.5, density=0.5)
    assert ties["w"].shape == (4, 4)
    assert torch.equal(ties["step"], running["step"])
    with pytest.raises(ConfigError, match="unknown merge method"):
        merge_states("nope", origin, running, tuned, 0.5)
