"""Data stage: loaders into the normalised `Dataset`, splits, prepared-data store, stats."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from freshrec.data.amazon import load_amazon
from freshrec.data.custom import load_custom
from freshrec.data.movielens import load_movielens
from freshrec.data.schema import Dataset, Interactions, Items, Requests, Split
from freshrec.data.split import first_seen, leave_one_out, official_split, time_split
from freshrec.data.stats import split_stats, stats_table
from freshrec.data.store import load_split, save_split
from freshrec.errors import ConfigError

LOADERS: dict[str, Callable[..., Dataset]] = {
    "movielens": load_movielens,
    "amazon": load_amazon,
    "custom": load_custom,
}


def load_dataset(kind: str, path: str | Path, **kw: object) -> Dataset:
    """Load a dataset folder with the loader for `kind` ("movielens" | "amazon" | "custom").

    Extra keyword arguments go to the loader (e.g. `category=` for amazon). Raises
    ConfigError for an unknown kind, a missing folder or arguments the loader does not take.
    """
    loader = LOADERS.get(kind)
    if loader is None:
        raise ConfigError(
            f"unknown dataset kind {kind!r}; choose one of {', '.join(sorted(LOADERS))}"
        )
    folder = Path(path)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"dataset folder {str(folder)!r} {what}")
    try:
        inspect.signature(loader).bind(folder, **kw)
    except TypeError as e:
        raise ConfigError(f"{kind} loader: {e}") from None
    return loader(folder, **kw)


__all__ = [
    "LOADERS",
    "Dataset",
    "Interactions",
    "Items",
    "Requests",
    "Split",
    "first_seen",
    "leave_one_out",
    "load_amazon",
    "load_custom",
    "load_dataset",
    "load_movielens",
    "load_split",
    "official_split",
    "save_split",
    "split_stats",
    "stats_table",
    "time_split",
]
