"""Fixtures of the replay tests: the tiny causal model trained on the real MovieLens time split
(cached checkpoint shared with the edit tests) and a replay context over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from freshrec.replay import ReplayContext
from replay_helpers import replay_context, tiny_causal_checkpoint


@pytest.fixture(scope="session")
def causal_ckpt(ml_split, ml_sids) -> Path:
    """Checkpoint folder of the tiny causal model (do not write into it)."""
    return tiny_causal_checkpoint(ml_split, ml_sids)


@pytest.fixture
def ctx(tmp_path: Path, ml_split, ml_emb, ml_sids, causal_ckpt: Path) -> ReplayContext:
    """A replay context over the tiny model; its work folder is this test's own."""
    return replay_context(ml_split, ml_emb, ml_sids, causal_ckpt, tmp_path / "replay")
