"""`freshrec edit` (CliRunner) and recommending with edit packs on a work folder holding the real
MovieLens split, its SIDs and embeddings (shared fixtures) and a tiny untrained causal model:
the command's plumbing, the pack on disk and its summary, and the errors users can cause."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from freshrec import pipeline
from freshrec.config import load_recipe
from freshrec.data import save_split
from freshrec.edit import EditConfig
from freshrec.edit.cli import register, split_overrides
from freshrec.embed import cache_path
from freshrec.errors import CheckpointError, ConfigError, UnknownItemError
from freshrec.model.base import build_model
from freshrec.model.checkpoint import load_checkpoint, save_checkpoint
from freshrec.model.config import ModelConfig
from freshrec.model.edit_packs import EditPack

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
# cheap edits: few contexts, few Adam steps, a small covariance sample
CHEAP = [
    "edit.n_contexts=3",
    "edit.target_steps=5",
    "edit.cov_samples=300",
    "edit.reliability_beam=10",
    "edit.lam=300",
]


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def main() -> None:  # a group, so that `edit` is a sub-command as in freshrec's app
        """test app"""

    return app


@pytest.fixture(scope="module")
def cli_work(tmp_path_factory, ml_dataset, ml_split, ml_emb, ml_sids) -> tuple[Path, Path]:
    """(work folder, checkpoint folder): prepared split + tokenizer as `freshrec prepare` /
    `tokenize` write them, the embedding cache pre-seeded, a tiny causal checkpoint."""
    work = tmp_path_factory.mktemp("edit-cli")
    ds = work / "ml-latest-small"
    texts = ml_dataset.items.texts
    dst = cache_path(ds / "embeddings", texts)
    dst.parent.mkdir(parents=True)
    shutil.copy(cache_path(REPO / ".freshrec" / "test-cache", texts), dst)
    save_split(ml_split, ds / "prepared")
    tok, table = ml_sids
    tok.save(ds / "tokenizer", table)
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="causal", d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16, max_history=20
    )
    ckpt = save_checkpoint(
        build_model(cfg, tok.vocab), ds / "checkpoints" / "tiny" / "best", tok.fingerprint
    )
    return work, Path(ckpt)


def invoke(app: typer.Typer, work: Path, *args: str, sets: list[str] | None = None):
    argv = ["edit", *args, "--set", f"work_dir={work}"]
    for s in sets or []:
        argv += ["--set", s]
    return runner.invoke(app, argv)


def flat(res) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(res.output.split())


def new_ids(split, n: int) -> list[str]:
    idx = np.flatnonzero(split.is_new)[:n]
    return [split.dataset.items.ids[i] for i in idx]


def test_edit_given_ids_saves_pack_and_prints_summary(app, cli_work, ml_split) -> None:
    work, ckpt = cli_work
    ids = new_ids(ml_split, 3)
    # a run folder resolves to its best/; ids repeatable and comma-separated
    res = invoke(app, work, str(ckpt.parent), "--items", ids[0], "--items", ",".join(ids[1:]),
                 sets=CHEAP)  # fmt: skip
    assert res.exit_code == 0, res.output
    packs = list((work / "ml-latest-small" / "edits").iterdir())
    assert len(packs) == 1
    pack = EditPack.load(packs[0])
    assert pack.manifest["items"]["id"] == ids
    assert pack.manifest["lam"] == 300
    assert pack.manifest["config"]["n_contexts"] == 3
    assert pack.sites == [(p, min(p, 1)) for p in range(4)]
    for text in (pack.pack_id, "reliability", "top-10", "p3->L1", "covariance", "items"):
        assert text in flat(res)
    rel = pack.metrics["reliability"]
    assert 0.0 <= rel["top10"] <= 1.0
    assert rel["n"] == pack.metrics["n_requests"]

    # the second edit finds the covariances in the workspace cache; --out and --seed honoured
    out = work / "packs" / "again"
    res = invoke(app, work, str(ckpt), "--items", ids[0], "--out", str(out), "--seed", "4",
                 sets=[*CHEAP, "edit.measure_reliability=false"])  # fmt: skip
    assert res.exit_code == 0, res.output
    again = EditPack.load(out)
    assert again.manifest["seed"] == 4
    assert again.metrics["covariance"]["computed"] == []
    assert "not measured" in flat(res)
    assert "(cached)" in flat(res)


def test_edit_defaults_to_every_new_item(app, cli_work, ml_split) -> None:
    work, ckpt = cli_work
    out = work / "packs" / "all-new"
    sets = [*CHEAP, "edit.n_contexts=1", "edit.target_steps=1", "edit.measure_reliability=false"]
    res = invoke(app, work, str(ckpt), "--out", str(out), sets=sets)
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["items"]["index"] == np.flatnonzero(ml_split.is_new).tolist()
    assert manifest["metrics"]["n_items"] == int(ml_split.is_new.sum()) == 2566


def test_edit_errors_are_one_clear_line(app, cli_work, ml_split) -> None:
    work, ckpt = cli_work
    res = invoke(app, work, str(ckpt), "--items", "no-such-movie,also-missing")
    assert res.exit_code == 2
    assert "unknown item id(s) 'no-such-movie', 'also-missing'" in flat(res)
    assert "Traceback" not in flat(res)

    warm = ml_split.dataset.items.ids[int(np.flatnonzero(~ml_split.is_new)[0])]
    res = invoke(app, work, str(ckpt), "--items", warm)
    assert res.exit_code == 2
    assert "warm items" in flat(res)

    res = invoke(app, work, str(ckpt), "--items", new_ids(ml_split, 1)[0], sets=["edit.lam=-1"])
    assert res.exit_code == 2
    assert "invalid edit config: lam" in flat(res)

    res = invoke(app, work, str(work / "nowhere"))
    assert res.exit_code == 2
    assert "no checkpoint here" in flat(res)

    res = invoke(app, work / "empty", str(ckpt))
    assert res.exit_code == 2
    assert "run `freshrec prepare` first" in flat(res)


def test_split_overrides() -> None:
    recipe, cfg = split_overrides(["edit.lam=1e3", "edit.positions=[0,1]", "train.seed=2"])
    assert recipe == ["train.seed=2"]
    assert cfg == {"lam": "1e3", "positions": [0, 1]}  # YAML 1.1; pydantic coerces "1e3"
    parsed = EditConfig.from_dict(cfg)
    assert parsed.lam == 1000.0
    assert parsed.positions == (0, 1)
    with pytest.raises(ConfigError, match=r"edit\.<key>"):
        split_overrides(["edit.=3"])


def recommend_with_edits(r, ckpt, user, top_k=10, packs=()):
    return pipeline.recommend_user(r, ckpt, user, top_k, mode="beam", edit_packs=packs)


def test_recommend_with_edits(app, cli_work, ml_split, ml_sids) -> None:
    work, ckpt = cli_work
    ids = new_ids(ml_split, 2)
    out = work / "packs" / "rec"
    res = invoke(app, work, str(ckpt), "--items", ",".join(ids), "--out", str(out),
                 sets=[*CHEAP, "edit.measure_reliability=false"])  # fmt: skip
    assert res.exit_code == 0, res.output
    r = load_recipe("cpu", [f"work_dir={work}", "eval.beam_size=20"])
    user = ml_split.dataset.user_ids[0]
    base = recommend_with_edits(r, ckpt, user, top_k=5)
    edited = recommend_with_edits(r, ckpt, user, top_k=5, packs=[out])
    assert len(base) == len(edited) == 5
    assert all(isinstance(row[2], float) for row in edited)
    # the same pack by id from <work>/edits/
    pack_id = EditPack.load(out).pack_id
    shutil.copytree(out, work / "ml-latest-small" / "edits" / pack_id, dirs_exist_ok=True)
    assert recommend_with_edits(r, ckpt, user, top_k=5, packs=[pack_id]) == edited

    with pytest.raises(UnknownItemError, match="unknown user id"):
        recommend_with_edits(r, ckpt, "nobody", packs=[out])
    with pytest.raises(CheckpointError, match="not found"):
        recommend_with_edits(r, ckpt, user, packs=["0123456789abcdef"])
    # a pack made on another checkpoint (other weights, same tokenizer) is refused
    model = load_checkpoint(ckpt)
    with torch.no_grad():
        model.ffn_out_projs()[0].weight.add_(0.01)
    other = save_checkpoint(model, work / "other" / "best", ml_sids[0].fingerprint)
    with pytest.raises(CheckpointError, match="base checkpoint"):
        recommend_with_edits(r, other, user, packs=[out])
