"""Residual k-means SIDs on real MiniLM embeddings of all 9.7k MovieLens movies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from freshrec.errors import CheckpointError, ConfigError, DataError
from freshrec.semid import (
    ResidualKMeansTokenizer,
    SemIdConfig,
    SidTable,
    assign_new_items,
    build_sid_table,
    fit_sids,
    load_sid_table,
    load_tokenizer,
    make_tokenizer,
    report_table,
    sid_report,
)
from freshrec.semid.trie import SidTrie


@pytest.fixture(scope="module")
def fitted(ml_emb: np.ndarray) -> tuple[ResidualKMeansTokenizer, SidTable]:
    n = ml_emb.shape[0]
    tok, table = fit_sids(SemIdConfig(), ml_emb, np.arange(n), n)
    assert isinstance(tok, ResidualKMeansTokenizer)
    return tok, table


def test_all_items_get_unique_sids(
    ml_emb: np.ndarray, fitted: tuple[ResidualKMeansTokenizer, SidTable]
) -> None:
    tok, table = fitted
    n = ml_emb.shape[0]
    assert table.sids.shape == (n, 4)
    assert table.sids.dtype == np.int64
    assert table.assigned_mask.all()
    rep = sid_report(table, tok.vocab)
    assert rep["sids_unique"]
    assert rep["n_unique_sids"] == n
    assert min(rep["utilisation"]) > 0.9
    assert rep["collision_rate"] < 0.3
    assert rep["largest_collision_group"] <= 32
    assert (table.codes >= 0).all()
    assert (table.codes < 64).all()
    tokens = table.tokens(tok.vocab)
    trie = SidTrie.from_table(table, tok.vocab)  # the prefix trie accepts the table directly
    assert len(trie) == n
    np.testing.assert_array_equal(trie.lookup(table.sids), np.arange(n))
    assert tokens.min() >= 2
    assert tokens.max() < tok.vocab.user_offset
    Console(width=80, file=None, record=True).print(report_table(rep))


def test_level1_codes_group_similar_movies(
    ml_emb: np.ndarray, fitted: tuple[ResidualKMeansTokenizer, SidTable]
) -> None:
    _, table = fitted
    sim = ml_emb[:2000] @ ml_emb[:2000].T
    np.fill_diagonal(sim, -2.0)
    nn = sim.argmax(axis=1)
    agree = (table.codes[:2000, 0] == table.codes[nn, 0]).mean()
    assert agree > 0.3  # random codes would agree ~1/64 of the time


def test_encode_is_deterministic_and_row_independent(
    ml_emb: np.ndarray, fitted: tuple[ResidualKMeansTokenizer, SidTable]
) -> None:
    tok, table = fitted
    codes = tok.encode(ml_emb)
    np.testing.assert_array_equal(codes, table.codes)
    idx = np.array([5, 17, 4000, 9000, 3])
    np.testing.assert_array_equal(tok.encode(ml_emb[idx]), codes[idx])
    np.testing.assert_array_equal(tok.encode(ml_emb[idx].astype(np.float64)), codes[idx])


def test_blocked_encode_equals_one_pass(
    ml_emb: np.ndarray, fitted: tuple[ResidualKMeansTokenizer, SidTable], monkeypatch
) -> None:
    """Encoding in blocks (the default: ENCODE_BLOCK rows) gives the one-pass codes."""
    import freshrec.semid.rkmeans as rkmeans

    tok, _ = fitted
    blocked = tok.encode(ml_emb)
    assert ml_emb.shape[0] > rkmeans.ENCODE_BLOCK
    monkeypatch.setattr(rkmeans, "ENCODE_BLOCK", 10**9)
    np.testing.assert_array_equal(tok.encode(ml_emb), blocked)
    monkeypatch.setattr(rkmeans, "ENCODE_BLOCK", 7)
    np.testing.assert_array_equal(tok.encode(ml_emb[:100]), blocked[:100])


def test_same_seed_same_sids_other_seed_other_fingerprint(
    ml_emb: np.ndarray, fitted: tuple[ResidualKMeansTokenizer, SidTable]
) -> None:
    tok, table = fitted
    n = ml_emb.shape[0]
    tok2, table2 = fit_sids(SemIdConfig(), ml_emb, np.arange(n), n)
    assert tok2.fingerprint == tok.fingerprint
    assert len(tok.fingerprint) == 16
    np.testing.assert_array_equal(table2.sids, table.sids)
    tok3 = make_tokenizer(SemIdConfig()).fit(ml_emb, seed=1)
    assert tok3.config.seed == 1
    assert tok3.fingerprint != tok.fingerprint
    assert not np.array_equal(tok3.encode(ml_emb), table.codes)


def test_warm_fit_then_assign_new_items(ml_emb: np.ndarray) -> None:
    n = ml_emb.shape[0]
    perm = np.random.default_rng(0).permutation(n)
    warm, new = np.sort(perm[: int(0.8 * n)]), np.sort(perm[int(0.8 * n) :])
    tok, warm_table = fit_sids(SemIdConfig(), ml_emb[warm], warm, n)
    before = warm_table.sids.copy()
    fp = tok.fingerprint
    full = assign_new_items(tok, warm_table, ml_emb[new], new)
    np.testing.assert_array_equal(full.sids[warm], before[warm])  # bit-for-bit
    np.testing.assert_array_equal(warm_table.sids, before)
    assert tok.fingerprint == fp  # no refit
    assert full.assigned_mask.all()
    assert sid_report(full, tok.vocab)["sids_unique"]
    np.testing.assert_array_equal(full.codes[new], tok.encode(ml_emb[new]))
    # New items in two batches end up with the same SIDs as in one batch.
    half = new.size // 2
    step = assign_new_items(tok, warm_table, ml_emb[new[:half]], new[:half])
    step = assign_new_items(tok, step, ml_emb[new[half:]], new[half:])
    np.testing.assert_array_equal(step.sids, full.sids)
    with pytest.raises(DataError, match="already has a SID"):
        assign_new_items(tok, full, ml_emb[new[:1]], new[:1])


def test_collision_overflow_on_real_data(ml_emb: np.ndarray) -> None:
    cfg = SemIdConfig(n_levels=1, codebook_size=16, max_collision=64)
    tok = make_tokenizer(cfg).fit(ml_emb[:3000])
    with pytest.raises(ConfigError, match=r"max_collision=64.*increase max_collision or codebook"):
        build_sid_table(tok, ml_emb[:3000], np.arange(3000), 3000)


def test_save_load_round_trip(
    ml_emb: np.ndarray, fitted: tuple[ResidualKMeansTokenizer, SidTable], tmp_path: Path
) -> None:
    tok, table = fitted
    folder = tok.save(tmp_path / "tok", table)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "params.safetensors",
        "sid_table.npz",
    ]
    loaded = load_tokenizer(folder)
    assert isinstance(loaded, ResidualKMeansTokenizer)
    assert loaded.fingerprint == tok.fingerprint
    assert loaded.config == tok.config
    assert loaded.vocab == tok.vocab
    np.testing.assert_array_equal(loaded.encode(ml_emb), table.codes)
    assert load_sid_table(folder) == table
    # Saving again without a table replaces the folder as a whole.
    tok.save(folder)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_sid_table(folder)


def test_load_rejects_missing_or_corrupt_folders(
    fitted: tuple[ResidualKMeansTokenizer, SidTable], tmp_path: Path
) -> None:
    tok, _ = fitted
    with pytest.raises(CheckpointError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
    folder = tok.save(tmp_path / "tok")
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["seed"] = 123
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_tokenizer(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_tokenizer(folder)
    folder = tok.save(tmp_path / "tok")
    data = (folder / "params.safetensors").read_bytes()
    (folder / "params.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_tokenizer(folder)
    (folder / "params.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no params\.safetensors"):
        load_tokenizer(folder)


def test_bad_inputs(ml_emb: np.ndarray, fitted: tuple[ResidualKMeansTokenizer, SidTable]) -> None:
    tok, _ = fitted
    bad = ml_emb[:500].copy()
    bad[5, 0] = np.nan
    with pytest.raises(DataError, match="row 5 contains NaN"):
        make_tokenizer().fit(bad)
    with pytest.raises(DataError, match="row 5 contains NaN"):
        tok.encode(bad)
    with pytest.raises(ConfigError, match="dimension 10"):
        tok.encode(ml_emb[:3, :10])
    with pytest.raises(ConfigError, match="not fitted"):
        make_tokenizer().encode(ml_emb[:3])
    with pytest.raises(ConfigError, match="lower codebook_size"):
        make_tokenizer().fit(ml_emb[:10])


def test_config_validation() -> None:
    assert SemIdConfig().whiten is True
    assert SemIdConfig(kind="rqvae").whiten is False
    assert SemIdConfig().vocab.sid_len == 4
    with pytest.raises(ConfigError, match="codebook_size"):
        SemIdConfig.from_dict({"codebook_size": 1})
    with pytest.raises(ConfigError, match="colour"):
        SemIdConfig.from_dict({"colour": "red"})
    with pytest.raises(ConfigError, match="kind"):
        ResidualKMeansTokenizer(SemIdConfig(kind="rqvae"))
    cfg = SemIdConfig(codebook_size=32, seed=3)
    assert SemIdConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
