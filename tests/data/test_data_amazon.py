"""The Amazon Reviews 2023 loader on the fixture folder (real layout, a dozen users/items)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from freshrec.data import load_amazon, load_dataset, official_split, split_stats
from freshrec.errors import ConfigError

CAT = "Video_Games"


def _rows(ds) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user": np.array(ds.user_ids)[ds.interactions.user],
            "item": np.array(ds.items.ids)[ds.interactions.item],
            "ts": ds.interactions.ts,
        }
    )


def test_loads_fixture(amazon_dir: Path) -> None:
    ds = load_amazon(amazon_dir, CAT)
    assert ds.name == CAT
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (12, 12, 75)
    assert ds.meta["dropped_items_without_interactions"] == 1  # the unreleased demo disc
    assert ds.items.ids == sorted(ds.items.ids)
    assert ds.user_ids == sorted(ds.user_ids)
    assert "Unreleased Demo Disc" not in ds.items.titles
    inter = ds.interactions
    assert np.array_equal(np.lexsort((inter.item, inter.ts, inter.user)), np.arange(75))


def test_timestamps_are_converted_to_seconds(amazon_dir: Path) -> None:
    ds = load_amazon(amazon_dir, CAT)
    raw = pl.read_csv(amazon_dir / f"{CAT}.csv", schema_overrides={"timestamp": pl.Int64})
    want = raw.select(
        user=pl.col("user_id"), item=pl.col("parent_asin"), ts=pl.col("timestamp") // 1000
    )
    assert _rows(ds).sort(pl.all()).equals(want.sort(pl.all()))
    assert ds.interactions.ts.max() < 10**10  # seconds, not milliseconds


def test_item_text_composition(amazon_dir: Path) -> None:
    ds = load_amazon(amazon_dir, CAT)
    texts = dict(zip(ds.items.titles, ds.items.texts, strict=True))
    assert texts["Space Miner 2"] == (
        "Space Miner 2. Categories: Video Games, PC, Games. Features: 2 players; "
        "Online multiplayer."
    )
    assert texts["Chess Master 3000"] == (
        "Chess Master 3000. Categories: Video Games, PC, Games. "
        "Description: A game about chess master 3000. Rated E."
    )
    # empty lists leave their part out; non-ASCII is kept
    assert texts["Kart Mania"] == "Kart Mania. Features: 4 players; Online multiplayer."
    assert texts["Word Wizard"] == "Word Wizard. Categories: Video Games, PC, Games."
    assert texts["Café Tycoon"].startswith("Café Tycoon. Categories: ")
    # description truncated to ~1000 characters
    long = texts["Retro Racer: Turbo Edition"]
    desc = long.split("Description: ", 1)[1]
    assert len(desc) == 1000
    assert desc.endswith("…")
    assert texts['Dungeon Crawl "Classic"'].startswith('Dungeon Crawl "Classic".')


def test_description_limit_is_configurable(amazon_dir: Path) -> None:
    ds = load_amazon(amazon_dir, CAT, max_description_chars=50)
    long = ds.items.texts[ds.items.titles.index("Retro Racer: Turbo Edition")]
    assert len(long.split("Description: ", 1)[1]) <= 50


def test_official_split_files(amazon_dir: Path) -> None:
    plain = load_amazon(amazon_dir, CAT)
    ds = load_amazon(amazon_dir, CAT, official_split=True)
    assert ds.meta["files"] == [f"{CAT}.{p}.csv" for p in ("train", "valid", "test")]
    # the union of the three files is the interaction set
    assert _rows(ds).equals(_rows(plain))
    part = ds.meta["official_part"]
    assert part.dtype == np.int8
    assert part.shape == (75,)
    assert np.bincount(part).tolist() == [60, 5, 10]
    # each interaction is labelled with the file it came from
    folder = amazon_dir / "5core_timestamp_w_his"
    rows = _rows(ds).with_columns(part=pl.Series(part))
    for k, name in enumerate(("train", "valid", "test")):
        raw = pl.read_csv(folder / f"{CAT}.{name}.csv", schema_overrides={"timestamp": pl.Int64})
        want = raw.select(
            user=pl.col("user_id"), item=pl.col("parent_asin"), ts=pl.col("timestamp") // 1000
        )
        got = rows.filter(pl.col("part") == k).drop("part")
        assert got.sort(pl.all()).equals(want.sort(pl.all()))


def test_official_split_follows_parts(amazon_dir: Path) -> None:
    ds = load_amazon(amazon_dir, CAT, official_split=True)
    split = official_split(ds)
    stats = split_stats(split)
    assert split.scheme == "official"
    assert stats["train_interactions"] == 60
    assert stats["valid_interactions"] == 5
    assert stats["test_interactions"] == 10
    # one test user's first interaction is in the test period: no history, skipped
    assert split.skipped == {"valid_empty_history": 0, "test_empty_history": 1}
    assert len(split.test) == 9
    # the item that appears only in the test file is new and its requests are cold
    new = np.flatnonzero(split.is_new)
    assert [ds.items.titles[i] for i in new] == ["Word Wizard"]
    assert np.array_equal(split.test.cold, np.isin(split.test.target, new))
    assert split.cutoffs is not None
    c1, c2 = split.cutoffs
    assert split.seq_ts[split.seq_offsets[split.valid.user] + split.valid.pos].min() == c1
    assert split.seq_ts[split.seq_offsets[split.test.user] + split.test.pos].min() >= c2


def test_official_split_needs_parts(amazon_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"official_split=True"):
        official_split(load_amazon(amazon_dir, CAT))


def test_split_files_found_at_top_level(amazon_dir: Path) -> None:
    for p in ("train", "valid", "test"):
        src = amazon_dir / "5core_timestamp_w_his" / f"{CAT}.{p}.csv"
        src.rename(amazon_dir / src.name)
    ds = load_dataset("amazon", amazon_dir, category=CAT, official_split=True)
    assert len(ds.interactions) == 75


def test_load_dataset_needs_category(amazon_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"amazon loader: .*category"):
        load_dataset("amazon", amazon_dir)
