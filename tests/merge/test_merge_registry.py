"""The merge-method registry: a method defined here (one class + one registration line) is
usable by name in recipes and in the streaming merge; unknown and duplicate names are refused."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

from freshrec.errors import ConfigError
from freshrec.merge import kernels
from freshrec.merge.methods import MERGE_METHODS, MergeArgs, MergeMethod, Ties
from freshrec.merge.recipe import MergeRecipe, parse_recipe
from freshrec.merge.streaming import merge_checkpoints, merge_in_memory

WriteCkpt = Callable[..., Path]


class ElementwiseMax(MergeMethod):
    """Test method: the entry-wise largest task vector entry, added to the base."""

    needs_base = True

    def check(self, recipe: MergeRecipe) -> None:
        if len(recipe.models) < 2:
            raise ValueError("models: max needs at least two models")

    def merge(self, base: Tensor | None, tensors: Sequence[Tensor], args: MergeArgs) -> Tensor:
        assert base is not None
        tau = kernels.task_vectors(base, tensors)
        return base.to(tau.dtype) + args.lam * tau.amax(0)


@pytest.fixture
def registered() -> Iterator[None]:
    """`elementwise_max` and `ties_linear` (TIES trim, no sign election) for one test."""
    MERGE_METHODS.add("elementwise_max", ElementwiseMax())
    MERGE_METHODS.add(
        "ties_linear", Ties("magnitude", sign_election=False, default_normalize=False)
    )
    yield
    MERGE_METHODS.remove("elementwise_max")
    MERGE_METHODS.remove("ties_linear")


@pytest.fixture
def ckpts(write_ckpt: WriteCkpt, make_state: Callable[..., Any]) -> dict[str, Path]:
    base = make_state(0)
    states = {"base": base, "a": make_state(1, base=base), "b": make_state(2, base=base)}
    return {name: write_ckpt(name, sd) for name, sd in states.items()}


def recipe(ckpts: dict[str, Path], method: str, **params: Any) -> dict[str, Any]:
    return {
        "merge_method": method,
        "base_model": str(ckpts["base"]),
        "models": [{"model": str(ckpts["a"])}, {"model": str(ckpts["b"])}],
        "parameters": params,
    }


def test_builtin_names_in_order() -> None:
    builtin = ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties")
    assert tuple(n for n in MERGE_METHODS.names() if n in builtin) == builtin
    ties, dare_ties = MERGE_METHODS.get("ties"), MERGE_METHODS.get("dare_ties")
    assert type(ties) is type(dare_ties) is Ties  # TIES and DARE: settings of one class
    assert (ties.sparsify, dare_ties.sparsify) == ("magnitude", "random")


@pytest.mark.usefixtures("registered")
def test_registered_method_merges_by_name(ckpts: dict[str, Path], tmp_path: Path) -> None:
    r = parse_recipe(recipe(ckpts, "elementwise_max", **{"lambda": 0.5}))
    assert isinstance(r.method, ElementwiseMax)
    assert r.normalize is False  # the base class default
    report = merge_checkpoints(r, tmp_path / "out", progress=False)
    assert report.method == "elementwise_max"
    out = load_file(tmp_path / "out" / "model.safetensors")
    base, a, b = (load_file(ckpts[n] / "model.safetensors") for n in ("base", "a", "b"))
    key = "shared.weight"
    expected = base[key] + 0.5 * torch.maximum(a[key] - base[key], b[key] - base[key])
    assert torch.allclose(out[key], expected)
    assert torch.equal(out["position_ids"], base["position_ids"])  # non-float: copied
    reference = merge_in_memory(r)
    assert all(torch.equal(out[k], reference[k]) for k in reference)


@pytest.mark.usefixtures("registered")
def test_method_rules_apply_to_registered_methods(ckpts: dict[str, Path]) -> None:
    data = recipe(ckpts, "elementwise_max")
    data["models"] = data["models"][:1]
    with pytest.raises(ConfigError, match=r"models: max needs at least two models"):
        parse_recipe(data)
    del data["base_model"]
    with pytest.raises(ConfigError, match=r"base_model: required for merge_method 'elementwise"):
        parse_recipe(data)
    # density: accepted by the new Ties setting, refused by the dense method
    assert parse_recipe(recipe(ckpts, "ties_linear", density=0.5)).densities() == [0.5, 0.5]
    with pytest.raises(ConfigError, match=r"density applies only to .*ties_linear"):
        parse_recipe(recipe(ckpts, "elementwise_max", density=0.5))


@pytest.mark.usefixtures("registered")
def test_new_ties_setting_is_trim_plus_weighted_sum(ckpts: dict[str, Path]) -> None:
    merged = merge_in_memory(parse_recipe(recipe(ckpts, "ties_linear", density=0.3)))
    base, a, b = (load_file(ckpts[n] / "model.safetensors") for n in ("base", "a", "b"))
    key = "encoder.layers.0.linear1.weight"
    tau = kernels.trim_topk(torch.stack([a[key] - base[key], b[key] - base[key]]), 0.3)
    assert torch.allclose(merged[key], base[key] + tau.sum(0))


def test_unknown_method_is_a_config_error_listing_known_ones(ckpts: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"merge_method: unknown method 'slerp'") as info:
        parse_recipe(recipe(ckpts, "slerp"))
    assert ", ".join(MERGE_METHODS.names()) in str(info.value)
    with pytest.raises(ConfigError, match=r"unknown merge method 'slerp'; expected one of: linear"):
        MERGE_METHODS.get("slerp")


def test_duplicate_name_refused() -> None:
    with pytest.raises(ConfigError, match=r"merge method 'ties' is already registered"):
        MERGE_METHODS.add("ties", ElementwiseMax())
    assert isinstance(MERGE_METHODS.get("ties"), Ties)
