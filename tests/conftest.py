"""Shared fixtures: the bundled MovieLens data, its default time split, real MiniLM item
embeddings (computed once, cached on disk) and semantic IDs fitted on the warm items; and the
synthetic tiny-vocab catalog with briefly trained tiny models of the model / recommend tests
(helpers in model_helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from freshrec.data import Dataset, Split, load_movielens, time_split
from freshrec.model.base import GenerativeRecommender
from freshrec.semid.trie import SidTrie
from freshrec.semid.vocab import SidVocab
from model_helpers import ARCHS, N_ITEMS, VOCAB, fresh_model, random_catalog, train_briefly

REPO = Path(__file__).resolve().parents[1]
ML_DIR = REPO / "data" / "ml-latest-small"
# Git-ignored; survives between local runs so only the first session pays for embeddings.
TEST_CACHE = REPO / ".freshrec" / "test-cache"

# Tests share 2 cores with each other's subprocesses; one intra-op thread keeps timings stable.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ml_dir() -> Path:
    """The bundled MovieLens latest-small folder (ratings.csv, movies.csv, README.txt)."""
    return ML_DIR


@pytest.fixture(scope="session")
def ml_dataset(ml_dir: Path) -> Dataset:
    return load_movielens(ml_dir)


@pytest.fixture(scope="session")
def ml_split(ml_dataset: Dataset) -> Split:
    """The default time split (80/10/10 of the time span) of the bundled MovieLens."""
    return time_split(ml_dataset)


@pytest.fixture(scope="session")
def ml_emb(ml_dataset: Dataset) -> np.ndarray:
    """float32[n_items, 384]: MiniLM embeddings of every catalog movie, row = item index.

    Cached in .freshrec/test-cache/ so only the first session pays (~40 s on 2 idle cores).
    """
    from freshrec.embed import embed_texts

    threads = torch.get_num_threads()
    # Nothing else runs inside this fixture: use both cores for the one-off embedding.
    torch.set_num_threads(max(threads, min(2, os.cpu_count() or 1)))
    try:
        emb = embed_texts(ml_dataset.items.texts, cache_dir=TEST_CACHE, progress=False)
    finally:
        torch.set_num_threads(threads)
    emb.setflags(write=False)
    return emb


@pytest.fixture(scope="session")
def ml_sids(ml_split: Split, ml_emb: np.ndarray):  # -> tuple[SemanticTokenizer, SidTable]
    """(tokenizer, SidTable): default residual k-means fitted on warm items, new items
    assigned without refitting — what `freshrec tokenize` produces."""
    from freshrec.semid import SemIdConfig, assign_new_items, fit_sids

    is_new = np.asarray(ml_split.is_new, dtype=bool)
    warm, new = np.flatnonzero(~is_new), np.flatnonzero(is_new)
    tok, table = fit_sids(SemIdConfig(), ml_emb[warm], warm, ml_split.dataset.n_items)
    return tok, assign_new_items(tok, table, ml_emb[new], new)


# ------------------------------------------------------------- synthetic tiny vocab/models
@pytest.fixture(scope="session")
def vocab() -> SidVocab:
    return VOCAB


@pytest.fixture(scope="session")
def catalog() -> np.ndarray:
    """sids int64[N_ITEMS, sid_len] of items 0..N_ITEMS-1."""
    return random_catalog(VOCAB, N_ITEMS)


@pytest.fixture(scope="session")
def sid_tokens(catalog: np.ndarray) -> np.ndarray:
    return np.asarray(VOCAB.to_tokens(catalog))


@pytest.fixture(scope="session")
def trie(catalog: np.ndarray) -> SidTrie:
    return SidTrie.build(catalog, np.arange(N_ITEMS), VOCAB)


@pytest.fixture(scope="session")
def trained(sid_tokens: np.ndarray) -> dict[str, GenerativeRecommender]:
    """One briefly trained model per arch (session-scoped; do not modify)."""
    models = {}
    for arch in ARCHS:
        m = fresh_model(arch, seed=1)
        train_briefly(m, sid_tokens)
        models[arch] = m
    return models
