"""Session fixtures: MiniLM embeddings of every MovieLens movie (computed once, cached on disk)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from freshrec.embed import embed_texts

# Shared with tests/evaluate (same folder, same texts -> same content-hash cache file), so a
# full test session embeds the catalog once.
CACHE = Path(__file__).resolve().parents[2] / ".freshrec" / "test-cache"


def movie_texts(ml_dir: Path) -> list[str]:
    """Item texts 'Toy Story (1995). Genres: Adventure, Animation, ...' of the MovieLens catalog.

    Uses the project's loader when it is importable (the catalog = the 9.7k rated movies);
    otherwise builds the same kind of text from movies.csv directly.
    """
    try:
        from freshrec.data import load_movielens
    except ImportError:
        df = pl.read_csv(ml_dir / "movies.csv")
        genres = df["genres"].str.replace_all("|", ", ", literal=True)
        return [f"{t}. Genres: {g}." for t, g in zip(df["title"], genres, strict=True)]
    return list(load_movielens(ml_dir).items.texts)


@pytest.fixture(scope="session")
def ml_emb(ml_dir: Path) -> np.ndarray:
    """float32[~9.7k, 384]: MiniLM embeddings of all MovieLens movies, row = item index.

    Cached in .freshrec/test-cache/ (git-ignored) so only the first session pays (~40 s).
    """
    texts = movie_texts(ml_dir)
    threads = torch.get_num_threads()
    # Nothing else runs inside this fixture: use both cores for the one-off embedding.
    torch.set_num_threads(max(threads, min(2, os.cpu_count() or 1)))
    try:
        emb = embed_texts(texts, cache_dir=CACHE, progress=False)
    finally:
        torch.set_num_threads(threads)
    emb.setflags(write=False)
    return emb
