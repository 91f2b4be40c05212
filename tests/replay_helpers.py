"""Shared set-up of the replay tests (tests/replay/, tests/benchmarks/): the tiny causal model
the edit tests train on the real MovieLens split (cached checkpoint), a replay context over it,
and a workspace folder laid out as `freshrec prepare` + `tokenize` leave it."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np

from freshrec.data import Split, save_split
from freshrec.embed import cache_path
from freshrec.recommend.fresh import FreshParams
from freshrec.replay import ReplayContext
from freshrec.replay.timeline import item_first_seen
from freshrec.semid.table import SidTable
from freshrec.train.config import TrainConfig

TESTS = Path(__file__).resolve().parent
TEST_CACHE = TESTS.parent / ".freshrec" / "test-cache"


def tiny_causal_checkpoint(split: Split, sids) -> Path:
    """The cached tiny causal checkpoint of the edit tests (trained on first use)."""
    spec = importlib.util.spec_from_file_location("edit_conftest", TESTS / "edit" / "conftest.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.trained_checkpoint("causal", split, sids)


def warm_table(split: Split, table: SidTable) -> SidTable:
    """`table` with the new items' rows unassigned (a replay assigns them as they appear)."""
    sids = table.sids.copy()
    sids[np.asarray(split.is_new, dtype=bool)] = -1
    return SidTable(sids, table.max_collision)


def replay_context(
    split: Split, emb: np.ndarray, sids, checkpoint: Path, work: Path
) -> ReplayContext:
    tok, table = sids
    return ReplayContext(
        split=split,
        emb=emb,
        tokenizer=tok,
        warm_table=warm_table(split, table),
        checkpoint=checkpoint,
        train=TrainConfig(epochs=1),
        fresh=FreshParams(),
        work=work,
        first_seen=item_first_seen(split),
        beam_size=20,
        batch_size=256,
    )


def make_workspace(work: Path, split: Split, sids) -> Path:
    """`work/ml-latest-small/` with the prepared split, tokenizer + SID table and the
    embedding cache, as `freshrec prepare` and `freshrec tokenize` leave them."""
    tok, table = sids
    root = work / "ml-latest-small"
    save_split(split, root / "prepared")
    tok.save(root / "tokenizer", table)
    texts = split.dataset.items.texts
    dst = cache_path(root / "embeddings", texts)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(cache_path(TEST_CACHE, texts), dst)
    return work


def copy_checkpoint(checkpoint: Path, dest: Path) -> Path:
    """A private copy of a cached checkpoint (callers may write fresh.json into it)."""
    shutil.copytree(checkpoint, dest)
    return dest
