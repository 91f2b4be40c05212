"""`replay`: walk a period in steps; at each step score the step's requests with the deployed
model through `Session.recommend` (default mode "fresh"), then let the update policy use the
step's interactions (except after the last step, whose update no request would see), and
record quality and update cost.

Protocol (docs/REPLAY.md): each part (validation, test) starts from the trained checkpoint.
When the part starts after the model's training cut-off (the test period), the policy first
catches up on the gap as one update (`catchup`, reported apart from the per-step cost). At a
step [t0, t1): items first seen before t0 are listed (recommendable); items first seen before
t1 have SIDs (histories may hold them); a request whose target first appears inside the step
cannot be hit by any policy (counted in `unlisted`). Hits are exact items (full SIDs); warm /
cold is the evaluation's definition (cold = the target has no training-period interaction).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from freshrec.errors import ConfigError
from freshrec.evaluate.metrics import compute_metrics
from freshrec.model.checkpoint import load_checkpoint
from freshrec.recommend.session import Session
from freshrec.replay.cost import Cost, CostMeter
from freshrec.replay.policies.base import UpdatePolicy
from freshrec.replay.state import ReplayContext, ReplayState, check_context
from freshrec.replay.timeline import (
    Part,
    Step,
    check_time_split,
    request_times,
    steps,
    window_requests,
)


class ReplayConfig(BaseModel):
    """How a period is walked. step_days: step width in days of the data's time;
    max_steps: only the first steps of each part (None = the whole period); max_requests: a
    seeded sample of at most this many requests scored per step (None = all); align: with
    max_steps, walk the first ("start") or the last ("end") steps of each period (the policy
    catches up on the time before them as one update); top_k: list length scored (R@20
    needs 20); mode: the `Session.recommend` mode."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step_days: float = Field(1.0, gt=0)
    parts: tuple[Part, ...] = ("valid", "test")
    max_steps: int | None = Field(None, ge=1)
    max_requests: int | None = Field(None, ge=1)
    align: Literal["start", "end"] = "start"
    top_k: int = Field(20, ge=20)
    mode: str = "fresh"
    seed: int = 0


def initial_state(ctx: ReplayContext) -> ReplayState:
    """The trained checkpoint, SIDs of the training-period items, trained until the cut-off."""
    cut1, _ = check_time_split(ctx.split)
    model = load_checkpoint(ctx.checkpoint, expect_fingerprint=ctx.fingerprint).eval()
    trained = ~np.asarray(ctx.split.is_new, dtype=bool)
    return ReplayState(
        model=model,
        base_dir=ctx.checkpoint,
        table=ctx.warm_table,
        trained=trained,
        trained_until=cut1,
    )


def score_step(
    state: ReplayState, ctx: ReplayContext, cfg: ReplayConfig, step: Step, requests: Any
) -> dict[str, Any]:
    """R@20 / N@10 (overall, warm, cold) of the step's requests with the deployed model."""
    split = ctx.split
    catalog = state.catalog(ctx, step.t0)
    out: dict[str, Any] = {"n_listed": catalog.size("full"), "n_new_listed": catalog.size("new")}
    n = len(requests)
    out["n"] = n
    if n == 0:
        return out
    session = Session(
        state.model,
        catalog,
        edit_stack=state.stack,
        split=split,
        beam_size=ctx.beam_size,
        batch_size=ctx.batch_size,
        fresh=ctx.fresh,
        prompt_new_items=ctx.prompt_new_items,
    )
    hist = split.histories(requests, state.model.config.max_history)
    recs = session.recommend(hist, cfg.top_k, cfg.mode, users=np.asarray(requests.user))
    m = compute_metrics(recs.items, requests.target, requests.cold, split.is_new, ks=(10, 20))
    for sub in ("overall", "warm", "cold"):
        s = m.subset(sub)
        out[f"{sub}_n"] = s.n
        out[f"{sub}_recall20"] = s.recall[20] if s.n else None
        out[f"{sub}_ndcg10"] = s.ndcg[10] if s.n else None
    out["unlisted"] = int((~catalog.recommendable[requests.target]).sum())
    out["new_share20"] = float(recs.is_new[:, :20].mean())
    return out


def _cost_dict(cost: Cost) -> dict[str, float]:
    return {"cpu_s": cost.cpu_s, "wall_s": cost.wall_s, "peak_mb": cost.peak_mb}


def replay_part(
    ctx: ReplayContext,
    policy: UpdatePolicy,
    part: Part,
    cfg: ReplayConfig,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Replay one part with `policy`: {"part", "policy", "steps": [step records], "catchup",
    "summary"} (see `summarise`). The policy works in a fresh scratch folder under
    `ctx.work` (removed afterwards), so one-time costs such as GenRecEdit's preservation
    statistics are paid, and counted, in every replay."""
    check_context(ctx)
    scratch = Path(tempfile.mkdtemp(prefix=f"{part}-", dir=_mkdir(ctx.work)))
    try:
        return _replay_part(dataclasses.replace(ctx, work=scratch), policy, part, cfg, progress)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _replay_part(
    ctx: ReplayContext,
    policy: UpdatePolicy,
    part: Part,
    cfg: ReplayConfig,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    state = initial_state(ctx)
    requests = getattr(ctx.split, part)
    times = request_times(ctx.split, requests)
    walk = steps(ctx.split, part, cfg.step_days, cfg.max_steps, cfg.align)
    policy.start(state, ctx)
    catchup: dict[str, Any] = {"cpu_s": 0.0, "wall_s": 0.0, "peak_mb": 0.0, "info": {}}
    if walk and walk[0].t0 > state.trained_until:
        state.grow_table(ctx, walk[0].t0)
        with CostMeter() as meter:
            info = policy.update(state, ctx, state.trained_until, walk[0].t0)
        catchup = {**_cost_dict(meter.cost), "info": info}
    records = []
    for k, step in enumerate(walk):
        state.grow_table(ctx, step.t1)
        reqs = window_requests(
            ctx.split, requests, times, step.t0, step.t1, cfg.max_requests, cfg.seed
        )
        with CostMeter() as scoring:
            rec = score_step(state, ctx, cfg, step, reqs)
        rec.update(index=step.index, t0=step.t0, t1=step.t1, score_cpu_s=scoring.cost.cpu_s)
        if k < len(walk) - 1:
            with CostMeter() as meter:
                info = policy.update(state, ctx, step.t0, step.t1)
            rec["update"] = {**_cost_dict(meter.cost), "info": info}
        else:  # no later request would be served by it: not run, not charged
            rec["update"] = {**_cost_dict(Cost()), "info": {"skipped": "after the last step"}}
        records.append(rec)
        if progress is not None:
            r = rec.get("overall_recall20")
            progress(
                f"{policy.name} {part} step {k + 1}/{len(walk)} "
                f"(day {step.index * cfg.step_days:g}): {rec['n']} requests, "
                f"R@20 {'-' if r is None else f'{r:.3f}'}, "
                f"update {rec['update']['cpu_s']:.1f} cpu-s"
            )
    state.drop_edits()
    return {
        "part": part,
        "policy": policy.describe(),
        "steps": records,
        "catchup": catchup,
        "summary": summarise(records, catchup),
    }


def _pooled(records: list[dict[str, Any]], sub: str, metric: str) -> float | None:
    n = np.array([r.get(f"{sub}_n", 0) for r in records], dtype=np.float64)
    v = np.array([r.get(f"{sub}_{metric}") or 0.0 for r in records], dtype=np.float64)
    return float((n * v).sum() / n.sum()) if n.sum() else None


def summarise(records: list[dict[str, Any]], catchup: dict[str, Any]) -> dict[str, Any]:
    """mean_* = the metric over every scored request of the part (each step's requests scored
    by the model deployed at that step); step_mean_recall20 = unweighted mean over steps with
    requests; update_* = summed over steps (catch-up apart); peak_mem_mb = max over updates."""
    scored = [r for r in records if r["n"]]
    ups = [r["update"] for r in records]
    return {
        "n_steps": len(records),
        "n_scored_steps": len(scored),
        "n_requests": int(sum(r["n"] for r in records)),
        "mean_recall20": _pooled(scored, "overall", "recall20"),
        "mean_warm_recall20": _pooled(scored, "warm", "recall20"),
        "mean_cold_recall20": _pooled(scored, "cold", "recall20"),
        "mean_ndcg10": _pooled(scored, "overall", "ndcg10"),
        "mean_warm_ndcg10": _pooled(scored, "warm", "ndcg10"),
        "mean_cold_ndcg10": _pooled(scored, "cold", "ndcg10"),
        "step_mean_recall20": (
            float(np.mean([r["overall_recall20"] for r in scored])) if scored else None
        ),
        "unlisted_targets": int(sum(r.get("unlisted", 0) for r in scored)),
        "update_cpu_seconds": float(sum(u["cpu_s"] for u in ups)),
        "update_wall_seconds": float(sum(u["wall_s"] for u in ups)),
        "peak_mem_mb": float(max([u["peak_mb"] for u in ups] + [catchup["peak_mb"]])),
        "catchup_cpu_seconds": float(catchup["cpu_s"]),
        "score_cpu_seconds": float(sum(r["score_cpu_s"] for r in records)),
    }


def replay(
    ctx: ReplayContext,
    policy: UpdatePolicy,
    cfg: ReplayConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Replay every part of `cfg.parts` with `policy`: {"policy", "config", "parts": {part:
    replay_part(...)}}."""
    cfg = cfg or ReplayConfig()
    if not cfg.parts:
        raise ConfigError("replay needs at least one part (valid, test)")
    parts = {part: replay_part(ctx, policy, part, cfg, progress) for part in cfg.parts}
    return {"policy": policy.describe(), "config": cfg.model_dump(mode="json"), "parts": parts}
