"""Prepared-data store: round trip, atomic replacement, clear errors on missing/corrupt folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from freshrec.data import (
    Split,
    leave_one_out,
    load_amazon,
    load_split,
    official_split,
    save_split,
    split_stats,
)
from freshrec.data.store import content_hash
from freshrec.errors import DataError


def _same_array(x: np.ndarray, y: np.ndarray, what: str) -> None:
    assert x.dtype == y.dtype, what
    assert np.array_equal(x, y), what


def _assert_same(a: Split, b: Split) -> None:
    for name in ("seq_offsets", "seq_items", "seq_ts", "train_len", "is_new"):
        _same_array(getattr(a, name), getattr(b, name), name)
    for part in ("valid", "test"):
        for f in ("user", "pos", "target", "cold"):
            _same_array(getattr(getattr(a, part), f), getattr(getattr(b, part), f), f"{part}.{f}")
    assert (a.scheme, a.cutoffs, a.skipped) == (b.scheme, b.cutoffs, b.skipped)
    da, db = a.dataset, b.dataset
    assert da.name == db.name
    assert da.user_ids == db.user_ids
    assert da.items == db.items
    for f in ("user", "item", "ts"):
        _same_array(getattr(da.interactions, f), getattr(db.interactions, f), f)
    assert da.meta.keys() == db.meta.keys()
    assert content_hash(a) == content_hash(b)


def test_round_trip_movielens(ml_split: Split, tmp_path: Path) -> None:
    folder = save_split(ml_split, tmp_path / "prepared")
    assert sorted(p.name for p in folder.iterdir()) == [
        "interactions.parquet",
        "items.parquet",
        "meta.json",
        "split.npz",
        "users.parquet",
    ]
    back = load_split(folder)
    _assert_same(ml_split, back)
    assert back.dataset.meta == ml_split.dataset.meta
    assert split_stats(back) == split_stats(ml_split)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["scheme"] == "time"
    assert meta["cutoffs"] == list(ml_split.cutoffs)
    assert meta["dataset_meta"]["dropped_unrated_items"] == 18
    assert meta["content_hash"] == content_hash(ml_split)


def test_round_trip_official_split_keeps_array_meta(amazon_dir: Path, tmp_path: Path) -> None:
    split = official_split(load_amazon(amazon_dir, "Video_Games", official_split=True))
    back = load_split(save_split(split, tmp_path / "prepared"))
    _assert_same(split, back)
    assert np.array_equal(back.dataset.meta["official_part"], split.dataset.meta["official_part"])
    # the reloaded dataset can be split again the same way
    _assert_same(official_split(back.dataset), split)


def test_overwrite_replaces_folder(ml_dataset, ml_split: Split, tmp_path: Path) -> None:
    folder = tmp_path / "prepared"
    save_split(ml_split, folder)
    loo = leave_one_out(ml_dataset)
    save_split(loo, folder)
    back = load_split(folder)
    assert back.scheme == "loo"
    assert back.cutoffs is None
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]  # no temp folders left


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"prepared data folder not found"):
        load_split(tmp_path / "nothing")


def test_incomplete_folder(ml_split: Split, tmp_path: Path) -> None:
    folder = save_split(ml_split, tmp_path / "prepared")
    (folder / "split.npz").unlink()
    with pytest.raises(DataError, match=r"incomplete: missing split.npz"):
        load_split(folder)


def test_corrupt_file(ml_split: Split, tmp_path: Path) -> None:
    folder = save_split(ml_split, tmp_path / "prepared")
    (folder / "items.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"cannot read prepared data"):
        load_split(folder)


def test_modified_content_fails_hash(ml_split: Split, tmp_path: Path) -> None:
    folder = save_split(ml_split, tmp_path / "prepared")
    with np.load(folder / "split.npz") as npz:
        arrays = dict(npz)
    arrays["is_new"][0] = ~arrays["is_new"][0]
    np.savez(folder / "split.npz", **arrays)
    with pytest.raises(DataError, match=r"does not match its content hash"):
        load_split(folder)


def test_unknown_format(ml_split: Split, tmp_path: Path) -> None:
    folder = save_split(ml_split, tmp_path / "prepared")
    meta = json.loads((folder / "meta.json").read_text())
    meta["format"] = "freshrec.split/99"
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"unsupported prepared-data format"):
        load_split(folder)
