"""`merge`: every `every_days`, fine-tune a copy of the running model on the latest window and
merge it with the running model (a method from `freshrec.merge.MERGE_METHODS`: linear =
weighted contextual merging, ties, task_arithmetic, ...; task-vector methods take the trained
checkpoint as their base). The copy's weight is chosen among `weights` by R@20 on the real
requests of the window's last `select_days`, which the copy is not trained on (no future data,
no in-sample choice).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from freshrec.evaluate.metrics import compute_metrics
from freshrec.merge.methods import MERGE_METHODS, MergeArgs
from freshrec.model.base import GenerativeRecommender
from freshrec.recommend.session import Session
from freshrec.replay.policies.base import UpdatePolicy, register_policy
from freshrec.replay.policies.finetune import FineTuneSettings, tune_on_window
from freshrec.replay.state import ReplayContext, ReplayState
from freshrec.replay.timeline import DAY, observed_requests, window_items

StateDict = dict[str, torch.Tensor]


class MergeSettings(BaseModel):
    """every_days: days between merges; window_days: the latest window the copy learns from
    (its last `select_days` held out to choose the weight); tune: the copy's fine-tuning;
    method: a merge method name; weights: candidate weights of the copy (the running model
    gets 1 - w); density / lam: TIES/DARE density and task-vector scale; default_weight:
    used when the held-out days have fewer than `min_requests` requests; max_requests: a
    seeded sample of the held-out requests scored per candidate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every_days: float = Field(28.0, gt=0)
    window_days: float = Field(28.0, gt=0)
    select_days: float = Field(7.0, gt=0)
    tune: FineTuneSettings = FineTuneSettings(max_steps=100, passes=2.0)
    method: str = "linear"
    weights: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    density: float = Field(1.0, gt=0, le=1)
    lam: float = Field(1.0, gt=0)
    default_weight: float = Field(0.5, ge=0, le=1)
    min_requests: int = Field(20, ge=1)
    max_requests: int = Field(200, ge=1)


def merge_states(
    method_name: str,
    origin: StateDict,
    running: StateDict,
    tuned: StateDict,
    weight: float,
    density: float = 1.0,
    lam: float = 1.0,
    seed: int = 0,
) -> StateDict:
    """`running` and `tuned` merged key by key with `method_name` (weights 1 - weight, weight);
    task-vector methods take `origin` as base. Non-float tensors are copied from `running`."""
    method = MERGE_METHODS.get(method_name)
    out: StateDict = {}
    for key, a in running.items():
        if not a.is_floating_point():
            out[key] = a.clone()
            continue
        args = MergeArgs(
            key,
            [1.0 - weight, weight],
            [density, density] if method.uses_density else [1.0, 1.0],
            lam=lam,
            normalize=method.default_normalize,
            seed=seed,
        )
        base = origin[key] if method.needs_base else None
        out[key] = method.merge(base, [a, tuned[key]], args).to(a.dtype)
    return out


def held_out_recall(
    model: GenerativeRecommender,
    state: ReplayState,
    ctx: ReplayContext,
    t0: float,
    t1: float,
    cap: int = 200,
) -> tuple[float, int]:
    """(R@20, n) of `model` on the real requests in [t0, t1) (a seeded sample of at most
    `cap`), fresh mode, over the items listed at t0."""
    split = ctx.split
    req = observed_requests(split, t0, t1, np.arange(split.dataset.n_items))
    if len(req) > cap:
        pick = np.random.default_rng([ctx.seed, int(t0)]).choice(len(req), cap, replace=False)
        req = req.subset(np.sort(pick))
    if len(req) == 0:
        return float("nan"), 0
    session = Session(
        model,
        state.catalog(ctx, int(t0)),
        split=split,
        beam_size=ctx.beam_size,
        batch_size=ctx.batch_size,
        fresh=ctx.fresh,
        prompt_new_items=ctx.prompt_new_items,
    )
    hist = split.histories(req, model.config.max_history)
    recs = session.recommend(hist, 20, users=np.asarray(req.user))
    cold = split.is_new[np.asarray(req.target)]
    m = compute_metrics(recs.items, req.target, cold, split.is_new, ks=(20,))
    return m.overall.recall[20], len(req)


@register_policy("merge", settings=MergeSettings)
class Merge(UpdatePolicy):
    settings: MergeSettings

    def start(self, state: ReplayState, ctx: ReplayContext) -> None:
        state.info["merge"] = {
            "merged_at": state.trained_until,
            "origin": {k: v.detach().clone() for k, v in state.model.state_dict().items()},
        }

    def update(self, state: ReplayState, ctx: ReplayContext, t0: int, t1: int) -> dict[str, Any]:
        s, info = self.settings, state.info["merge"]
        if t1 - info["merged_at"] < s.every_days * DAY:
            return {}
        info["merged_at"] = t1
        state.drop_edits()  # they are made on the old weights; copies must not carry their hooks
        fit_end = t1 - s.select_days * DAY
        fit_start = t1 - s.window_days * DAY
        if fit_end <= fit_start:
            fit_end = t1
        tuned = copy.deepcopy(state.model)
        fit = tune_on_window(tuned, state, ctx, s.tune, fit_start, fit_end, seed=t1)
        if not fit["steps"]:
            return {"merged": 0}
        running = {k: v.detach().clone() for k, v in state.model.state_dict().items()}
        tuned_sd = tuned.state_dict()
        scratch = copy.deepcopy(state.model)
        scores = []
        args = (s.method, info["origin"], running, tuned_sd)
        for w in s.weights:
            scratch.load_state_dict(merge_states(*args, w, s.density, s.lam, ctx.seed))
            scores.append(held_out_recall(scratch.eval(), state, ctx, fit_end, t1, s.max_requests))
        n = max(n for _, n in scores)
        if n >= s.min_requests:
            weight = float(s.weights[int(np.nanargmax([r for r, _ in scores]))])
        else:
            weight = s.default_weight
        scratch.load_state_dict(merge_states(*args, weight, s.density, s.lam, ctx.seed))
        seen = window_items(ctx.split, fit_start, fit_end) if s.tune.mark_trained else None
        state.set_weights(scratch, ctx, trained=seen, until=int(fit_end))
        return {"merged": 1, "weight": weight, "select_requests": n, "rows": fit["rows"]}
