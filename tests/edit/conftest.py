"""Fixtures of the edit tests: tiny tiger and causal models trained on the real MovieLens time
split (shared fixtures `ml_split`, `ml_emb`, `ml_sids`), cached as checkpoints under
.freshrec/test-cache/edit-models/ keyed by a hash of everything that determines the weights
(so only the first session pays: ~1-2 min per arch on 2 busy cores)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from freshrec.data import Split
from freshrec.edit.covariance import split_hash
from freshrec.model.base import GenerativeRecommender, build_model
from freshrec.model.batches import iterate_batches, training_examples
from freshrec.model.checkpoint import load_checkpoint, save_checkpoint
from freshrec.model.config import ModelConfig

REPO = Path(__file__).resolve().parents[2]
MODEL_CACHE = REPO / ".freshrec" / "test-cache" / "edit-models"

TINY = {
    "d_model": 32,
    "d_ff": 128,
    "num_layers": 2,
    "num_heads": 2,
    "d_kv": 16,
    "dropout": 0.1,
    "attention_dropout": 0.0,
    "max_history": 20,
}
# steps: ~1 epoch for tiger (280 steps of 256), ~8 epochs of causal windows (25 steps each)
STEPS = {"tiger": 300, "causal": 200}
LR = 5e-3
TRAIN_VERSION = 1  # bump when the training loop below changes


def tiny_config(arch: str) -> ModelConfig:
    return ModelConfig(arch=arch, activation="relu" if arch == "tiger" else "silu", **TINY)


def _train(model: GenerativeRecommender, examples: dict[str, np.ndarray], steps: int) -> None:
    """AdamW with a one-cycle schedule; batch 256; seeded."""
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.1)
    model.train()
    step, epoch = 0, 0
    while step < steps:
        for batch in iterate_batches(examples, 256, shuffle=True, seed=epoch):
            loss = model.loss(batch)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step >= steps:
                break
        epoch += 1
    model.eval()


def trained_checkpoint(arch: str, split: Split, sids) -> Path:
    """Checkpoint folder of the tiny `arch` model trained on `split` (cached on disk)."""
    tok, table = sids
    cfg = tiny_config(arch)
    key = {
        "arch": arch,
        "model": cfg.model_dump(),
        "steps": STEPS[arch],
        "lr": LR,
        "version": TRAIN_VERSION,
        "tokenizer": tok.fingerprint,
        "data": split_hash(split),
        "torch": torch.__version__,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = MODEL_CACHE / f"{arch}-{digest}"
    if not (folder / "model.safetensors").is_file():
        torch.manual_seed(0)
        model = build_model(cfg, tok.vocab)
        examples = training_examples(cfg, split, table.tokens(tok.vocab), tok.vocab)
        _train(model, examples, STEPS[arch])
        save_checkpoint(model, folder, tok.fingerprint, extra={"test_cache_key": key})
    return folder


@pytest.fixture(scope="session")
def ckpt_dirs(ml_split: Split, ml_sids) -> dict[str, Path]:
    """{arch: checkpoint folder} of the tiny trained models (do not write into them)."""
    return {arch: trained_checkpoint(arch, ml_split, ml_sids) for arch in ("tiger", "causal")}


@pytest.fixture
def load_model(ckpt_dirs: dict[str, Path], ml_sids):
    """load_model(arch) -> a fresh copy of the trained tiny model (eval mode)."""

    def load(arch: str) -> GenerativeRecommender:
        return load_checkpoint(ckpt_dirs[arch], expect_fingerprint=ml_sids[0].fingerprint)

    return load


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A fresh work folder (its cache/ holds covariances for this test only)."""
    return tmp_path / "work"


@pytest.fixture(scope="session")
def shared_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work folder shared by the session (covariances computed once per arch)."""
    return tmp_path_factory.mktemp("edit-work")
