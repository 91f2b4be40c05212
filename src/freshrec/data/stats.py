"""Summary statistics of a Split, as a dict and as a rich table."""

from __future__ import annotations

import numpy as np
from rich.table import Table

from freshrec.data.schema import Split


def split_stats(split: Split) -> dict[str, object]:
    """Counts of a split.

    Interactions per part count every interaction of the part, including those skipped as
    requests (empty history); `*_requests` count the requests; `*_cold_share` = fraction of
    requests whose target is a new item (0.0 when there are none).
    """
    ds = split.dataset
    skipped = dict(split.skipped)
    train = int(np.asarray(split.train_len, dtype=np.int64).sum())
    out: dict[str, object] = {
        "dataset": ds.name,
        "scheme": split.scheme,
        "cutoffs": list(split.cutoffs) if split.cutoffs is not None else None,
        "users": ds.n_users,
        "items": ds.n_items,
        "interactions": len(ds.interactions),
        "train_interactions": train,
    }
    for part in ("valid", "test"):
        req = getattr(split, part)
        n = len(req)
        out[f"{part}_interactions"] = n + int(skipped.get(f"{part}_empty_history", 0))
        out[f"{part}_requests"] = n
        out[f"{part}_cold_requests"] = int(req.cold.sum())
        out[f"{part}_cold_share"] = float(req.cold.mean()) if n else 0.0
    out["new_items"] = int(split.is_new.sum())
    out["skipped"] = skipped
    return out


def _fmt(key: str, value: object) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.1%}" if key.endswith("share") else f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(k, v)}" for k, v in value.items()) or "-"
    if value is None:
        return "-"
    return str(value)


def stats_table(stats: dict[str, object], title: str | None = None) -> Table:
    """A two-column rich table (statistic, value) of `split_stats` output."""
    table = Table(title=title or f"{stats.get('dataset', 'dataset')} split")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        table.add_row(key.replace("_", " "), _fmt(key, value))
    return table
