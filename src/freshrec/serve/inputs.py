"""What the service accepts: validated requests (`NewItem`, `RecQuery`), the errors it answers
with (`ServeError`: HTTP status + message), and the checks of POST /items and /recommend
bodies that need no catalog state."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from freshrec.data.text import CATEGORIES, DESCRIPTION, GENRES, clean_texts, item_texts
from freshrec.errors import FreshrecError


class ServeError(FreshrecError):
    """A request the service refuses: HTTP `status`, a message, optional extra JSON fields."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


@dataclass(frozen=True)
class NewItem:
    """A validated item of POST /items."""

    item_id: str
    title: str
    text: str | None = None
    categories: tuple[str, ...] = ()
    description: str | None = None


@dataclass(frozen=True)
class RecQuery:
    """One recommendation request, resolved to item indices (full history, oldest first):
    history int64[h], user = user index (or hashed id) for user-bucket tokens."""

    history: np.ndarray
    top_k: int
    exclude_seen: bool
    only_new: bool
    user: int


def iso_time(ts: float | None) -> str | None:
    """UTC ISO 8601 with milliseconds, e.g. 2024-01-02T03:04:05.678Z (None stays None)."""
    if ts is None:
        return None
    ms = round((ts % 1) * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{ms:03d}Z"


def category_label(data_kind: str) -> str:
    """The item-text label of an item's categories for a dataset kind (the loaders')."""
    return GENRES if data_kind == "movielens" else CATEGORIES


def check_new_items(items: Sequence[NewItem], max_items: int) -> list[str]:
    """The item ids of a POST /items body. ServeError 422 empty, 413 too many, 409 duplicates."""
    if not items:
        raise ServeError(422, "items is empty")
    if len(items) > max_items:
        raise ServeError(413, f"{len(items)} items in one request; at most {max_items}")
    ids = [it.item_id for it in items]
    seen: set[str] = set()
    twice = list(dict.fromkeys(i for i in ids if i in seen or seen.add(i)))  # type: ignore[func-returns-value]
    if twice:
        raise ServeError(
            409,
            f"duplicate item ids in the request: {', '.join(map(repr, twice))}",
            duplicates=twice,
        )
    return ids


def new_item_texts(items: Sequence[NewItem], label: str) -> list[str]:
    """What is embedded for each item: its `text` (whitespace collapsed), else the loaders'
    format (`freshrec.data.text`) of title, categories (under `label`) and description.
    ServeError 422 naming the items whose text is empty."""
    texts = item_texts(
        [it.title for it in items],
        {
            label: [list(it.categories) for it in items],
            DESCRIPTION: [it.description for it in items],
        },
    )
    given = clean_texts([it.text or "" for it in items])
    texts = [g if it.text is not None else t for it, g, t in zip(items, given, texts, strict=True)]
    empty = [it.item_id for it, t in zip(items, texts, strict=True) if not t]
    if empty:
        raise ServeError(422, f"empty text for items: {', '.join(map(repr, empty))}")
    return texts


def check_query(history: Sequence[str], top_k: int, max_history: int, max_top_k: int) -> None:
    """ServeError 422 for an empty or too long history or a top_k out of [1, max_top_k]."""
    if not history:
        raise ServeError(422, "history is empty")
    if len(history) > max_history:
        raise ServeError(422, f"history has {len(history)} items; at most {max_history}")
    if not 1 <= top_k <= max_top_k:
        raise ServeError(422, f"top_k must be between 1 and {max_top_k}, got {top_k}")
