"""The editor registry: an editor defined here (one `Editor` subclass + its decorator) runs
through `freshrec edit --editor NAME` with its own config class, and its pack is served by
`recommend_user`; GenRecEdit is the default; unknown and duplicate names are refused."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

import freshrec
from freshrec.config import load_recipe
from freshrec.data import save_split
from freshrec.edit import EDITORS, EditConfig, Editor, GenRecEditor, register_editor
from freshrec.edit.cli import register
from freshrec.embed import cache_path
from freshrec.errors import ConfigError
from freshrec.model.base import build_model
from freshrec.model.checkpoint import checkpoint_identity, save_checkpoint
from freshrec.model.config import ModelConfig
from freshrec.model.edit_packs import EditPack
from freshrec.pipeline import recommend_user

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


class ScaleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: float = Field(0.1, gt=0, description="delta = scale * W")
    seed: int = 0


class ScaleEditor(Editor):
    """Test editor: at SID position p, `scale * W` added to the FFN output projection W of
    layer min(p, n_layers - 1), gated on the new items' SID prefixes."""

    def __init__(self, model, checkpoint_dir, split, table, emb, config=None, work=None) -> None:
        self.model, self.split, self.table = model, split, table
        self.config = config or ScaleConfig()
        self.base_hash, self.fingerprint = checkpoint_identity(checkpoint_dir)

    def edit(
        self, new_items: Any, seed: int | None = None, previous: Sequence[EditPack] = ()
    ) -> EditPack:
        t0 = time.perf_counter()
        items = np.asarray(new_items, dtype=np.int64)
        projs = self.model.ffn_out_projs()
        sites = [(p, min(p, len(projs) - 1)) for p in range(self.model.vocab.sid_len)]
        deltas = {s: self.config.scale * projs[s[1]].weight.detach().clone() for s in sites}
        manifest = {
            "format": "freshrec-edit-pack",
            "version": 1,
            "pack_id": "",
            "freshrec_version": freshrec.__version__,
            "base": {"checkpoint_hash": self.base_hash, "tokenizer_fingerprint": self.fingerprint},
            "items": {
                "index": items.tolist(),
                "id": [self.split.dataset.items.ids[i] for i in items],
            },
            "sids": self.table.sids[items].tolist(),
            "sites": [{"position": p, "layer": layer} for p, layer in sites],
            "method": self.name,
            "trigger": True,
            "gate": "prefix",
            "seed": self.config.seed if seed is None else seed,
            "config": self.config.model_dump(mode="json"),
            "timings": {"edit_total": time.perf_counter() - t0},
        }
        manifest["pack_id"] = EditPack.content_id(deltas, manifest)
        return EditPack(deltas, manifest)


@pytest.fixture
def scale_editor() -> Iterator[type[ScaleEditor]]:
    yield register_editor("scale_ffn", config=ScaleConfig)(ScaleEditor)
    EDITORS.remove("scale_ffn")


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def main() -> None:  # a group, so that `edit` is a sub-command as in freshrec's app
        """test app"""

    return app


@pytest.fixture(scope="module")
def work(tmp_path_factory, ml_dataset, ml_split, ml_sids) -> tuple[Path, Path]:
    """(work folder, checkpoint): prepared split, tokenizer, embedding cache, a tiny model."""
    work = tmp_path_factory.mktemp("edit-registry")
    ds = work / "ml-latest-small"
    texts = ml_dataset.items.texts
    dst = cache_path(ds / "embeddings", texts)
    dst.parent.mkdir(parents=True)
    shutil.copy(cache_path(REPO / ".freshrec" / "test-cache", texts), dst)
    save_split(ml_split, ds / "prepared")
    tok, table = ml_sids
    tok.save(ds / "tokenizer", table)
    torch.manual_seed(0)
    cfg = ModelConfig(arch="causal", d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16)
    ckpt = save_checkpoint(
        build_model(cfg, tok.vocab), ds / "checkpoints" / "t" / "best", tok.fingerprint
    )
    return work, Path(ckpt)


def invoke(app: typer.Typer, work: Path, *args: str) -> Any:
    return runner.invoke(app, ["edit", *args, "--set", f"work_dir={work}"])


def test_genrecedit_is_the_registered_default() -> None:
    assert "genrecedit" in EDITORS.names()
    assert EDITORS.get("genrecedit") is GenRecEditor
    assert issubclass(GenRecEditor, Editor)
    assert GenRecEditor.config_class is EditConfig
    assert GenRecEditor.name == "genrecedit"


def test_registered_editor_runs_through_the_cli(
    scale_editor: type[ScaleEditor], app: typer.Typer, work: tuple[Path, Path], ml_split
) -> None:
    folder, ckpt = work
    ids = [ml_split.dataset.items.ids[i] for i in np.flatnonzero(ml_split.is_new)[:2]]
    out = folder / "packs" / "scaled"
    res = invoke(app, folder, str(ckpt), "--editor", "scale_ffn", "--items", ",".join(ids),
                 "--set", "edit.scale=0.5", "--out", str(out))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "scale_ffn" in res.output
    pack = EditPack.load(out)
    assert pack.pack_id in " ".join(res.output.split())
    assert pack.manifest["method"] == "scale_ffn"
    assert pack.manifest["config"] == {"scale": 0.5, "seed": 0}
    assert pack.manifest["items"]["id"] == ids
    recipe = load_recipe("cpu", [f"work_dir={folder}"])
    user = ml_split.dataset.user_ids[0]
    plain = recommend_user(recipe, ckpt, user, 5, mode="beam")
    edited = recommend_user(recipe, ckpt, user, 5, mode="beam", edit_packs=[out])
    assert [s for *_, s, _ in plain] != [s for *_, s, _ in edited]  # the deltas act


@pytest.mark.usefixtures("scale_editor")
def test_editor_config_errors_are_one_line(app: typer.Typer, work: tuple[Path, Path]) -> None:
    folder, ckpt = work
    res = invoke(app, folder, str(ckpt), "--editor", "scale_ffn", "--set", "edit.lam=3")
    assert res.exit_code == 2
    assert "invalid edit config: lam: Extra inputs are not permitted" in " ".join(
        res.output.split()
    )
    assert "Traceback" not in res.output


def test_unknown_editor_lists_registered_ones(app: typer.Typer, work: tuple[Path, Path]) -> None:
    folder, ckpt = work
    res = invoke(app, folder, str(ckpt), "--editor", "rome")
    assert res.exit_code == 2
    assert "unknown editor 'rome'; expected one of: genrecedit" in " ".join(res.output.split())
    assert "Traceback" not in res.output


def test_duplicate_and_non_editor_refused() -> None:
    with pytest.raises(ConfigError, match=r"editor 'genrecedit' is already registered"):
        register_editor("genrecedit", config=ScaleConfig)(ScaleEditor)
    assert EDITORS.get("genrecedit") is GenRecEditor
    with pytest.raises(ConfigError, match=r"is not an Editor subclass"):
        register_editor("thing", config=ScaleConfig)(dict)  # type: ignore[arg-type]
