"""Weighted contextual merging, validation-chosen weights and the recency statistic."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from freshrec.errors import CheckpointError, ConfigError, UnknownItemError
from freshrec.merge import (
    choose_weight,
    contextual_merge,
    contextual_recipe,
    first_seen_times,
    merge_checkpoints,
    recency_share,
)
from freshrec.merge.contextual import NEVER_SEEN

F64 = torch.float64
IDS = torch.tensor([0, 1], dtype=torch.int64)
OLDER = {"w": torch.tensor([1.0, 2.0, 3.0], dtype=F64), "ids": IDS}
NEWER = {"w": torch.tensor([3.0, 6.0, -1.0], dtype=F64), "ids": IDS}
BASE = {"w": torch.tensor([1.0, 1.0, 1.0], dtype=F64), "ids": IDS}


def test_linear_blend_by_hand() -> None:
    out = contextual_merge(OLDER, NEWER, 0.25)
    # 0.75 * [1, 2, 3] + 0.25 * [3, 6, -1] = [1.5, 3, 2]
    assert torch.equal(out["w"], torch.tensor([1.5, 3.0, 2.0], dtype=F64))
    assert torch.equal(out["ids"], IDS)
    assert torch.equal(contextual_merge(OLDER, NEWER, 0.0)["w"], OLDER["w"])
    assert torch.equal(contextual_merge(OLDER, NEWER, 1.0)["w"], NEWER["w"])


def test_task_arithmetic_blend_against_base_by_hand() -> None:
    # tau_old = [0, 1, 2], tau_new = [2, 5, -2]; 0.75 tau_old + 0.25 tau_new = [0.5, 2, 1]
    out = contextual_merge(OLDER, NEWER, 0.25, base=BASE, lam=2.0)
    assert torch.equal(out["w"], torch.tensor([2.0, 5.0, 3.0], dtype=F64))  # base + 2 * [...]
    # lambda 1: the base cancels and the blend equals the linear one
    out = contextual_merge(OLDER, NEWER, 0.25, base=BASE, lam=1.0)
    assert torch.allclose(out["w"], contextual_merge(OLDER, NEWER, 0.25)["w"])


def test_contextual_merge_refuses_bad_inputs() -> None:
    with pytest.raises(ConfigError, match=r"must be in \[0, 1\], got 1.5"):
        contextual_merge(OLDER, NEWER, 1.5)
    with pytest.raises(CheckpointError, match="key 'ids' is not in both older and newer"):
        contextual_merge(OLDER, {"w": NEWER["w"]}, 0.5)
    with pytest.raises(CheckpointError, match=r"key 'w' has shape \[2\] in newer"):
        contextual_merge(OLDER, {"w": torch.zeros(2, dtype=F64), "ids": IDS}, 0.5)
    with pytest.raises(CheckpointError, match="non-float tensor 'ids' differs"):
        contextual_merge(OLDER, {"w": NEWER["w"], "ids": IDS.flip(0)}, 0.5)


def test_choose_weight_finds_best_blend_on_real_tensors(
    make_state: Callable[..., dict[str, torch.Tensor]],
) -> None:
    older = make_state(1)
    newer = make_state(2, base=older, scale=0.5)
    # Deterministic "validation score": closeness to a held-out blend at 0.7 on the newer model.
    target = {k: 0.3 * older[k] + 0.7 * newer[k] for k in older if older[k].is_floating_point()}

    def score(sd: dict[str, torch.Tensor]) -> float:
        return -sum(float(((sd[k] - target[k]) ** 2).sum()) for k in target)

    candidates = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    best, scores = choose_weight(candidates, score, older=older, newer=newer)
    assert best == 0.7
    assert len(scores) == len(candidates)
    assert scores[7] == max(scores)
    assert scores[7] > -1e-6
    assert scores[:8] == sorted(scores[:8])  # improves up to 0.7, then worsens
    assert scores[7:] == sorted(scores[7:], reverse=True)
    best, _ = choose_weight(candidates, score, older=older, newer=newer, higher_is_better=False)
    assert best in (0.0, 1.0)  # furthest from the target


def test_choose_weight_ties_and_errors() -> None:
    best, scores = choose_weight([0.2, 0.5, 0.8], lambda sd: 1.0, older=OLDER, newer=NEWER)
    assert (best, scores) == (0.2, [1.0, 1.0, 1.0])  # first candidate wins ties
    with pytest.raises(ConfigError, match="no candidate weights"):
        choose_weight([], lambda sd: 1.0, older=OLDER, newer=NEWER)
    with pytest.raises(ConfigError, match=r"score_fn returned nan for weight 0\.5"):
        choose_weight([0.5], lambda sd: math.nan, older=OLDER, newer=NEWER)
    with pytest.raises(ConfigError, match=r"must be in \[0, 1\]"):
        choose_weight([-0.1], lambda sd: 1.0, older=OLDER, newer=NEWER)


@pytest.mark.parametrize("with_base", [False, True])
def test_contextual_recipe_on_disk_matches_in_memory(
    write_ckpt: Callable[..., Path],
    make_state: Callable[..., Any],
    tmp_path: Path,
    with_base: bool,
) -> None:
    base = make_state(0)
    older = make_state(1, base=base)
    newer = make_state(2, base=older)
    paths = {n: write_ckpt(n, sd) for n, sd in {"b": base, "o": older, "n": newer}.items()}
    recipe = contextual_recipe(
        paths["o"], paths["n"], 0.6, base=paths["b"] if with_base else None, lam=0.9
    )
    assert recipe.merge_method == ("task_arithmetic" if with_base else "linear")
    merge_checkpoints(recipe, tmp_path / "merged", progress=False)
    on_disk = load_file(tmp_path / "merged" / "model.safetensors")
    ref = contextual_merge(older, newer, 0.6, base=base if with_base else None, lam=0.9)
    assert on_disk.keys() == ref.keys()
    for key in ref:
        assert torch.equal(on_disk[key], ref[key]), key


def test_contextual_recipe_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"contextual_recipe: models\[0\]\.model: checkpoint"):
        contextual_recipe(tmp_path / "nope", tmp_path, 0.5)


def test_first_seen_times_by_hand() -> None:
    out = first_seen_times(np.array([2, 0, 2, 1]), np.array([50, 10, 30, 40]), n_items=4)
    assert out.tolist() == [10, 40, 30, NEVER_SEEN]
    with pytest.raises(UnknownItemError, match=r"item id 7 is outside \[0, 4\)"):
        first_seen_times(np.array([7]), np.array([1]), n_items=4)


def test_recency_share_by_hand() -> None:
    first_seen = np.array([0, 100, 200, 1000])
    items = np.array([0, 1, 2, 3, 1])
    ts = np.array([500, 150, 260, 1000, 400])
    # item age at interaction: 500, 50, 60, 0, 300 -> within 100: 3 of 5
    assert recency_share(items, ts, first_seen, window=100) == pytest.approx(0.6)
    # relative to a reference time 250: items first seen at >= 150 are recent (items 2, 3)
    assert recency_share(items, ts, first_seen, window=100, reference=250) == pytest.approx(0.4)
    # never-seen items are new, hence recent; no overflow on the sentinel
    fs = np.array([0, NEVER_SEEN])
    assert recency_share(np.array([0, 1]), np.array([10, 10]), fs, window=5) == 0.5


def test_recency_share_edge_cases() -> None:
    assert math.isnan(recency_share(np.array([], dtype=int), np.array([]), np.array([0]), 10))
    with pytest.raises(UnknownItemError, match="item id 3 has no first-seen time"):
        recency_share(np.array([3]), np.array([1]), np.array([0, 0]), 10)
    with pytest.raises(ValueError, match="differ in shape"):
        recency_share(np.array([0, 1]), np.array([1]), np.array([0, 0]), 10)
