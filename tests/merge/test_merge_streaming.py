"""Streaming merge of checkpoint folders: checks, outputs, equality with the in-memory merge."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import freshrec
from freshrec.errors import CheckpointError, ConfigError, TokenizerMismatchError
from freshrec.merge import streaming
from freshrec.merge.recipe import MergeRecipe, parse_recipe
from freshrec.merge.streaming import merge_checkpoints, merge_in_memory

SPARSE = ("ties", "dare_linear", "dare_ties")
WriteCkpt = Callable[..., Path]


@pytest.fixture
def phases(write_ckpt: WriteCkpt, make_state: Callable[..., Any]) -> dict[str, Path]:
    """init -> pretrain -> phase1 -> phase2, each continued from the previous."""
    init = make_state(0)
    pretrain = make_state(1, base=init, scale=0.2)
    phase1 = make_state(2, base=pretrain)
    phase2 = make_state(3, base=phase1)
    states = {"init": init, "pretrain": pretrain, "phase1": phase1, "phase2": phase2}
    return {name: write_ckpt(name, sd) for name, sd in states.items()}


def make_recipe(
    method: str,
    base: Path | None,
    models: list[Path],
    weights: list[float] | None = None,
    density: float | None = None,
    **params: Any,
) -> MergeRecipe:
    weights = weights or [1.0 / len(models)] * len(models)
    entries = []
    for path, w in zip(models, weights, strict=True):
        p: dict[str, float] = {"weight": w}
        if density is not None and method in SPARSE:
            p["density"] = density
        entries.append({"model": str(path), "parameters": p})
    data: dict[str, Any] = {"merge_method": method, "models": entries, "parameters": params}
    if base is not None:
        data["base_model"] = str(base)
    if "dtype" in params:
        data["dtype"] = params.pop("dtype")
    return parse_recipe(data)


def load_dir(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
@pytest.mark.parametrize(
    "method", ["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties"]
)
def test_streaming_equals_in_memory_bit_for_bit(
    phases: dict[str, Path], tmp_path: Path, method: str, dtype: str | None
) -> None:
    base = None if method == "linear" else phases["pretrain"]
    extra = {"dtype": dtype} if dtype else {}
    recipe = make_recipe(
        method,
        base,
        [phases["phase1"], phases["phase2"]],
        weights=[0.3, 0.7],
        density=0.4,
        seed=11,
        **extra,
    )
    report = merge_checkpoints(recipe, tmp_path / "merged", progress=False)
    streamed, reference = load_dir(tmp_path / "merged"), merge_in_memory(recipe)
    assert streamed.keys() == reference.keys() == load_dir(phases["phase1"]).keys()
    for key in reference:
        assert streamed[key].dtype == reference[key].dtype, key
        assert torch.equal(streamed[key], reference[key]), key
    assert report.method == method
    assert report.keys == len(reference)
    assert report.copied_keys == 1  # position_ids
    assert report.merged_keys == len(reference) - 1
    assert report.output_bytes == sum(t.numel() * t.element_size() for t in reference.values())
    assert report.seconds > 0
    assert report.peak_rss_delta_bytes >= 0


def test_streaming_reads_one_key_at_a_time(
    phases: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    real_open = streaming.safe_open

    class Spy:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.inner = real_open(*args, **kwargs)

        def __enter__(self) -> Spy:
            self.handle = self.inner.__enter__()
            return self

        def __exit__(self, *exc: Any) -> None:
            self.inner.__exit__(*exc)

        def keys(self) -> list[str]:
            return self.handle.keys()

        def get_slice(self, key: str) -> Any:
            return self.handle.get_slice(key)

        def get_tensor(self, key: str) -> torch.Tensor:
            reads.append(key)
            return self.handle.get_tensor(key)

    def no_full_load(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("streaming merge must not load whole state dicts")

    monkeypatch.setattr(streaming, "safe_open", Spy)
    monkeypatch.setattr(streaming, "load_file", no_full_load)
    models = [phases["phase1"], phases["phase2"], phases["init"]]
    recipe = make_recipe("ties", phases["pretrain"], models, density=0.5)
    merge_checkpoints(recipe, tmp_path / "merged", progress=False)
    keys = sorted(load_dir(phases["phase1"]))
    # Every key read once from each of the 4 inputs, grouped by key: key k's tensors are all
    # read, merged and dropped before key k+1 is touched.
    assert reads == [k for k in keys for _ in range(4)]


@pytest.mark.parametrize(
    "method", ["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties"]
)
def test_n_copies_of_one_checkpoint_return_it(
    write_ckpt: WriteCkpt, phases: dict[str, Path], tmp_path: Path, method: str
) -> None:
    # Holds with lambda 1 and weights summing to 1 (TA, dare_linear with mergekit's
    # normalize=false) or any positive weights (linear normalises; ties/dare_ties at density 1
    # take the disjoint mean). The base is a different model (init).
    state = load_dir(phases["phase2"])
    copies = [write_ckpt(f"copy{i}", state) for i in range(3)]
    params = {"normalize": True} if method == "dare_ties" else {}
    recipe = make_recipe(
        method, phases["init"], copies, weights=[0.2, 0.5, 0.3], density=1.0, **params
    )
    merge_checkpoints(recipe, tmp_path / "merged", progress=False)
    merged = load_dir(tmp_path / "merged")
    for key, value in state.items():
        assert merged[key].dtype == value.dtype
        assert torch.allclose(merged[key], value, atol=1e-6, rtol=0), key


def test_base_replacement_changes_task_vectors_by_hand(
    write_ckpt: WriteCkpt, tmp_path: Path
) -> None:
    A = write_ckpt("A", {"w": torch.tensor([0.0, 0.0, 0.0, 0.0])})
    B = write_ckpt("B", {"w": torch.tensor([1.0, 1.0, 1.0, 1.0])})
    m1 = write_ckpt("m1", {"w": torch.tensor([2.0, 0.2, 1.5, 1.0])})
    m2 = write_ckpt("m2", {"w": torch.tensor([3.0, 1.5, -1.0, 1.0])})
    # TIES, density 0.5 (2 of 4 entries), weights 1, 1.
    # Against A: tau1 = [2, .2, 1.5, 1] -> [2, 0, 1.5, 0]; tau2 = [3, 1.5, -1, 1] -> [3, 1.5, 0, 0]
    #   all signs +; mean of agreeing nonzeros: [2.5, 1.5, 1.5, 0]; + A
    # Against B: tau1 = [1, -.8, .5, 0] -> [1, -.8, 0, 0]; tau2 = [2, .5, -2, 0] -> [2, 0, -2, 0]
    #   sums [3, -.8, -2, 0] -> signs [+, -, -, +]; merged [1.5, -.8, -2, 0]; + B
    expected = {A: [2.5, 1.5, 1.5, 0.0], B: [2.5, 0.2, -1.0, 1.0]}
    for base, values in expected.items():
        recipe = make_recipe("ties", base, [m1, m2], weights=[1.0, 1.0], density=0.5)
        out = merge_in_memory(recipe)["w"]
        assert torch.allclose(out, torch.tensor(values), atol=1e-6), (base.name, out)


def test_output_checkpoint_folder_and_config(phases: dict[str, Path], tmp_path: Path) -> None:
    recipe = make_recipe(
        "ties", phases["pretrain"], [phases["phase1"], phases["phase2"]], density=0.5
    )
    out = tmp_path / "out" / "merged"
    merge_checkpoints(recipe, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in out.parent.iterdir()] == ["merged"]  # no temp folders left
    cfg = json.loads((out / "config.json").read_text())
    src = json.loads((phases["phase1"] / "config.json").read_text())
    for field in ("arch", "model", "vocab", "tokenizer_fingerprint"):
        assert cfg[field] == src[field]
    assert cfg["freshrec_version"] == freshrec.__version__
    assert cfg["extra"]["phase"] == "test"  # the first model's extra is kept
    merge = cfg["extra"]["merge"]
    assert merge["recipe"] == json.loads(json.dumps(recipe.summary()))
    assert [i["role"] for i in merge["inputs"]] == ["base", "models[0]", "models[1]"]
    assert merge["inputs"][0]["path"] == str(phases["pretrain"])
    assert merge["timing"]["merge_seconds"] >= 0
    assert merge["timing"]["keys"] == len(load_dir(out))


def test_recipe_path_and_progress(phases: dict[str, Path], tmp_path: Path, capsys) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "merge_method: linear\nmodels:\n  - model: phase1\n  - model: phase2\n", encoding="utf-8"
    )
    report = merge_checkpoints(path, tmp_path / "merged", progress=True)
    assert f"merge: {report.keys}/{report.keys} keys" in capsys.readouterr().err
    merged = load_dir(tmp_path / "merged")
    p1, p2 = load_dir(phases["phase1"]), load_dir(phases["phase2"])
    key = "shared.weight"
    assert torch.allclose(merged[key], (p1[key] + p2[key]) / 2)


def test_output_dtype(write_ckpt: WriteCkpt, phases: dict[str, Path], tmp_path: Path) -> None:
    half = {
        k: v.half() if v.is_floating_point() else v for k, v in load_dir(phases["phase1"]).items()
    }
    h = write_ckpt("half", half)
    # No dtype: each tensor keeps the reference (first model's) dtype.
    merged = merge_in_memory(make_recipe("linear", None, [h, phases["phase2"]]))
    assert merged["shared.weight"].dtype == torch.float16
    assert merged["position_ids"].dtype == torch.int64
    merged = merge_in_memory(make_recipe("linear", None, [h, phases["phase2"]], dtype="float32"))
    assert merged["shared.weight"].dtype == torch.float32
    assert merged["position_ids"].dtype == torch.int64  # non-float tensors are never cast


def test_dare_is_deterministic_per_seed(phases: dict[str, Path]) -> None:
    def run(seed: int) -> dict[str, torch.Tensor]:
        models = [phases["phase1"], phases["phase2"]]
        return merge_in_memory(
            make_recipe("dare_ties", phases["pretrain"], models, density=0.5, seed=seed)
        )

    a, b, c = run(1), run(1), run(2)
    key = "encoder.layers.0.linear1.weight"
    assert torch.equal(a[key], b[key])
    assert not torch.equal(a[key], c[key])


# --- refusals -----------------------------------------------------------------------------------


def test_tokenizer_fingerprint_mismatch_is_refused(
    write_ckpt: WriteCkpt, phases: dict[str, Path], tmp_path: Path
) -> None:
    other = write_ckpt("other", load_dir(phases["phase2"]), fingerprint="fp-B")
    recipe = make_recipe("ties", phases["pretrain"], [phases["phase1"], other], density=0.5)
    for run in (lambda: merge_checkpoints(recipe, tmp_path / "m", progress=False),
                lambda: merge_in_memory(recipe)):  # fmt: skip
        with pytest.raises(TokenizerMismatchError) as info:
            run()
        msg = str(info.value)
        assert "different SID tokenizers" in msg
        for part in (str(phases["pretrain"]), str(other), "'fp-A'", "'fp-B'"):
            assert part in msg
    assert not (tmp_path / "m").exists()


def test_base_with_other_tokenizer_is_refused(
    write_ckpt: WriteCkpt, phases: dict[str, Path]
) -> None:
    base = write_ckpt("base-b", load_dir(phases["pretrain"]), fingerprint="fp-B")
    recipe = make_recipe("task_arithmetic", base, [phases["phase1"]])
    with pytest.raises(
        TokenizerMismatchError, match=r"base .*base-b has tokenizer_fingerprint 'fp-B'"
    ):
        merge_in_memory(recipe)


@pytest.mark.parametrize(
    ("field", "value"),
    [("arch", "causal"), ("vocab", {"n_levels": 4}), ("model", {"d_model": 64})],
)
def test_architecture_mismatch_is_refused(
    write_ckpt: WriteCkpt, phases: dict[str, Path], field: str, value: Any
) -> None:
    other = write_ckpt("other", load_dir(phases["phase2"]), **{field: value})
    recipe = make_recipe("linear", None, [phases["phase1"], other])
    with pytest.raises(CheckpointError, match=rf"'{field}' of models\[1\] .*other is"):
        merge_in_memory(recipe)


def test_missing_key_is_named(
    write_ckpt: WriteCkpt, phases: dict[str, Path], tmp_path: Path
) -> None:
    state = load_dir(phases["phase2"])
    del state["encoder.layers.0.norm2.bias"]
    other = write_ckpt("other", state)
    recipe = make_recipe("linear", None, [phases["phase1"], other])
    pattern = r"key 'encoder.layers.0.norm2.bias' is in models\[0\] .* but not in models\[1\]"
    with pytest.raises(CheckpointError, match=pattern):
        merge_checkpoints(recipe, tmp_path / "m", progress=False)
    with pytest.raises(CheckpointError, match=pattern):
        merge_in_memory(recipe)


def test_shape_mismatch_is_named(
    write_ckpt: WriteCkpt, phases: dict[str, Path], tmp_path: Path
) -> None:
    state = load_dir(phases["phase2"])
    state["shared.weight"] = torch.zeros(5, 32)
    other = write_ckpt("other", state)
    recipe = make_recipe("linear", None, [phases["phase1"], other])
    with pytest.raises(
        CheckpointError, match=r"key 'shared.weight' has shape \[5, 32\] in models\[1\]"
    ):
        merge_checkpoints(recipe, tmp_path / "m", progress=False)


def test_non_float_tensors_must_be_equal(
    write_ckpt: WriteCkpt, phases: dict[str, Path], tmp_path: Path
) -> None:
    state = load_dir(phases["phase2"])
    state["position_ids"] = state["position_ids"].flip(0).contiguous()
    other = write_ckpt("other", state)
    recipe = make_recipe("task_arithmetic", phases["pretrain"], [phases["phase1"], other])
    with pytest.raises(
        CheckpointError, match=r"non-float tensor 'position_ids' .*differs between base"
    ):
        merge_checkpoints(recipe, tmp_path / "m", progress=False)
    # equal non-float tensors are copied from the base
    recipe = make_recipe(
        "task_arithmetic", phases["pretrain"], [phases["phase1"], phases["phase2"]]
    )
    out = merge_in_memory(recipe)
    assert torch.equal(out["position_ids"], load_dir(phases["pretrain"])["position_ids"])


def test_float_vs_int_key_is_refused(write_ckpt: WriteCkpt, phases: dict[str, Path]) -> None:
    state = load_dir(phases["phase2"])
    state["position_ids"] = state["position_ids"].float()
    other = write_ckpt("other", state)
    recipe = make_recipe("linear", None, [phases["phase1"], other])
    with pytest.raises(CheckpointError, match="'position_ids' is floating-point in one input"):
        merge_in_memory(recipe)


def test_incomplete_checkpoint_folders(phases: dict[str, Path], tmp_path: Path) -> None:
    (phases["phase2"] / "model.safetensors").unlink()
    recipe = make_recipe("linear", None, [phases["phase1"], phases["phase2"]])
    with pytest.raises(CheckpointError, match=r"phase2: not a freshrec checkpoint, missing model"):
        merge_checkpoints(recipe, tmp_path / "m", progress=False)
    cfg = json.loads((phases["phase1"] / "config.json").read_text())
    del cfg["tokenizer_fingerprint"]
    (phases["phase1"] / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        CheckpointError, match=r"config.json: missing field\(s\) tokenizer_fingerprint"
    ):
        merge_in_memory(recipe)


def test_corrupt_safetensors(phases: dict[str, Path], tmp_path: Path) -> None:
    (phases["phase2"] / "model.safetensors").write_bytes(b"not a safetensors file")
    recipe = make_recipe("linear", None, [phases["phase1"], phases["phase2"]])
    with pytest.raises(CheckpointError, match=r"phase2/model.safetensors: cannot read safetensors"):
        merge_checkpoints(recipe, tmp_path / "m", progress=False)


def test_out_dir_must_not_be_an_input(phases: dict[str, Path], tmp_path: Path) -> None:
    recipe = make_recipe("ties", phases["pretrain"], [phases["phase1"]], density=0.5)
    with pytest.raises(ConfigError, match=r"out_dir .*pretrain is the base input"):
        merge_checkpoints(recipe, phases["pretrain"], progress=False)
    with pytest.raises(ConfigError, match=r"out_dir .* contains the base input .*pretrain"):
        merge_checkpoints(recipe, tmp_path, progress=False)  # would replace the inputs' folder
    assert (phases["pretrain"] / "model.safetensors").is_file()
    (tmp_path / "exists").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        merge_checkpoints(recipe, tmp_path / "exists", progress=False, overwrite=False)


def test_overwrite_replaces_previous_output(phases: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    merge_checkpoints(make_recipe("linear", None, [phases["phase1"]]), out, progress=False)
    merge_checkpoints(make_recipe("linear", None, [phases["phase2"]]), out, progress=False)
    assert torch.equal(load_dir(out)["shared.weight"], load_dir(phases["phase2"])["shared.weight"])
