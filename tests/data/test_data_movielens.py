"""The MovieLens loader on the bundled ml-latest-small."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from freshrec.data import Dataset, load_dataset


def test_sizes_and_meta(ml_dataset: Dataset) -> None:
    assert ml_dataset.name == "ml-latest-small"
    assert ml_dataset.n_users == 610
    assert ml_dataset.n_items == 9724  # 9,742 movies, 18 never rated
    assert len(ml_dataset.interactions) == 100_836
    assert ml_dataset.meta["dropped_unrated_items"] == 18
    assert ml_dataset.meta["n_metadata_items"] == 9742


def test_dtypes_and_order(ml_dataset: Dataset) -> None:
    inter = ml_dataset.interactions
    assert inter.user.dtype == np.int32
    assert inter.item.dtype == np.int32
    assert inter.ts.dtype == np.int64
    order = np.lexsort((inter.item, inter.ts, inter.user))
    assert np.array_equal(order, np.arange(len(inter)))
    assert inter.user.min() == 0
    assert inter.user.max() == ml_dataset.n_users - 1
    assert np.unique(inter.item).size == ml_dataset.n_items  # every catalog item is rated


def test_indices_follow_ids_ascending(ml_dataset: Dataset) -> None:
    movie_ids = [int(x) for x in ml_dataset.items.ids]
    user_ids = [int(x) for x in ml_dataset.user_ids]
    assert movie_ids == sorted(movie_ids)
    assert user_ids == sorted(user_ids) == list(range(1, 611))


def test_interactions_match_ratings_csv(ml_dataset: Dataset, ml_dir: Path) -> None:
    raw = pl.read_csv(ml_dir / "ratings.csv")
    ds = ml_dataset
    got = pl.DataFrame(
        {
            "userId": np.array(ds.user_ids, dtype=np.int64)[ds.interactions.user],
            "movieId": np.array(ds.items.ids, dtype=np.int64)[ds.interactions.item],
            "timestamp": ds.interactions.ts,
        }
    )
    want = raw.select("userId", "movieId", "timestamp").sort("userId", "timestamp", "movieId")
    assert got.sort("userId", "timestamp", "movieId").equals(want)


def test_item_texts(ml_dataset: Dataset) -> None:
    index = ml_dataset.items.index_of()
    toy = index["1"]
    assert ml_dataset.items.titles[toy] == "Toy Story (1995)"
    assert (
        ml_dataset.items.texts[toy]
        == "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy."
    )
    # a quoted title with a comma
    assert ml_dataset.items.titles[index["11"]] == "American President, The (1995)"
    # "(no genres listed)" is omitted
    assert ml_dataset.items.texts[index["114335"]] == "La cravate (1957)."
    assert all(t.strip() for t in ml_dataset.items.texts)


def test_load_dataset_dispatch(ml_dir: Path, ml_dataset: Dataset) -> None:
    ds = load_dataset("movielens", ml_dir)
    assert ds.items.ids == ml_dataset.items.ids
    assert np.array_equal(ds.interactions.ts, ml_dataset.interactions.ts)
