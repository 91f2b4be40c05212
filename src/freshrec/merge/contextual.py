"""Weighted contextual merging (MMGRid): blend an older and a newer checkpoint for a context.

`weight` is always the weight of the **newer** model (the older one gets `1 - weight`). It is
either given or chosen on validation data by `choose_weight`, and reported against a statistic
of the target context such as `recency_share` (share of interactions on recently new items).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from freshrec.errors import CheckpointError, ConfigError, UnknownItemError
from freshrec.merge.methods import MERGE_METHODS, MergeArgs
from freshrec.merge.recipe import MergeRecipe, parse_recipe

__all__ = [
    "NEVER_SEEN",
    "StateDict",
    "choose_weight",
    "contextual_merge",
    "contextual_recipe",
    "first_seen_times",
    "recency_share",
]

StateDict = Mapping[str, Tensor]
NEVER_SEEN = np.iinfo(np.int64).max


def _check_weight(weight: float) -> float:
    weight = float(weight)
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"contextual weight (of the newer model) must be in [0, 1], got {weight}")
    return weight


def contextual_merge(
    older: StateDict,
    newer: StateDict,
    weight: float,
    base: StateDict | None = None,
    lam: float = 1.0,
) -> dict[str, Tensor]:
    """Blend two state dicts, `weight` on `newer`, `1 - weight` on `older`.

    Without `base`: the `linear` method, `(1 - w) * older + w * newer`. With `base`: the
    `task_arithmetic` method, `base + lam * ((1 - w) * (older - base) + w * (newer - base))`,
    which equals the linear blend when `lam == 1`; `lam != 1` scales the blended task vector
    away from/towards `base`.
    Non-float tensors must be equal and are copied from `older`. Output dtypes follow `older`.
    """
    w = _check_weight(weight)
    states = {"older": older, "newer": newer} | ({"base": base} if base is not None else {})
    keys = set(older)
    for name, sd in states.items():
        if set(sd) != keys:
            diff = sorted(keys.symmetric_difference(sd))
            raise CheckpointError(f"key '{diff[0]}' is not in both older and {name}")
    method = MERGE_METHODS.get("linear" if base is None else "task_arithmetic")
    out: dict[str, Tensor] = {}
    for key in sorted(keys):
        a, b = older[key], newer[key]
        for name, sd in states.items():
            if sd[key].shape != a.shape:
                raise CheckpointError(
                    f"key '{key}' has shape {list(sd[key].shape)} in {name} but "
                    f"{list(a.shape)} in older"
                )
        if not a.is_floating_point():
            if not all(torch.equal(sd[key], a) for sd in states.values()):
                raise CheckpointError(f"non-float tensor '{key}' differs between the inputs")
            out[key] = a
            continue
        args = MergeArgs(key, [1.0 - w, w], [1.0, 1.0], lam=lam, normalize=False)
        merged = method.merge(None if base is None else base[key], [a, b], args)
        out[key] = merged.to(a.dtype)
    return out


def contextual_recipe(
    older: str | Path,
    newer: str | Path,
    weight: float,
    base: str | Path | None = None,
    lam: float = 1.0,
) -> MergeRecipe:
    """The same blend of two checkpoint folders as a `MergeRecipe` for `merge_checkpoints`."""
    w = _check_weight(weight)
    return parse_recipe(
        {
            "merge_method": "linear" if base is None else "task_arithmetic",
            "base_model": None if base is None else str(base),
            "models": [
                {"model": str(older), "parameters": {"weight": 1.0 - w}},
                {"model": str(newer), "parameters": {"weight": w}},
            ],
            "parameters": {"lambda": lam, "normalize": False},
        },
        source="contextual_recipe",
    )


def choose_weight(
    candidates: Sequence[float],
    score_fn: Callable[[dict[str, Tensor]], float],
    *,
    older: StateDict,
    newer: StateDict,
    base: StateDict | None = None,
    lam: float = 1.0,
    higher_is_better: bool = True,
) -> tuple[float, list[float]]:
    """Score `contextual_merge(older, newer, w, base, lam)` for each candidate `w` on validation.

    `score_fn(state_dict) -> float` (e.g. valid NDCG@10 of the merged model). Returns the best
    weight (the first one on ties) and the scores aligned with `candidates`.
    """
    if len(candidates) == 0:
        raise ConfigError("choose_weight: no candidate weights given")
    scores: list[float] = []
    for w in candidates:
        score = float(score_fn(contextual_merge(older, newer, w, base=base, lam=lam)))
        if not math.isfinite(score):
            raise ConfigError(f"choose_weight: score_fn returned {score} for weight {w}")
        scores.append(score)
    pick = np.argmax(scores) if higher_is_better else np.argmin(scores)
    return float(candidates[int(pick)]), scores


def first_seen_times(item_ids: np.ndarray, ts: np.ndarray, n_items: int) -> np.ndarray:
    """int64[n_items]: earliest `ts` of each item in a log; `NEVER_SEEN` for items absent."""
    item_ids, ts = np.asarray(item_ids), np.asarray(ts, dtype=np.int64)
    if item_ids.shape != ts.shape:
        raise ValueError(f"item_ids {item_ids.shape} and ts {ts.shape} differ in shape")
    if item_ids.size and (item_ids.min() < 0 or item_ids.max() >= n_items):
        bad = item_ids[(item_ids < 0) | (item_ids >= n_items)][0]
        raise UnknownItemError(f"item id {bad} is outside [0, {n_items})")
    out = np.full(n_items, NEVER_SEEN, dtype=np.int64)
    np.minimum.at(out, item_ids, ts)
    return out


def recency_share(
    item_ids: np.ndarray,
    ts: np.ndarray,
    first_seen: np.ndarray,
    window: float,
    reference: float | None = None,
) -> float:
    """Share of a target context's interactions whose item is recent.

    `item_ids`, `ts`: int[n] interactions of the context; `first_seen`: int[n_items] first-seen
    time of every item (`NEVER_SEEN` / later than the interaction counts as new, i.e. recent).
    An interaction counts if its item was first seen at most `window` before it
    (`ts - first_seen[item] <= window`), or, with `reference` (e.g. the context's start), if
    `first_seen[item] >= reference - window`. Returns a float in [0, 1] (nan for no interactions).
    """
    item_ids = np.asarray(item_ids)
    ts = np.asarray(ts, dtype=np.int64)
    first_seen = np.asarray(first_seen, dtype=np.int64)
    if item_ids.shape != ts.shape:
        raise ValueError(f"item_ids {item_ids.shape} and ts {ts.shape} differ in shape")
    if item_ids.size == 0:
        return float("nan")
    if item_ids.min() < 0 or item_ids.max() >= len(first_seen):
        bad = item_ids[(item_ids < 0) | (item_ids >= len(first_seen))][0]
        raise UnknownItemError(
            f"item id {bad} has no first-seen time (first_seen has {len(first_seen)} entries)"
        )
    # Compare first_seen >= t - window (not t - first_seen <= window): no overflow on NEVER_SEEN.
    cutoff = ts - window if reference is None else reference - window
    recent = first_seen[item_ids] >= cutoff
    return float(np.mean(recent))
