"""Amazon Reviews 2023 loader (the layout used by the generative-recommendation papers).

Files in one folder, `<Category>` e.g. `Video_Games`:
- `<Category>.csv`: `user_id,parent_asin,rating,timestamp`, timestamp in unix **milliseconds**.
- `meta_<Category>.jsonl`: one JSON object per line; `parent_asin`, `title`, `features`,
  `categories`, `description` (lists of strings) are used, other fields are ignored.
- optional official 5-core timestamp split (`5core_timestamp_w_his`, here or in a subfolder
  of that name): `<Category>.train.csv`, `.valid.csv`, `.test.csv` with header
  `user_id,parent_asin,rating,timestamp,history`.

Item text: "Title. Categories: a, b. Features: x; y. Description: ..." (description cut to
`max_description_chars`). The catalog is the items with interactions, in parent_asin order.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from freshrec.data.assemble import assemble
from freshrec.data.files import ROW, CsvFile, JsonlFile, read_csv, read_jsonl
from freshrec.data.schema import Dataset
from freshrec.data.text import CATEGORIES, DESCRIPTION, FEATURES, text_expr, truncate
from freshrec.data.validate import (
    check_known,
    check_present,
    check_unique,
    parse_float,
    parse_timestamps,
)
from freshrec.errors import DataError

META_SCHEMA: dict[str, pl.DataType] = {
    "parent_asin": pl.String(),
    "title": pl.String(),
    "features": pl.List(pl.String()),
    "categories": pl.List(pl.String()),
    "description": pl.List(pl.String()),
}
RATING_COLUMNS = ["user_id", "parent_asin", "rating", "timestamp"]
PARTS = ("train", "valid", "test")
SPLIT_FOLDER = "5core_timestamp_w_his"


def _find_split_file(root: Path, name: str) -> Path:
    """`root/name`, else `root/5core_timestamp_w_his/name`; DataError when neither exists."""
    for candidate in (root / name, root / SPLIT_FOLDER / name):
        if candidate.exists():
            return candidate
    raise DataError(
        f"official split file not found in {root} nor in {root / SPLIT_FOLDER}; get it from "
        f"the Amazon Reviews 2023 benchmark files ({SPLIT_FOLDER}) or load without "
        f"official_split=True",
        file=name,
    )


def _joined(col: str, sep: str) -> pl.Expr:
    """A list-of-strings field joined with `sep`, empty entries dropped; null when empty."""
    joined = (
        pl.col(col)
        .list.eval(pl.element().filter(pl.element().str.strip_chars() != ""))
        .list.join(sep, ignore_nulls=True)
    )
    return pl.when(joined.str.strip_chars() == "").then(None).otherwise(joined)


def _read_ratings(f: CsvFile, known: pl.Series, meta_path: Path) -> pl.DataFrame:
    df = read_csv(f.path, RATING_COLUMNS)
    check_present(df, "user_id", f)
    check_present(df, "parent_asin", f)
    parse_float(df, "rating", f)
    ts = parse_timestamps(df, "timestamp", f, unit="ms")
    df = df.with_columns(pl.col("user_id", "parent_asin").str.strip_chars())
    check_known(df, "parent_asin", known, f, meta_path)
    return pl.DataFrame({"user": df["user_id"], "item": df["parent_asin"], "ts": ts})


def load_amazon(
    path: str | Path,
    category: str,
    *,
    official_split: bool = False,
    max_description_chars: int = 1000,
) -> Dataset:
    """Load one Amazon Reviews 2023 category into a Dataset.

    official_split: read the interactions from the three official split files instead of
    `<Category>.csv`; `meta["official_part"]` (int8[n_interactions], 0 train / 1 valid /
    2 test, aligned with the sorted interactions) records each one's part for
    `freshrec.data.split.official_split`. Raises DataError for malformed files.
    """
    root = Path(path)
    mf = JsonlFile(root / f"meta_{category}.jsonl")
    meta_df = read_jsonl(mf.path, META_SCHEMA)
    check_present(meta_df, "parent_asin", mf, what="parent_asin")
    meta_df = meta_df.with_columns(pl.col("parent_asin").str.strip_chars())
    check_unique(meta_df, "parent_asin", mf)
    known = meta_df["parent_asin"]

    if official_split:
        files = [CsvFile(_find_split_file(root, f"{category}.{part}.csv")) for part in PARTS]
        inter = pl.concat(
            [
                _read_ratings(f, known, mf.path).with_columns(part=pl.lit(k, pl.Int8))
                for k, f in enumerate(files)
            ]
        )
        extra = ["official_part"]
        inter = inter.rename({"part": "official_part"})
    else:
        files = [CsvFile(root / f"{category}.csv")]
        inter = _read_ratings(files[0], known, mf.path)
        extra = []

    used = inter["item"].unique().implode()
    catalog = meta_df.filter(pl.col("parent_asin").is_in(used)).sort("parent_asin")
    check_present(catalog, "title", mf, what="title")
    description = truncate(_joined("description", " "), max_description_chars)
    text = text_expr(
        pl.col("title"),
        [
            (CATEGORIES, _joined("categories", ", ")),
            (FEATURES, _joined("features", "; ")),
            (DESCRIPTION, description),
        ],
    )
    items = catalog.select(
        ROW,
        key=pl.col("parent_asin"),
        title=pl.col("title").str.strip_chars().str.replace_all(r"\s+", " "),
        text=text,
    )
    meta = {
        "source": "amazon",
        "path": str(root),
        "category": category,
        "files": [f.path.name for f in files],
        "n_metadata_items": meta_df.height,
        "dropped_items_without_interactions": meta_df.height - catalog.height,
        "official_split": official_split,
    }
    return assemble(category, items, inter, meta, extra=extra)
