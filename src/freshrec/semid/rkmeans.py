"""Residual k-means tokenizer: optional PCA whitening, then one k-means codebook per level.

Level 1 clusters the (whitened) embeddings, level l+1 clusters the residuals left after
subtracting the chosen level-l centroids. Each level is a plain seeded `faiss.Kmeans`
(`niter=config.kmeans_niter`, best of `config.kmeans_nredo` restarts) rather than faiss's
`ResidualQuantizer`:

- the greedy per-level fit is exactly the TIGER/RQ semantics (code l is the nearest centroid to
  residual l), so the level-1 code alone is a meaningful coarse cluster; beam-searched RQ codes
  trade that for lower reconstruction error, which SIDs do not need;
- the codebooks are plain arrays that save, fingerprint and encode without faiss;
- it takes about a second on 10k x 384 (3 restarts; one run sometimes leaves a level-1 cell of
  1-5 outlier items, 3 restarts kept the smallest cell >= 22 items over 6 seeds on MovieLens).

Encoding is a float64 nearest-centroid search in numpy, so codes are deterministic and do not
depend on how rows are batched; it runs in blocks of `ENCODE_BLOCK` rows (about 4x faster
than one pass on 1M items, whose float64 temporaries would be gigabytes).
"""

from __future__ import annotations

import numpy as np

from freshrec.semid.base import (
    SemanticTokenizer,
    apply_pca_whitening,
    faiss_kmeans,
    fit_pca_whitening,
    nearest_code,
    register_tokenizer,
)

ENCODE_BLOCK = 4096
"""Rows encoded at a time (float64 temporaries of ~12 MB at 384 dimensions)."""


@register_tokenizer("rkmeans")
class ResidualKMeansTokenizer(SemanticTokenizer):
    """Residual k-means SIDs. Parameters: `codebooks` float32[L, K, k] (+ PCA arrays)."""

    whiten_default = True  # PCA-whitening helps k-means cells (see semid/config.py)

    codebooks: np.ndarray
    pca_mean: np.ndarray | None = None
    pca_components: np.ndarray | None = None
    pca_scale: np.ndarray | None = None

    def _transform(self, x: np.ndarray) -> np.ndarray:
        """float64[n, k]: whitened (or raw) coordinates that the codebooks live in."""
        if self.pca_mean is None:
            return x.astype(np.float64)
        assert self.pca_components is not None
        assert self.pca_scale is not None
        return apply_pca_whitening(x, self.pca_mean, self.pca_components, self.pca_scale)

    def _fit(self, x: np.ndarray) -> None:
        cfg = self.config
        if cfg.whiten:
            self.pca_mean, self.pca_components, self.pca_scale = fit_pca_whitening(x, cfg.pca_dim)
        else:
            self.pca_mean = self.pca_components = self.pca_scale = None
        r = self._transform(x)
        books = []
        for level in range(cfg.n_levels):
            centroids = faiss_kmeans(
                r, cfg.codebook_size, cfg.kmeans_niter, cfg.seed * 1009 + level, cfg.kmeans_nredo
            )
            books.append(centroids)
            r = r - centroids.astype(np.float64)[nearest_code(r, centroids)]
        self.codebooks = np.stack(books).astype(np.float32)

    def _encode(self, x: np.ndarray) -> np.ndarray:
        codes = np.empty((x.shape[0], self.config.n_levels), dtype=np.int64)
        books = [book.astype(np.float64) for book in self.codebooks]
        for start in range(0, x.shape[0], ENCODE_BLOCK):
            rows = slice(start, start + ENCODE_BLOCK)
            r = self._transform(x[rows])
            for level, book in enumerate(books):
                codes[rows, level] = nearest_code(r, book)
                r = r - book[codes[rows, level]]
        return codes

    def residual_norm(self, emb: np.ndarray) -> np.ndarray:
        """float64[n]: L2 norm of the final residual (quantisation error in whitened units)."""
        codes = self.encode(emb)
        r = self._transform(np.asarray(emb, dtype=np.float32))
        for level, book in enumerate(self.codebooks):
            r = r - book.astype(np.float64)[codes[:, level]]
        return np.linalg.norm(r, axis=1)

    def _arrays(self) -> dict[str, np.ndarray]:
        out = {"codebooks": self.codebooks}
        if self.pca_mean is not None:
            assert self.pca_components is not None
            assert self.pca_scale is not None
            out |= {
                "pca_mean": self.pca_mean,
                "pca_components": self.pca_components,
                "pca_scale": self.pca_scale,
            }
        return out

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        cfg = self.config
        books = np.asarray(arrays["codebooks"], dtype=np.float32)
        if books.ndim != 3 or books.shape[:2] != (cfg.n_levels, cfg.codebook_size):
            raise ValueError(
                f"codebooks shape {books.shape} != ({cfg.n_levels}, {cfg.codebook_size}, k)"
            )
        if cfg.whiten:
            mean, comps, scale = (
                np.asarray(arrays[k], dtype=np.float32)
                for k in ("pca_mean", "pca_components", "pca_scale")
            )
            if comps.shape != (books.shape[2], mean.shape[0]) or scale.shape != (books.shape[2],):
                raise ValueError("PCA arrays do not match the codebooks")
            self.pca_mean, self.pca_components, self.pca_scale = mean, comps, scale
        else:
            self.pca_mean = self.pca_components = self.pca_scale = None
        self.codebooks = books
