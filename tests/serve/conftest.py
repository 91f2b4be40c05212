"""Serve-test fixtures: a work folder with the real MovieLens split, MiniLM embeddings, fitted
SIDs and a tiny causal model trained for a few dozen steps (once per session)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from freshrec import pipeline
from freshrec.config import load_recipe
from freshrec.data import Split, save_split
from freshrec.embed import cache_path

REPO = Path(__file__).resolve().parents[2]
TEST_CACHE = REPO / ".freshrec" / "test-cache"
TINY = [
    "model.recipe=causal_cpu",
    "model.d_model=32",
    "model.d_ff=64",
    "model.num_layers=1",
    "model.num_heads=2",
    "train.epochs=2",
    "train.warmup_steps=5",
    "train.lr=0.01",
    "train.valid_requests=50",
    "train.valid_beam=5",
]
# Edits on the tiny model: a smaller preservation sample keeps the warm-up short.
EDIT = {"measure_reliability": False, "cov_samples": 2000}


@dataclass(frozen=True)
class ServeBase:
    work: Path
    checkpoint: Path
    overrides: list[str]

    def config(self, state_dir: Path, **extra: Any) -> dict[str, Any]:
        """A ServeConfig dict serving the tiny checkpoint with its own state folder."""
        return {
            "checkpoint": str(self.checkpoint),
            "work_dir": str(self.work),
            "overrides": self.overrides,
            "state_dir": str(state_dir),
            "edit": dict(EDIT),
            "edit_batch_window_s": 0.3,
            "torch_threads": 1,
            **extra,
        }


@pytest.fixture(scope="session")
def serve_base(tmp_path_factory, ml_split: Split, ml_emb: np.ndarray, ml_sids) -> ServeBase:
    """Prepared data, tokenizer, embedding cache and a trained tiny causal checkpoint."""
    work = tmp_path_factory.mktemp("serve-work")
    overrides = [f"data.path={REPO / 'data' / 'ml-latest-small'}", *TINY]
    recipe = load_recipe("cpu", [f"work_dir={work}", *overrides])
    ws = pipeline.workspace(recipe)
    save_split(ml_split, ws.prepared)
    tok, table = ml_sids
    tok.save(ws.tokenizer, table)
    texts = ml_split.dataset.items.texts
    dst = cache_path(ws.embeddings, texts)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(cache_path(TEST_CACHE, texts), dst)
    trained = pipeline.train(recipe, ml_split, tok, table, progress=False)
    return ServeBase(work, trained.folder / "best", overrides)
