"""Serve-test fixtures: a work folder with the real MovieLens split, MiniLM embeddings and
fitted SIDs (the shared fixtures), and a tiny causal model trained with `pipeline.train`.

The model is cached under .freshrec/test-cache/serve-models/ keyed by a hash of everything
that determines its weights, so only the first session pays for training (~1-3 min on 2 busy
cores). It is trained for 8 short epochs (~200 steps): fewer leave a model that ignores its
input, and editing such a model cannot make an item recommendable to anyone in particular.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from freshrec import pipeline
from freshrec.config import load_recipe
from freshrec.data import Split, save_split
from freshrec.edit.covariance import split_hash
from freshrec.embed import cache_path

REPO = Path(__file__).resolve().parents[2]
TEST_CACHE = REPO / ".freshrec" / "test-cache"
MODEL_CACHE = TEST_CACHE / "serve-models"
TINY = [
    "model.recipe=causal_cpu",
    "model.d_model=32",
    "model.d_ff=128",
    "model.num_layers=2",
    "model.num_heads=2",
    "train.epochs=8",
    "train.patience=8",
    "train.warmup_steps=20",
    "train.lr=0.005",
    "train.valid_requests=50",
    "train.valid_beam=5",
]
CACHE_VERSION = 1  # bump when the training set-up changes
# Edits on the tiny model: lambda as the edit tests tuned it for the tiny causal model, and a
# smaller preservation sample so the warm-up stays short.
EDIT = {"measure_reliability": False, "cov_samples": 2000, "lam": 300.0}


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


def _trained(recipe, split: Split, tok, table) -> Path:
    """The tiny model's checkpoint folder (trained on a cache miss)."""
    cfg = recipe.to_dict()
    cfg.pop("work_dir")
    cfg["data"].pop("path")
    key = {
        "recipe": cfg,
        "tokenizer": tok.fingerprint,
        "data": split_hash(split),
        "torch": torch.__version__,
        "version": CACHE_VERSION,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = MODEL_CACHE / f"causal-{digest}"
    if not (folder / "model.safetensors").is_file():
        trained = pipeline.train(recipe, split, tok, table, progress=False)
        # the last epoch, not the "best": 50 validation requests cannot rank epochs
        src = trained.folder / "last" / "model"
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        (tmp / "cache_key.json").write_text(json.dumps(key, indent=1, sort_keys=True))
        tmp.rename(folder)
    return folder


@pytest.fixture(scope="session")
def serve_base(tmp_path_factory, ml_split: Split, ml_emb: np.ndarray, ml_sids) -> ServeBase:
    """Prepared data, tokenizer, embedding cache and the tiny causal checkpoint."""
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
    return ServeBase(work, _trained(recipe, ml_split, tok, table), overrides)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (`freshrec.serve.local_postgres`: the binaries
    of the pgserver package, else a system installation); skipped only where neither exists
    or the psycopg driver is missing."""
    from freshrec.serve.local_postgres import LocalPostgres, postgres_binaries

    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("PostgreSQL tests need the psycopg driver: pip install 'psycopg[binary]'")
    if postgres_binaries() is None:
        pytest.skip(
            "no PostgreSQL to start: neither the pgserver package (pip install pgserver) nor "
            "a system postgres with initdb was found"
        )
    with LocalPostgres() as pg:
        yield pg
