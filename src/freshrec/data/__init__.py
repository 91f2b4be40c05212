"""Data stage: loaders into the normalised `Dataset` (registered by kind in
`DATASET_LOADERS`, see `freshrec.data.loaders`), splits, prepared-data store, stats."""

from __future__ import annotations

from freshrec.data.amazon import load_amazon
from freshrec.data.custom import load_custom
from freshrec.data.loaders import (
    DATASET_LOADERS,
    DatasetLoader,
    load_dataset,
    loader_for,
    register_loader,
)
from freshrec.data.movielens import load_movielens
from freshrec.data.schema import Dataset, Interactions, Items, Requests, Split
from freshrec.data.split import first_seen, leave_one_out, official_split, time_split
from freshrec.data.stats import split_stats, stats_table
from freshrec.data.store import load_split, save_split

__all__ = [
    "DATASET_LOADERS",
    "Dataset",
    "DatasetLoader",
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
    "loader_for",
    "official_split",
    "register_loader",
    "save_split",
    "split_stats",
    "stats_table",
    "time_split",
]
