"""Fixtures of the model tests (helpers live in model_helpers.py)."""

from __future__ import annotations

import numpy as np
import pytest
from model_helpers import ARCHS, N_ITEMS, VOCAB, fresh_model, random_catalog, train_briefly

from freshrec.model.base import GenerativeRecommender
from freshrec.semid.trie import SidTrie
from freshrec.semid.vocab import SidVocab


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
