"""The MMGRid checkpoint grid on real MovieLens: domains, data windows, manifest, and merges of
real trained checkpoints (streaming == in-memory; `freshrec merge` -> `freshrec evaluate`)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from freshrec.config import load_recipe as run_recipe
from freshrec.data import load_movielens, time_split
from freshrec.data.schema import Dataset, Interactions, Split
from freshrec.embed import embed_texts
from freshrec.embed.encoder import cache_path
from freshrec.errors import ConfigError
from freshrec.merge import (
    ALL,
    GridConfig,
    assign_domains,
    auto_domains,
    build_grid,
    context_split,
    item_labels,
    label_counts,
    load_grid,
    merge_checkpoints,
    merge_in_memory,
    parse_recipe,
    phase_bounds,
    window_examples,
    window_positions,
)
from freshrec.merge.cli import register
from freshrec.model.batches import training_examples
from freshrec.model.checkpoint import load_checkpoint
from freshrec.model.config import causal_cpu, tiger_cpu
from freshrec.semid.vocab import SidVocab

REPO = Path(__file__).resolve().parents[2]
TEST_CACHE = REPO / ".freshrec" / "test-cache"
DOMAINS = {
    "action": ["Action", "Adventure", "Sci-Fi", "Western", "War"],
    "comedy": ["Comedy", "Animation", "Children", "Fantasy", "Musical", "Romance"],
}
# A model small enough that the whole grid trains in seconds on the full data.
TINY = [
    "model.recipe=causal_cpu",
    "model.d_model=16",
    "model.d_ff=32",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.d_kv=8",
    "model.max_history=10",
    "train.batch_size=128",
    "train.warmup_steps=0",
    "train.valid_beam=5",
    "semid.kmeans_nredo=1",
    "semid.kmeans_niter=10",
]


@pytest.fixture(scope="module")
def ml(ml_dir: Path) -> tuple[Dataset, Split]:
    ds = load_movielens(ml_dir)
    return ds, time_split(ds)


@pytest.fixture(scope="module")
def labels(ml: tuple[Dataset, Split]) -> np.ndarray:
    return item_labels(ml[0].items)


def unique_sid_tokens(n_items: int) -> tuple[np.ndarray, SidVocab]:
    """Token table where item i's SID is its base-64 digits: distinct items, distinct SIDs."""
    vocab = SidVocab(n_levels=3, codebook_size=64, max_collision=64, user_buckets=0)
    i = np.arange(n_items)
    sids = np.stack([(i // 4096) % 64, (i // 64) % 64, i % 64, np.zeros_like(i)], axis=1)
    return np.asarray(vocab.to_tokens(sids)), vocab


# ----------------------------------------------------------------------------- no training
def test_primary_labels_are_first_listed_genres(
    ml: tuple[Dataset, Split], labels: np.ndarray
) -> None:
    ds = ml[0]
    idx = ds.items.index_of()
    assert labels[idx["1"]] == "Adventure"  # Toy Story: Adventure|Animation|Children|...
    assert labels[idx["3"]] == "Comedy"  # Grumpier Old Men: Comedy|Romance
    no_genre = [i for i, t in enumerate(ds.items.texts) if "Genres:" not in t]
    assert no_genre
    assert all(labels[i] == "" for i in no_genre)
    counts = label_counts(labels, ds.interactions.item)
    assert next(iter(counts)) == "Action"
    assert sum(counts.values()) == int((labels[ds.interactions.item] != "").sum())


def test_domains_are_disjoint_and_follow_labels(labels: np.ndarray) -> None:
    dom = assign_domains(labels, DOMAINS)
    for i, (_, group) in enumerate(DOMAINS.items()):
        assert set(labels[dom == i]) == set(group)
    assert set(labels[dom == -1]).isdisjoint({g for grp in DOMAINS.values() for g in grp})


def test_auto_domains_balance_interactions(ml: tuple[Dataset, Split], labels: np.ndarray) -> None:
    counts = label_counts(labels, ml[0].interactions.item)
    groups = auto_domains(counts, 3)
    flat = [g for grp in groups.values() for g in grp]
    assert sorted(flat) == sorted(counts)
    assert len(flat) == len(set(flat))
    loads = [sum(counts[g] for g in grp) for grp in groups.values()]
    assert max(loads) / min(loads) < 1.05
    assert "action" in groups  # named after the largest label


@pytest.mark.parametrize("config", [causal_cpu(), tiger_cpu()], ids=["causal", "tiger"])
def test_window_examples_without_start_equal_training_examples(
    ml: tuple[Dataset, Split], config: object
) -> None:
    split = ml[1]
    tokens, vocab = unique_sid_tokens(split.dataset.n_items)
    ref = training_examples(config, split, tokens, vocab)  # type: ignore[arg-type]
    got = window_examples(config, split, tokens, vocab, None)  # type: ignore[arg-type]
    assert ref.keys() == got.keys()
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key])


def test_each_context_trains_only_its_window_and_domain(
    ml: tuple[Dataset, Split], labels: np.ndarray
) -> None:
    ds, split = ml
    cut1, cut2 = split.cutoffs  # type: ignore[misc]
    inter = ds.interactions
    bounds = phase_bounds(inter.ts[inter.ts < cut1], cut1, [0.6, 0.8])
    assert bounds[0] == inter.ts.min()
    assert bounds[-1] == cut1
    dom = assign_domains(labels, DOMAINS)
    tokens, vocab = unique_sid_tokens(ds.n_items)
    item_of = {tuple(row): i for i, row in enumerate(tokens.tolist())}
    masks = {d: dom == i for i, d in enumerate(DOMAINS)} | {ALL: np.ones(ds.n_items, bool)}
    for k in (1, 2):  # phase1, phase2
        start, end = int(bounds[k]), int(bounds[k + 1])
        valid_end = int(bounds[k + 2]) if k + 2 < len(bounds) else cut2
        for _name, mask in masks.items():
            ctx = context_split(ds, (end, valid_end), mask)
            users, pos = window_positions(ctx, start)
            at = ctx.seq_offsets[users] + pos
            assert mask[ctx.seq_items].all()  # sequences (histories) hold domain items only
            assert ((ctx.seq_ts[at] >= start) & (ctx.seq_ts[at] < end)).all()
            # every domain interaction of the window is a target unless it is the user's first
            on = mask[inter.item]
            in_win = on & (inter.ts >= start) & (inter.ts < end)
            first_ts = np.full(ds.n_users, np.iinfo(np.int64).max)
            np.minimum.at(first_ts, inter.user[on], inter.ts[on])
            firsts = in_win & (inter.ts == first_ts[inter.user])
            assert abs(len(users) - (int(in_win.sum()) - int(firsts.sum()))) <= 5  # ts ties
            # the causal windows train exactly those targets, once each
            ex = window_examples(causal_cpu(), ctx, tokens, vocab, start)
            toks = ex["tokens"][:, 1:].reshape(len(ex["tokens"]), -1, 4)
            tmask = ex["targets"][:, 1:].reshape(len(ex["tokens"]), -1, 4).all(axis=2)
            trained = sorted(item_of[tuple(t)] for t in toks[tmask].tolist())
            assert trained == sorted(ctx.seq_items[at].tolist())
            # validation requests: the next window, this domain's items only
            v_ts = ctx.seq_ts[ctx.seq_offsets[ctx.valid.user] + ctx.valid.pos]
            assert ((v_ts >= end) & (v_ts < valid_end)).all()
            assert mask[ctx.valid.target].all()


def test_phase_bounds_units_and_errors() -> None:
    ts = np.concatenate([np.arange(0, 100), np.arange(900, 1000)]).astype(np.int64)
    b = phase_bounds(ts, 1000, [0.5], "interactions")
    assert b.tolist() == [0, 900, 1000]
    assert (ts < b[1]).sum() == 100
    assert phase_bounds(ts, 1000, [0.5], "time").tolist() == [0, 500, 1000]
    with pytest.raises(ConfigError, match="empty or out-of-order"):
        phase_bounds(np.zeros(10, np.int64), 1, [0.5])
    with pytest.raises(ConfigError, match="strictly increasing"):
        GridConfig.parse({"phases": [0.8, 0.6]})
    with pytest.raises(ConfigError, match="unknown_key"):
        GridConfig.parse({"unknown_key": 1})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"domains": {"a": ["Action"], "b": ["Cartoons"]}}, "unknown label 'Cartoons'.*Comedy"),
        ({"domains": {"a": ["Action"], "b": []}}, "domain 'b' is empty"),
        ({"domains": {"a": ["Action"], "b": ["Action"]}}, "in domains 'a' and 'b'"),
        ({"domains": {"all": ["Action"]}}, "reserved"),
        ({"domains": {"a": ["War"]}}, "phases do not fit the data.*phase1/a"),
        ({"phases": [0.999, 0.9995]}, "phases do not fit the data"),
        ({"n_domains": 40}, "cannot make 40 domains"),
    ],
)
def test_bad_grid_options_fail_before_any_work(
    tmp_path: Path, ml: tuple[Dataset, Split], options: dict, message: str
) -> None:
    recipe = run_recipe("cpu", TINY)
    with pytest.raises(ConfigError, match=message):
        build_grid(recipe, tmp_path / "g", GridConfig(**options), dataset=ml[0], progress=False)
    assert not (tmp_path / "g").exists()  # nothing embedded, fitted or written


def test_grid_needs_the_time_split(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="time split"):
        build_grid(run_recipe("cpu", [*TINY, "data.split=loo"]), tmp_path, progress=False)


# ----------------------------------------------------------------------------- a real grid
@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory: pytest.TempPathFactory, ml_dir: Path) -> Path:
    """A tiny-model grid on the full MovieLens data, built through `freshrec grid`."""
    out = tmp_path_factory.mktemp("grid")
    texts = load_movielens(ml_dir).items.texts
    embed_texts(texts, cache_dir=TEST_CACHE, progress=False)  # cached by other tests too
    cache = cache_path(out / "ml-latest-small" / "embeddings", texts)
    cache.parent.mkdir(parents=True)
    shutil.copy(cache_path(TEST_CACHE, texts), cache)
    args = ["grid", str(out), "--set", f"data.path={ml_dir}"]
    for s in TINY:
        args += ["--set", s]
    for name, group in DOMAINS.items():
        args += ["--domain", f"{name}={','.join(group)}"]
    args += ["--phases", "0.6,0.8", "--pretrain-epochs", "1", "--phase-epochs", "1"]
    args += ["--valid-requests", "30", "--phase-lr", "0.002"]
    res = CliRunner().invoke(app(), args)
    assert res.exit_code == 0, res.output
    assert "phase2-comedy" in res.output
    return out


def app() -> typer.Typer:
    a = typer.Typer()
    register(a)
    return a


def test_manifest_names_parents_windows_and_metrics(grid_dir: Path) -> None:
    grid = load_grid(grid_dir)
    assert grid.complete
    assert grid.phases == ["pretrain", "phase1", "phase2"]
    assert grid.tracks == ["action", "comedy", ALL]
    expected = {"init": None, "pretrain": "init"}
    for d in grid.tracks:
        expected[f"phase1-{d}"] = "pretrain"
        expected[f"phase2-{d}"] = f"phase1-{d}"
    assert {n: e.parent for n, e in grid.entries.items()} == expected
    raw = json.loads((grid_dir / "manifest.json").read_text())
    assert {c["name"]: c["parent"] for c in raw["checkpoints"]}["phase2-action"] == "phase1-action"
    for e in grid.entries.values():
        model = load_checkpoint(grid.path(e.name), expect_fingerprint=grid.tokenizer_fingerprint)
        assert model.arch == "causal"
        if e.name == "init":
            continue
        k = grid.phases.index(e.phase)
        assert (e.window["start"], e.window["end"]) == (grid.bounds[k], grid.bounds[k + 1])
        assert e.window["n_targets"] > 0
        assert e.metrics["epochs_run"] >= 1
        assert e.validation["on"] == "valid"
        assert (e.validation["start"], e.validation["end"]) == grid.cutoffs
        assert e.validation["n_requests"] > 0
        assert 0.0 <= e.metrics["valid_ndcg10"] <= 1.0
    # incremental: phase 2 starts from phase 1 and moves away from it
    p1 = load_file(grid.path("phase1-action") / "model.safetensors")
    p2 = load_file(grid.path("phase2-action") / "model.safetensors")
    assert any(not torch.equal(p1[k], p2[k]) for k in p1)


def test_resume_keeps_checkpoints_and_rejects_other_options(grid_dir: Path, ml_dir: Path) -> None:
    grid = load_grid(grid_dir)
    mtime = (grid.path("phase2-all") / "model.safetensors").stat().st_mtime_ns
    recipe = run_recipe("cpu", [*TINY, f"data.path={ml_dir}"])
    cfg = GridConfig(**grid.spec["grid"])
    again = build_grid(recipe, grid_dir, cfg, progress=False)
    assert again.entries.keys() == grid.entries.keys()
    assert (grid.path("phase2-all") / "model.safetensors").stat().st_mtime_ns == mtime
    with pytest.raises(ConfigError, match="other options"):
        build_grid(recipe, grid_dir, cfg.model_copy(update={"phase_epochs": 3}), progress=False)
    ds = load_movielens(ml_dir)
    keep = ds.interactions.user < 300  # other data, same recipe and options
    inter = Interactions(
        *(a[keep] for a in (ds.interactions.user, ds.interactions.item, ds.interactions.ts))
    )
    with pytest.raises(ConfigError, match="other options"):
        build_grid(
            recipe,
            grid_dir,
            cfg,
            dataset=dataclasses.replace(ds, interactions=inter),
            progress=False,
        )


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties", "dare_ties"])
def test_streaming_merge_of_trained_checkpoints_equals_in_memory(
    grid_dir: Path, tmp_path: Path, method: str
) -> None:
    grid = load_grid(grid_dir)
    models = [grid.path(n) for n in ("phase2-action", "phase2-comedy", "phase2-all")]
    params = {"weight": 0.5} | ({"density": 0.4} if method in ("ties", "dare_ties") else {})
    recipe = parse_recipe(
        {
            "merge_method": method,
            "base_model": str(grid.path("pretrain")),
            "models": [{"model": str(p), "parameters": params} for p in models],
            "parameters": {"lambda": 0.9, "seed": 3},
        }
    )
    merge_checkpoints(recipe, tmp_path / "out", progress=False)
    streamed, reference = load_file(tmp_path / "out" / "model.safetensors"), merge_in_memory(recipe)
    assert streamed.keys() == reference.keys()
    for key in reference:
        assert torch.equal(streamed[key], reference[key]), key
    inputs = [load_file(p / "model.safetensors") for p in models]
    assert any(not torch.equal(reference[k], inputs[0][k]) for k in reference)


def test_cli_merge_output_loads_and_evaluates(grid_dir: Path, tmp_path: Path, ml_dir: Path) -> None:
    from freshrec.cli import app as freshrec_app

    grid = load_grid(grid_dir)
    recipe = {
        "merge_method": "ties",
        "base_model": str(grid.path("pretrain")),
        "models": [
            {"model": str(grid.path("phase2-action")), "parameters": {"weight": 0.5}},
            {"model": str(grid.path("phase2-comedy")), "parameters": {"weight": 0.5}},
        ],
        "parameters": {"density": 0.5},
    }
    path = tmp_path / "ties.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "merged"
    res = CliRunner().invoke(app(), ["merge", str(path), str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "merge (ties)" in res.output
    assert "merged" in res.output
    model = load_checkpoint(out, expect_fingerprint=grid.tokenizer_fingerprint)
    assert model.arch == "causal"

    again = CliRunner().invoke(app(), ["merge", str(path), str(out)])
    assert again.exit_code == 2
    assert "--overwrite" in again.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**recipe, "merge_method": "soup"}))
    res = CliRunner().invoke(app(), ["merge", str(bad), str(tmp_path / "x")])
    assert res.exit_code == 2
    assert "unknown method 'soup'" in res.output

    sets = [f"work_dir={grid_dir}", f"data.path={ml_dir}", "eval.max_requests=40"]
    sets += ["eval.beam_size=20", "eval.top_k=20"]
    args = ["evaluate", str(out), "--no-baselines", "--out", "merged"]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(freshrec_app, args)
    assert res.exit_code == 0, res.output
    report = grid_dir / "ml-latest-small" / "reports" / "merged"
    assert any(report.glob("*.json"))


def test_cli_grid_reports_bad_options(tmp_path: Path, ml_dir: Path) -> None:
    args = ["grid", str(tmp_path / "g"), "--set", f"data.path={ml_dir}", "--domain", "x=Cartoons"]
    res = CliRunner().invoke(app(), args)
    assert res.exit_code == 2
    assert "unknown label 'Cartoons'" in res.output
    res = CliRunner().invoke(app(), ["grid", str(tmp_path / "g"), "--phases", "0.6,abc"])
    assert res.exit_code == 2
    assert "--phases" in res.output
