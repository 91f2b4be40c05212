"""The item-text formatter (data/text.py) that loaders, the service and the merge grid share."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from freshrec.data import Dataset
from freshrec.data.text import GENRES, clean_texts, item_text, item_texts, section_values


def test_item_text_matches_the_movielens_loader(ml_dir: Path, ml_dataset: Dataset):
    """Every bundled movie: the loader's text is `item_text` of its title and genres (MovieLens
    keeps whitespace runs inside titles, the formatter collapses them)."""
    movies = pl.read_csv(ml_dir / "movies.csv", schema_overrides={"movieId": pl.String})
    genres = dict(zip(movies["movieId"], movies["genres"], strict=True))
    items = ml_dataset.items
    cats = [[] if (g := genres[i]) == "(no genres listed)" else g.split("|") for i in items.ids]
    texts = item_texts(items.titles, {GENRES: cats})
    assert texts == clean_texts(items.texts)
    assert sum(a != b for a, b in zip(texts, items.texts, strict=True)) == 4  # "  " in titles
    assert item_text(items.titles[0], cats[0]) == items.texts[0]


def test_item_text_parts():
    assert item_text("A") == "A."
    assert item_text("Why?", ["x", " ", "y"], "  Long   text ") == (
        "Why? Genres: x, y. Description: Long text."
    )
    long = item_text("T", [], "w " * 800, label="Categories")
    assert long.startswith("T. Description: w w")
    assert long.endswith("w…")
    assert len(long) < 1020


def test_section_values_read_a_section_back():
    texts = pl.Series([item_text("T (1999)", ["Drama", "War"]), "No sections."])
    assert section_values(texts, GENRES).to_list() == ["Drama, War", None]
