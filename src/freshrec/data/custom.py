"""Bring-your-own dataset: two CSV files in one folder.

`interactions.csv` — one row per interaction, header required:

    user_id,item_id,timestamp[,rating]
    u1,i42,1700000000,5
    u1,i7,2023-11-15T08:30:00Z,4

- `user_id`, `item_id`: any strings (numeric ids are ordered numerically).
- `timestamp`: unix seconds (integer or decimal) or ISO-8601 (`2023-11-15`,
  `2023-11-15 08:30`, `2023-11-15T08:30:00+02:00`; no offset = UTC); forms can be mixed.
- `rating`: optional column, a number where filled in; not used for training.

`items.csv` — one row per item, header required:

    item_id,title[,text][,categories][,description]
    i42,"The Hobbit",,Books|Fantasy,"Bilbo Baggins is ..."

- `item_id`: unique; every `item_id` of interactions.csv must be listed here.
- `title`: non-empty display title.
- `text`: optional; the text to embed. When the column is present every row needs one.
  Without it the text is built as "Title. Categories: Books, Fantasy. Description: ...".
- `categories`: optional, `|`-separated. `description`: optional, cut to 1000 characters.

Files are UTF-8; quote values that contain commas. Items without interactions are dropped
unless `keep_unused_items=True` (then they stay in the catalog as never-seen, new items).
Item and user indices follow ascending id order (numeric when all ids are integers).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from freshrec.data.assemble import assemble, natural_sort
from freshrec.data.files import ROW, CsvFile, read_csv
from freshrec.data.schema import Dataset
from freshrec.data.text import CATEGORIES, DESCRIPTION, collapse_whitespace, text_expr, truncate
from freshrec.data.validate import (
    check_known,
    check_present,
    check_unique,
    parse_float,
    parse_timestamps,
)


def load_custom(
    path: str | Path,
    *,
    name: str | None = None,
    keep_unused_items: bool = False,
    max_description_chars: int = 1000,
) -> Dataset:
    """Load `interactions.csv` + `items.csv` (format in the module docstring) into a Dataset."""
    root = Path(path)
    itf, inf = CsvFile(root / "items.csv"), CsvFile(root / "interactions.csv")

    items = read_csv(itf.path, ["item_id", "title"], ["text", "categories", "description"])
    check_present(items, "item_id", itf, what="item_id")
    items = items.with_columns(pl.col("item_id").str.strip_chars())
    check_unique(items, "item_id", itf)
    check_present(items, "title", itf, what="title")
    if "text" in items.columns:
        check_present(items, "text", itf, what="text")
        text = pl.col("text")
    else:
        sections = []
        if "categories" in items.columns:
            cats = pl.col("categories").str.strip_chars().str.replace_all(r"\s*\|\s*", ", ")
            sections.append((CATEGORIES, pl.when(cats != "").then(cats)))
        if "description" in items.columns:
            desc = truncate(pl.col("description"), max_description_chars)
            sections.append((DESCRIPTION, pl.when(desc != "").then(desc)))
        text = text_expr(pl.col("title"), sections)

    inter = read_csv(inf.path, ["user_id", "item_id", "timestamp"], ["rating"])
    check_present(inter, "user_id", inf)
    check_present(inter, "item_id", inf)
    inter = inter.with_columns(pl.col("user_id", "item_id").str.strip_chars())
    if "rating" in inter.columns:
        parse_float(inter, "rating", inf, required=False)
    ts = parse_timestamps(inter, "timestamp", inf, unit="auto")
    check_known(inter, "item_id", items["item_id"], inf, itf.path)

    catalog = items
    if not keep_unused_items:
        catalog = items.filter(pl.col("item_id").is_in(inter["item_id"].unique().implode()))
    order = natural_sort(catalog["item_id"])
    catalog = catalog.join(
        pl.DataFrame({"item_id": order, "_o": range(len(order))}), on="item_id"
    ).sort("_o")
    table = catalog.select(
        ROW,
        key=pl.col("item_id"),
        title=pl.col("title").str.strip_chars(),
        text=collapse_whitespace(text),
    )
    meta = {
        "source": "custom",
        "path": str(root),
        "n_metadata_items": items.height,
        "dropped_items_without_interactions": items.height - catalog.height,
    }
    frame = pl.DataFrame({"user": inter["user_id"], "item": inter["item_id"], "ts": ts})
    return assemble(name or root.name, table, frame, meta)
