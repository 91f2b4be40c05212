"""Assembling the normalised `Dataset` from the loaders' validated frames: user and item
indices, interactions sorted by (user, ts, item)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from freshrec.data.schema import Dataset, Interactions, Items


def natural_sort(keys: pl.Series) -> pl.Series:
    """Unique keys sorted numerically when all are integers, else lexicographically."""
    uniq = keys.unique()
    if uniq.dtype == pl.String:
        as_int = uniq.str.strip_chars().cast(pl.Int64, strict=False)
        if as_int.null_count() == 0:
            return uniq.gather(as_int.arg_sort())
    return uniq.sort()


def assemble(
    name: str,
    items: pl.DataFrame,
    inter: pl.DataFrame,
    meta: dict[str, object],
    extra: Sequence[str] = (),
) -> Dataset:
    """Build the normalised Dataset.

    items: columns key, title, text in catalog order (row i = item index i), only items with
    interactions. inter: columns user (key), item (key), ts (int64 s) and the `extra` columns,
    which are stored in `meta` as numpy arrays aligned with the sorted interactions.
    Users are indexed in natural (numeric when possible) ascending key order.
    """
    users = natural_sort(inter["user"])
    user_idx = pl.DataFrame({"user": users, "u": np.arange(len(users), dtype=np.int32)})
    item_idx = pl.DataFrame({"item": items["key"], "i": np.arange(items.height, dtype=np.int32)})
    df = inter.join(user_idx, on="user", how="left").join(item_idx, on="item", how="left")
    u = df["u"].to_numpy().astype(np.int32)
    i = df["i"].to_numpy().astype(np.int32)
    ts = df["ts"].to_numpy().astype(np.int64)
    order = np.lexsort((i, ts, u))
    meta = dict(meta)
    for col in extra:
        meta[col] = df[col].to_numpy()[order]
    return Dataset(
        name=name,
        user_ids=[str(x) for x in users.to_list()],
        items=Items(
            ids=[str(x) for x in items["key"].to_list()],
            titles=items["title"].to_list(),
            texts=items["text"].to_list(),
        ),
        interactions=Interactions(user=u[order], item=i[order], ts=ts[order]),
        meta=meta,
    )
