"""Domains of the grid: disjoint item groups by the primary label (genre or category) read
from the item texts, given by the user or grouped automatically by interaction counts."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import polars as pl

from freshrec.data.schema import Items
from freshrec.data.text import CATEGORIES, GENRES, section_values
from freshrec.errors import ConfigError
from freshrec.merge.grid.config import ALL

__all__ = ["assign_domains", "auto_domains", "item_labels", "label_counts"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_FIELDS = {"genres": GENRES, "categories": CATEGORIES}


def item_labels(
    items: Items, field: Literal["auto", "genres", "categories"] = "auto", level: int = 0
) -> np.ndarray:
    """object[n_items] primary label of each item ("" when it has none), read from the item
    text's `Genres: a, b.` (MovieLens) or `Categories: a, b.` (Amazon) sentence: entry `level`
    of the comma-separated list (MovieLens lists genres alphabetically; level 0 = first)."""
    texts = pl.Series("text", list(items.texts), dtype=pl.String)
    if field == "auto":
        field = "genres" if texts.str.contains(f"{GENRES}: ", literal=True).any() else "categories"
    listed = section_values(texts, _FIELDS[field])
    label = listed.str.split(", ").list.get(level, null_on_oob=True).str.strip_chars()
    return np.asarray(label.fill_null("").to_list(), dtype=object)


def label_counts(labels: np.ndarray, item: np.ndarray) -> dict[str, int]:
    """Interactions per primary label (`item`: int[n] item of each interaction), largest first;
    items without a label are left out."""
    names, inverse = np.unique(labels.astype(str), return_inverse=True)
    counts = np.bincount(inverse[item], minlength=len(names))
    order = np.argsort(-counts, kind="stable")
    return {str(names[i]): int(counts[i]) for i in order if names[i] != "" and counts[i] > 0}


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "domain"


def auto_domains(counts: Mapping[str, int], k: int) -> dict[str, list[str]]:
    """Group labels into `k` domains of similar interaction counts (greedy: the largest label
    goes to the lightest domain). Each domain is named after its largest label."""
    if k < 1:
        raise ConfigError(f"n_domains must be >= 1, got {k}")
    if len(counts) < k:
        raise ConfigError(f"cannot make {k} domains from {len(counts)} labels ({list(counts)})")
    bins: list[list[str]] = [[] for _ in range(k)]
    load = np.zeros(k, dtype=np.int64)
    for label, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        i = int(np.argmin(load))
        bins[i].append(label)
        load[i] += c
    names: dict[str, list[str]] = {}
    for group in bins:
        name = _slug(group[0])
        while name in names or name == ALL:
            name += "-"
        names[name] = group
    return names


def assign_domains(labels: np.ndarray, domains: Mapping[str, Sequence[str]]) -> np.ndarray:
    """int64[n_items] index (into `list(domains)`) of each item's domain, -1 for none.

    ConfigError for a bad name, an empty domain, a label no item has, or a label in two domains.
    """
    if not domains:
        raise ConfigError("grid: no domains given")
    known = sorted({str(x) for x in labels if x})
    owner: dict[str, str] = {}
    for name, group in domains.items():
        if name == ALL:
            raise ConfigError(f"grid: domain name {ALL!r} is reserved for the all-items track")
        if not _NAME.match(name):
            raise ConfigError(
                f"grid: domain name {name!r} must be letters, digits, '_', '.', '+', '-'"
            )
        if not group:
            raise ConfigError(f"grid: domain {name!r} is empty (lists no labels)")
        for label in group:
            if label not in known:
                raise ConfigError(
                    f"grid: domain {name!r}: unknown label {label!r}; the catalog's primary "
                    f"labels are: {', '.join(known)}"
                )
            if label in owner:
                raise ConfigError(
                    f"grid: label {label!r} is in domains {owner[label]!r} and {name!r}; "
                    "domains must be disjoint"
                )
            owner[label] = name
    index = {name: i for i, name in enumerate(domains)}
    lut = {label: index[name] for label, name in owner.items()}
    return np.fromiter((lut.get(str(x), -1) for x in labels), dtype=np.int64, count=len(labels))
