"""MiniLM item embeddings on real MovieLens titles: shape, norm, disk cache, input checks."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from freshrec.embed import EMBED_DIM, TextEmbedder, cache_path, embed_texts, validate_embeddings
from freshrec.errors import DataError


def movie_texts(ml_dir: Path, n: int | None = None) -> list[str]:
    """'Toy Story (1995). Genres: Adventure, Animation, ...' per movie, in file order."""
    df = pl.read_csv(ml_dir / "movies.csv")
    if n is not None:
        df = df.head(n)
    genres = df["genres"].str.replace_all("|", ", ", literal=True)
    return [f"{t}. Genres: {g}." for t, g in zip(df["title"], genres, strict=True)]


@pytest.fixture(scope="module")
def texts(ml_dir: Path) -> list[str]:
    return movie_texts(ml_dir, 40)


@pytest.fixture(scope="module")
def embedded(texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path]:
    cache = tmp_path_factory.mktemp("emb-cache")
    return embed_texts(texts, cache_dir=cache, batch_size=16, progress=True), cache


def test_shape_dtype_and_unit_norm(texts: list[str], embedded: tuple[np.ndarray, Path]) -> None:
    emb, _ = embedded
    assert emb.shape == (len(texts), EMBED_DIM)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    # Different movies get different vectors; the two Toy Story sequels are close.
    assert np.unique(emb.round(5), axis=0).shape[0] == len(texts)


def test_semantics_similar_titles_are_close(ml_dir: Path) -> None:
    texts = movie_texts(ml_dir)
    toy = [t for t in texts if t.startswith("Toy Story")][:2]
    other = [t for t in texts if t.startswith("Heat (1995)")]
    emb = TextEmbedder().encode([*toy, *other], progress=False)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.1


def test_order_independent_of_batching(texts: list[str], embedded: tuple[np.ndarray, Path]) -> None:
    emb, _ = embedded
    again = TextEmbedder().encode(texts[::-1], batch_size=7, progress=False)[::-1]
    np.testing.assert_allclose(again, emb, atol=1e-5)


def test_cache_hit_is_instant_and_identical(
    texts: list[str], embedded: tuple[np.ndarray, Path]
) -> None:
    emb, cache = embedded
    path = cache_path(cache, texts)
    assert path.is_file()
    start = time.perf_counter()
    again = embed_texts(texts, cache_dir=cache, progress=False)
    assert time.perf_counter() - start < 0.5
    assert again.tobytes() == emb.tobytes()
    # The second call really reads the file: a different (valid) file content comes back.
    np.save(path, emb[::-1].copy())
    assert np.array_equal(embed_texts(texts, cache_dir=cache, progress=False), emb[::-1])
    # Different texts -> different key; a corrupt cache file is recomputed, not trusted.
    assert cache_path(cache, texts[:-1]) != path
    path.write_bytes(b"not an npy file")
    fixed = embed_texts(texts, cache_dir=cache, progress=False)
    np.testing.assert_allclose(fixed, emb, atol=1e-5)


def test_empty_text_names_the_row(texts: list[str], tmp_path: Path) -> None:
    bad = [*texts[:5], "   ", *texts[5:8]]
    with pytest.raises(DataError, match="row 5 is empty"):
        embed_texts(bad, cache_dir=tmp_path, progress=False)
    with pytest.raises(DataError, match="row 0 is empty"):
        TextEmbedder().encode([""])
    with pytest.raises(DataError, match="no texts"):
        embed_texts([])
    assert not list(tmp_path.iterdir())


def test_validate_embeddings_errors(embedded: tuple[np.ndarray, Path]) -> None:
    emb, _ = embedded
    assert validate_embeddings(emb.astype(np.float64)).dtype == np.float32
    bad = emb.copy()
    bad[7, 3] = np.nan
    bad[9, 0] = np.inf
    with pytest.raises(DataError, match=r"row 7 contains NaN or Inf \(2 bad row"):
        validate_embeddings(bad)
    zero = emb.copy()
    zero[4] = 0.0
    validate_embeddings(zero)  # zero rows are only rejected on request
    with pytest.raises(DataError, match="row 4 has zero norm"):
        validate_embeddings(zero, nonzero=True)
    with pytest.raises(DataError, match="empty"):
        validate_embeddings(np.zeros((0, EMBED_DIM), dtype=np.float32))
    with pytest.raises(DataError, match="2-d"):
        validate_embeddings(emb[0])
