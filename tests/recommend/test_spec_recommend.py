"""`recommend --mode spec` (`pipeline.recommend_user(mode="spec")`, a Session mode) on a
workspace made of the shared real fixtures and a tiny checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from freshrec import pipeline
from freshrec.errors import ConfigError, UnknownItemError
from freshrec.recommend.spec import train_self_drafter
from model_helpers import tiny_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, ml_split, ml_sids, ml_emb):
    tok, table = ml_sids
    work = tmp_path_factory.mktemp("specwork")
    recipe, model, ckpt = tiny_workspace(work, ml_split, tok, table, ["eval.beam_size=10"])
    drafter = train_self_drafter(model, ml_split, table, steps=2, batch_size=32)
    heads = drafter.save(work / "heads")
    return {"recipe": recipe, "run": work / "run", "ckpt": ckpt, "heads": heads}


def recommend_spec(recipe, checkpoint, user_id, top_k=10, **options):
    return pipeline.recommend_user(recipe, checkpoint, user_id, top_k, mode="spec", **options)


@pytest.mark.parametrize("drafter", ["text", "self"])
def test_recommend_spec_rows(workspace, ml_split, drafter):
    user = ml_split.dataset.user_ids[0]
    rows = recommend_spec(
        workspace["recipe"],
        workspace["run"],  # a run folder resolves to its best/ checkpoint
        user,
        top_k=8,
        drafter=drafter,
        gamma=-4.0,
        n_drafts=10,
        self_drafter_dir=workspace["heads"],
    )
    assert 0 < len(rows) <= 8
    ids = ml_split.dataset.items.index_of()
    seq = set(ml_split.sequence(0)[-5:].tolist())
    for item_id, title, score, new in rows:
        i = ids[item_id]
        assert i not in seq  # the history window is excluded
        assert title == ml_split.dataset.items.titles[i]
        assert np.isfinite(score)
        assert new == bool(ml_split.is_new[i])
    scores = [r[2] for r in rows]
    assert scores == sorted(scores, reverse=True)


def test_recommend_spec_errors(workspace):
    with pytest.raises(UnknownItemError):
        recommend_spec(workspace["recipe"], workspace["ckpt"], "no-such-user")
    with pytest.raises(ConfigError, match="self_drafter_dir"):
        recommend_spec(workspace["recipe"], workspace["ckpt"], "1", drafter="self")
