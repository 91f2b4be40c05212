"""Recipe parsing and validation: every rule has a test asserting its message."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from freshrec.errors import ConfigError
from freshrec.merge.methods import MERGE_METHODS
from freshrec.merge.recipe import MergeRecipe, load_recipe

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """tmp/recipes/ holds recipes; tmp/ck/{base,a,b} are (empty) checkpoint folders."""
    for name in ("base", "a", "b"):
        (tmp_path / "ck" / name).mkdir(parents=True)
    (tmp_path / "recipes").mkdir()
    return tmp_path


def write(folder: Path, recipe: Any, name: str = "r.yaml") -> Path:
    path = folder / "recipes" / name
    path.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe))
    return path


def recipe(method: str = "ties", **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "merge_method": method,
        "base_model": "../ck/base",
        "models": [
            {"model": "../ck/a", "parameters": {"weight": 0.5}},
            {"model": "../ck/b", "parameters": {"weight": 0.5}},
        ],
    }
    out.update(kw)
    return out


def raises(folder: Path, data: Any, pattern: str) -> str:
    path = write(folder, data)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(str(path)), message  # names the file
    return message


def test_valid_recipe_resolves_relative_paths_against_recipe_folder(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(folder, recipe(models=[{"model": "../ck/a"}, {"model": "../ck/b"}]))
    monkeypatch.chdir(folder / "ck")  # somewhere else entirely
    r = load_recipe(os.path.relpath(path))
    assert r.base_model == (folder / "ck" / "base").resolve()
    assert r.model_paths() == [(folder / "ck" / n).resolve() for n in ("a", "b")]
    assert r.weights() == [1.0, 1.0]
    assert r.densities() == [1.0, 1.0]
    assert r.lam == 1.0
    assert r.dtype is None


def test_defaults_follow_mergekit() -> None:
    builtin = ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties")
    assert {n: MERGE_METHODS.get(n).default_normalize for n in builtin} == {
        "linear": True,
        "task_arithmetic": False,
        "ties": True,
        "dare_linear": False,
        "dare_ties": False,
    }


@pytest.mark.parametrize("method", MERGE_METHODS.names())
def test_every_method_parses_with_its_default_normalize(folder: Path, method: str) -> None:
    data = recipe(method)
    if method in ("ties", "dare_linear", "dare_ties"):
        data["parameters"] = {"density": 0.5}
    r = load_recipe(write(folder, data))
    assert r.merge_method == method
    assert r.normalize is (method in ("linear", "ties"))


def test_global_parameters_are_per_model_defaults_and_scale_alias(folder: Path) -> None:
    data = recipe(
        "dare_ties",
        parameters={"scale": 0.7, "density": 0.3, "weight": 2.0, "seed": 5, "normalize": True},
        dtype="bfloat16",
    )
    data["models"][0]["parameters"] = {"density": 0.9}
    r = load_recipe(write(folder, data))
    assert r.lam == 0.7
    assert r.weights() == [2.0, 0.5]
    assert r.densities() == [0.9, 0.3]
    assert r.parameters.seed == 5
    assert r.normalize is True
    assert r.dtype == "bfloat16"
    summary = r.summary()
    assert summary["parameters"]["lambda"] == 0.7
    assert summary["models"][1] == {
        "model": str((folder / "ck" / "b").resolve()),
        "parameters": {"weight": 0.5, "density": 0.3},
    }


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_malformed_yaml_names_line(folder: Path) -> None:
    raises(folder, "merge_method: ties\nmodels: [a\n  b: c\n", r"malformed YAML at line 3")


def test_not_a_mapping(folder: Path) -> None:
    raises(folder, "- a\n- b\n", r"expected a YAML mapping .* got list")


def test_unknown_method_lists_valid_ones(folder: Path) -> None:
    msg = raises(folder, recipe("slerp"), r"merge_method: unknown method 'slerp'")
    assert "expected one of: linear, task_arithmetic, ties, dare_linear, dare_ties" in msg


def test_missing_method_lists_valid_ones(folder: Path) -> None:
    data = recipe()
    del data["merge_method"]
    raises(folder, data, r"merge_method: required field is missing; expected one of: linear")


def test_missing_checkpoint_folder(folder: Path) -> None:
    data = recipe()
    data["models"][1]["model"] = "../ck/zz"
    zz = (folder / "ck" / "zz").resolve()
    msg = raises(folder, data, r"models\[1\]\.model: checkpoint folder not found")
    assert str(zz) in msg
    assert "'../ck/zz' relative to" in msg


def test_missing_base_folder(folder: Path) -> None:
    raises(
        folder,
        recipe(base_model="../ck/nobase"),
        r"base_model: base_model checkpoint folder not found: .*nobase",
    )


@pytest.mark.parametrize("density", [0, -0.1, 1.5])
def test_density_outside_unit_interval(folder: Path, density: float) -> None:
    data = recipe()
    data["models"][0]["parameters"]["density"] = density
    raises(folder, data, rf"models\[0\]\.parameters\.density: must be in \(0, 1\], got {density}")


def test_global_density_outside_unit_interval(folder: Path) -> None:
    raises(folder, recipe(parameters={"density": 2}), r"parameters\.density: must be in \(0, 1\]")


def test_negative_weight(folder: Path) -> None:
    data = recipe()
    data["models"][1]["parameters"]["weight"] = -1
    raises(folder, data, r"models\[1\]\.parameters\.weight: must be a finite number >= 0, got -1")


def test_all_zero_weights(folder: Path) -> None:
    data = recipe("linear")
    for m in data["models"]:
        m["parameters"]["weight"] = 0
    raises(folder, data, r"models: all weights are 0 .*at least one must be > 0")


def test_linear_unnormalised_weights_must_sum_to_one(folder: Path) -> None:
    data = recipe("linear", parameters={"normalize": False})
    data["models"][0]["parameters"]["weight"] = 1.5
    msg = raises(folder, data, r"models: weights sum to 2 with normalize: false for linear")
    assert "set normalize: true or make the weights sum to 1" in msg
    data["models"][0]["parameters"]["weight"] = 0.5  # sums to 1: fine
    assert load_recipe(write(folder, data)).normalize is False


def test_fewer_than_one_model(folder: Path) -> None:
    raises(folder, recipe(models=[]), r"models: at least one model is required")
    data = recipe()
    del data["models"]
    raises(folder, data, r"models: required field is missing; give at least one model")


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare_linear", "dare_ties"])
def test_base_model_required_for_task_vector_methods(folder: Path, method: str) -> None:
    data = recipe(method)
    del data["base_model"]
    raises(folder, data, rf"base_model: required for merge_method '{method}'")


def test_linear_needs_no_base(folder: Path) -> None:
    data = recipe("linear")
    del data["base_model"]
    assert load_recipe(write(folder, data)).base_model is None


def test_density_rejected_for_dense_methods(folder: Path) -> None:
    data = recipe("task_arithmetic")
    data["models"][0]["parameters"]["density"] = 0.5
    raises(
        folder,
        data,
        r"models\[0\]\.parameters\.density: density applies only to dare_linear, dare_ties, "
        r"ties; got 0.5 with 'task_arithmetic'",
    )


def test_global_density_rejected_for_linear(folder: Path) -> None:
    raises(
        folder,
        recipe("linear", parameters={"density": 0.5}),
        r"r\.yaml: parameters\.density: density applies only to dare_linear, dare_ties, ties",
    )


def test_unknown_fields_list_allowed_ones(folder: Path) -> None:
    data = recipe(parameters={"lamda": 2}, foo=1)
    data["models"][0]["parameters"]["wieght"] = 1
    msg = raises(folder, data, r"unknown field")
    assert "foo: unknown field; expected one of: merge_method, base_model" in msg
    assert "parameters.lamda: unknown field; expected one of: lambda, scale" in msg
    assert "models[0].parameters.wieght: unknown field; expected one of: weight, density" in msg


def test_lambda_and_scale_together(folder: Path) -> None:
    raises(
        folder,
        recipe(parameters={"lambda": 1, "scale": 2}),
        r"parameters: give either 'lambda' or its alias 'scale', not both",
    )


def test_unknown_dtype(folder: Path) -> None:
    raises(
        folder,
        recipe(dtype="int8"),
        r"dtype: unknown dtype 'int8'; expected one of: float32, float16, bfloat16",
    )


def test_base_listed_among_models_is_dropped(folder: Path) -> None:
    data = recipe()
    data["models"].insert(0, {"model": "../ck/base"})  # mergekit configs often list the base
    with pytest.warns(UserWarning, match="dropping models entries equal to base_model"):
        r = load_recipe(write(folder, data))
    assert [p.name for p in r.model_paths()] == ["a", "b"]
    data["models"] = [{"model": "../ck/base"}]
    with (
        pytest.warns(UserWarning, match="dropping"),
        pytest.raises(ConfigError, match="other than base_model"),
    ):
        load_recipe(write(folder, data))


def test_direct_construction_validates_too(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folder)
    r = MergeRecipe(merge_method="linear", models=[{"model": "ck/a"}, {"model": "ck/b"}])
    assert r.model_paths()[0] == (folder / "ck" / "a").resolve()
    with pytest.raises(ValueError, match="base_model: required"):
        MergeRecipe(merge_method="ties", models=[{"model": "ck/a"}])


def test_example_recipe_parses(tmp_path: Path) -> None:
    example = REPO / "examples" / "merge" / "ties.yaml"
    copy = tmp_path / "ties.yaml"
    shutil.copy(example, copy)
    data = yaml.safe_load(example.read_text())
    for rel in [data["base_model"]] + [m["model"] for m in data["models"]]:
        (tmp_path / rel).mkdir(parents=True, exist_ok=True)
    r = load_recipe(copy)
    assert r.merge_method == "ties"
    assert r.base_model == (tmp_path / "checkpoints" / "pretrain").resolve()
    assert r.weights() == [0.4, 0.6]
    assert r.densities() == [0.5, 0.5]
    assert re.search(r"# .*base-model replacement", example.read_text())
