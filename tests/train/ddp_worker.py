"""Trains a tiny TIGER for a few steps on real MovieLens data, single- or multi-process
(launched by tests/train/test_distributed.py), and saves the final weights."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from freshrec.data import load_split
from freshrec.model.base import build_model
from freshrec.model.batches import iterate_batches, n_targets, training_examples
from freshrec.model.config import ModelConfig
from freshrec.semid import load_sid_table, load_tokenizer
from freshrec.train.config import TrainConfig
from freshrec.train.distributed import init_from_env, shutdown
from freshrec.train.trainer import Trainer, seed_everything

N_EXAMPLES, BATCH, EPOCHS = 256, 64, 2
CONFIG = ModelConfig(  # dropout 0: both runs must see the same forward passes
    arch="tiger",
    d_model=32,
    d_ff=64,
    num_layers=1,
    num_heads=2,
    d_kv=16,
    dropout=0.0,
    max_history=10,
)


def main(work: Path, out: Path) -> None:
    torch.set_num_threads(1)
    rank, _ = init_from_env()
    split = load_split(work / "prepared")
    tok = load_tokenizer(work / "tokenizer")
    table = load_sid_table(work / "tokenizer")
    cfg = CONFIG
    seed_everything(0)
    model = build_model(cfg, tok.vocab)
    ex = training_examples(cfg, split, table.tokens(tok.vocab), tok.vocab)
    ex = {k: v[:N_EXAMPLES] for k, v in ex.items()}
    train_cfg = TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=1e-2, warmup_steps=2, seed=0)
    trainer = Trainer(
        model,
        train_cfg,
        batches=lambda e: iterate_batches(ex, BATCH, True, e),
        n_batches=N_EXAMPLES // BATCH,
        n_examples=n_targets(ex),
        validate=None,
        out_dir=out / "run",
        tokenizer_fingerprint=tok.fingerprint,
        progress=False,
    )
    trainer.fit()
    if rank == 0:
        torch.save(model.state_dict(), out / "weights.pt")
    shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
