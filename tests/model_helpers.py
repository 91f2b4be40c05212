"""Helpers of the model tests: a tiny SID vocab and catalog, synthetic splits, tiny models.

Everything is synthetic (random codes built with `SidVocab`) and seeded, so the tests do not
depend on the data/semid stages and run in seconds.
"""

from __future__ import annotations

import numpy as np
import torch

from freshrec.data.schema import Dataset, Interactions, Items, Requests, Split
from freshrec.model.base import GenerativeRecommender, build_model
from freshrec.model.batches import causal_windows, iterate_batches, tiger_examples
from freshrec.model.config import ModelConfig
from freshrec.semid.vocab import SidVocab

VOCAB = SidVocab(n_levels=2, codebook_size=6, max_collision=4)
N_ITEMS = 60  # of the 6*6*4 = 144 possible SIDs
ARCHS = ("tiger", "causal")


def random_catalog(vocab: SidVocab, n: int, seed: int = 0) -> np.ndarray:
    """sids int64[n, sid_len]: n distinct random SIDs (row = item index)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(
        np.meshgrid(*[np.arange(s) for s in vocab.sizes], indexing="ij"), axis=-1
    ).reshape(-1, vocab.sid_len)
    return grid[rng.choice(len(grid), n, replace=False)].astype(np.int64)


def tiny_config(arch: str, **kw) -> ModelConfig:
    base = {
        "arch": arch,
        "d_model": 32,
        "d_ff": 64,
        "num_layers": 2,
        "num_heads": 2,
        "d_kv": 16,
        "dropout": 0.0,
        "max_history": 5,
        "activation": "relu" if arch == "tiger" else "silu",
    }
    base.update(kw)
    return ModelConfig(**base)


def make_split(seqs: list[list[int]], train_len: list[int], n_items: int) -> Split:
    """A Split over hand-made sequences (no valid/test requests)."""
    lens = [len(s) for s in seqs]
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    items = np.concatenate([np.asarray(s, dtype=np.int32) for s in seqs])
    users = np.repeat(np.arange(len(seqs)), lens).astype(np.int32)
    ts = np.arange(len(items), dtype=np.int64)
    ids = [str(i) for i in range(n_items)]
    ds = Dataset(
        name="synthetic",
        user_ids=[f"u{u}" for u in range(len(seqs))],
        items=Items(ids, ids, ids),
        interactions=Interactions(users, items, ts),
    )
    empty = Requests(
        np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, bool)
    )
    return Split(
        dataset=ds,
        seq_offsets=offsets,
        seq_items=items,
        seq_ts=ts,
        train_len=np.asarray(train_len, dtype=np.int64),
        valid=empty,
        test=empty,
        is_new=np.zeros(n_items, dtype=bool),
        scheme="time",
        cutoffs=(0, 0),
    )


def pattern_split(n_users: int = 40, length: int = 14, seed: int = 0) -> Split:
    """Learnable synthetic sequences: item_{t+1} = (item_t * 7 + 3) % N_ITEMS, 10% noise."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_users):
        s = [int(rng.integers(N_ITEMS))]
        for _ in range(length - 1):
            nxt = (s[-1] * 7 + 3) % N_ITEMS
            s.append(int(rng.integers(N_ITEMS)) if rng.random() < 0.1 else nxt)
        seqs.append(s)
    return make_split(seqs, [length] * n_users, N_ITEMS)


def random_histories(n: int, h: int, seed: int = 0, min_len: int = 1) -> np.ndarray:
    """int64[n, h] right-aligned item histories with -1 padding, lengths in [min_len, h]."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, N_ITEMS, size=(n, h))
    lengths = rng.integers(min_len, h + 1, size=n)
    out[np.arange(h)[None, :] < (h - lengths)[:, None]] = -1
    return out


def fresh_model(arch: str, seed: int = 0, **kw) -> GenerativeRecommender:
    torch.manual_seed(seed)
    return build_model(tiny_config(arch, **kw), VOCAB).eval()


def train_briefly(model: GenerativeRecommender, sid_tokens: np.ndarray, steps: int = 40) -> None:
    """A few AdamW steps on `pattern_split`, so the model's distributions are peaked."""
    split = pattern_split()
    H = model.config.max_history
    if model.arch == "tiger":
        ex = tiger_examples(split, sid_tokens, H)
    else:
        ex = causal_windows(split, sid_tokens, H)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    step, epoch = 0, 0
    while step < steps:
        for batch in iterate_batches(ex, 64, shuffle=True, seed=epoch):
            loss = model.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
        epoch += 1
    model.eval()


TINY_CAUSAL = [
    "model.recipe=causal_cpu",
    "model.d_model=32",
    "model.d_ff=64",
    "model.num_layers=1",
    "model.num_heads=2",
]
"""Recipe overrides of the tiny causal model that the CLI and pipeline tests train."""


def tiny_workspace(work, split: Split, tok, table, overrides: list[str]):
    """A `cpu` recipe's workspace under `work` holding the real split, tokenizer and the test
    embedding cache, and a tiny untrained TIGER checkpoint (seed 0) in work/run/best.
    Returns (recipe, model, checkpoint folder)."""
    import shutil
    from pathlib import Path

    from freshrec import pipeline
    from freshrec.config import load_recipe
    from freshrec.data.store import save_split
    from freshrec.embed import cache_path
    from freshrec.model.checkpoint import save_checkpoint

    recipe = load_recipe("cpu", [f"work_dir={work}", *overrides])
    ws = pipeline.workspace(recipe)
    save_split(split, ws.prepared)
    tok.save(ws.tokenizer, table)
    texts = split.dataset.items.texts
    dst = cache_path(ws.embeddings, texts)
    dst.parent.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parents[1]
    shutil.copy(cache_path(repo / ".freshrec" / "test-cache", texts), dst)
    torch.manual_seed(0)
    model = build_model(tiny_config("tiger", max_history=5), tok.vocab).eval()
    ckpt = save_checkpoint(model, Path(work) / "run" / "best", tok.fingerprint)
    return recipe, model, ckpt
