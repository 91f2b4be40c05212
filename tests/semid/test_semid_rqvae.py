"""RQ-VAE SIDs: a tiny config on real MiniLM embeddings of a MovieLens subset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from freshrec.semid import (
    RQVAETokenizer,
    SemIdConfig,
    SidTable,
    assign_new_items,
    fit_sids,
    load_tokenizer,
    sid_report,
)

TINY = SemIdConfig(
    kind="rqvae",
    codebook_size=32,
    hidden_dims=(64,),
    latent_dim=16,
    epochs=8,
    batch_size=128,
    lr=2e-3,
)
N_WARM = 2400


@pytest.fixture(scope="module")
def fitted(ml_emb: np.ndarray) -> tuple[RQVAETokenizer, SidTable]:
    tok, table = fit_sids(TINY, ml_emb[:N_WARM], np.arange(N_WARM), N_WARM + 600)
    assert isinstance(tok, RQVAETokenizer)
    return tok, table


def test_unique_sids_and_utilisation(fitted: tuple[RQVAETokenizer, SidTable]) -> None:
    tok, table = fitted
    rep = sid_report(table, tok.vocab)
    assert rep["n_assigned"] == N_WARM
    assert rep["sids_unique"]
    assert min(rep["utilisation"]) > 0.5, rep
    assert rep["largest_collision_group"] < 64
    assert len(tok.history) == TINY.epochs
    assert tok.history[-1]["recon"] < tok.history[0]["recon"]


def test_deterministic_for_a_seed(
    ml_emb: np.ndarray, fitted: tuple[RQVAETokenizer, SidTable]
) -> None:
    tok, table = fitted
    tok2, table2 = fit_sids(TINY, ml_emb[:N_WARM], np.arange(N_WARM), N_WARM + 600)
    assert tok2.fingerprint == tok.fingerprint
    np.testing.assert_array_equal(table2.sids, table.sids)
    other = RQVAETokenizer(TINY.model_copy(update={"epochs": 2})).fit(ml_emb[:N_WARM], seed=7)
    assert other.fingerprint != tok.fingerprint


def test_new_items_and_save_load(
    ml_emb: np.ndarray, fitted: tuple[RQVAETokenizer, SidTable], tmp_path: Path
) -> None:
    tok, table = fitted
    new = np.arange(N_WARM, N_WARM + 600)
    full = assign_new_items(tok, table, ml_emb[new], new)
    np.testing.assert_array_equal(full.sids[:N_WARM], table.sids[:N_WARM])
    assert full.assigned_mask.all()
    assert sid_report(full, tok.vocab)["sids_unique"]
    loaded = load_tokenizer(tok.save(tmp_path / "rq", full))
    assert isinstance(loaded, RQVAETokenizer)
    assert loaded.fingerprint == tok.fingerprint
    np.testing.assert_array_equal(loaded.encode(ml_emb[: N_WARM + 600]), full.codes)
    idx = np.array([3, 2500, 10])
    np.testing.assert_array_equal(loaded.encode(ml_emb[idx]), full.codes[idx])
    assert loaded.reconstruct(ml_emb[:5]).shape == (5, ml_emb.shape[1])
