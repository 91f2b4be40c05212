"""MovieLens loader (`ratings.csv` + `movies.csv`, the ml-latest / ml-20m / ml-25m layout).

ratings.csv: `userId,movieId,rating,timestamp` (unix seconds). movies.csv: `movieId,title,genres`
with `|`-separated genres. Item text: "Toy Story (1995). Genres: Adventure, Animation." The
catalog is the movies with at least one rating, in movieId order; users in userId order.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from freshrec.data.assemble import assemble
from freshrec.data.files import CsvFile, read_csv
from freshrec.data.schema import Dataset
from freshrec.data.text import GENRES, text_expr
from freshrec.data.validate import (
    check_known,
    check_present,
    check_unique,
    parse_float,
    parse_int,
    parse_timestamps,
)

NO_GENRES = "(no genres listed)"


def load_movielens(path: str | Path, *, name: str | None = None) -> Dataset:
    """Load a MovieLens folder into a Dataset.

    meta: source, path, n_metadata_items (rows of movies.csv) and dropped_unrated_items (movies
    without any rating, left out of the catalog). Raises DataError for malformed files.
    """
    root = Path(path)
    mf, rf = CsvFile(root / "movies.csv"), CsvFile(root / "ratings.csv")

    movies = read_csv(mf.path, ["movieId", "title", "genres"])
    movies = movies.with_columns(parse_int(movies, "movieId", mf).alias("movieId"))
    check_unique(movies, "movieId", mf)
    check_present(movies, "title", mf, what="title")

    ratings = read_csv(rf.path, ["userId", "movieId", "rating", "timestamp"])
    ratings = ratings.with_columns(
        parse_int(ratings, "userId", rf).alias("userId"),
        parse_int(ratings, "movieId", rf).alias("movieId"),
        parse_float(ratings, "rating", rf).alias("rating"),
    )
    ts = parse_timestamps(ratings, "timestamp", rf, unit="s")
    check_known(ratings, "movieId", movies["movieId"], rf, mf.path)

    rated = ratings["movieId"].unique().implode()
    catalog = movies.filter(pl.col("movieId").is_in(rated)).sort("movieId")
    genres = (
        pl.when(pl.col("genres").str.strip_chars() == NO_GENRES)
        .then(None)
        .otherwise(pl.col("genres").str.strip_chars().str.replace_all(r"\s*\|\s*", ", "))
    )
    items = catalog.select(
        key=pl.col("movieId"),
        title=pl.col("title").str.strip_chars(),
        text=text_expr(pl.col("title"), [(GENRES, genres)], collapse=False),
    )
    inter = pl.DataFrame(
        {"user": ratings["userId"], "item": ratings["movieId"], "ts": ts},
    )
    meta = {
        "source": "movielens",
        "path": str(root),
        "n_metadata_items": movies.height,
        "dropped_unrated_items": movies.height - catalog.height,
    }
    return assemble(name or root.name, items, inter, meta)
