"""`SemanticTokenizer`: embeddings -> per-level codes, plus save/load and the SID helpers.

Tokenizers are registered by kind in `TOKENIZERS` (`@register_tokenizer` on the class, which
sets `kind`); `SemIdConfig.kind` names one, `make_tokenizer` / `fit_sids` / `load_tokenizer`
resolve it there.

A tokenizer is fit on the warm (training-period) items only and then frozen: `encode` maps any
embedding to codes deterministically, which is how new items get SIDs without refitting.

On disk a tokenizer is a folder (written atomically):

    config.json        {"format", "format_version", "kind", "config", "input_dim", "fingerprint"}
    params.safetensors the parameter arrays (codebooks, PCA, network weights)
    sid_table.npz      optional: the catalog's `SidTable`
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
import torch
from pydantic import BaseModel
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from freshrec.atomic import atomic_dir, write_bytes, write_json
from freshrec.embed.encoder import validate_embeddings
from freshrec.errors import CheckpointError, ConfigError
from freshrec.manifest import read_manifest
from freshrec.registry import Registry
from freshrec.semid.config import SemIdConfig
from freshrec.semid.table import SidTable
from freshrec.semid.vocab import SidVocab

FORMAT = "freshrec-semid"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.safetensors"
TABLE_FILE = "sid_table.npz"

T = TypeVar("T", bound="SemanticTokenizer")


class SemanticTokenizer(ABC):
    """Abstract SID tokenizer. Subclasses implement `_fit`, `_encode` and the parameter
    (de)serialisation `_arrays` / `_set_arrays`, and are registered with `@register_tokenizer`.

    Class attributes: `kind` (the registered name, `SemIdConfig.kind`), `whiten_default` (what
    `SemIdConfig.whiten=None` resolves to), `options_class` (a pydantic model validating
    `SemIdConfig.options`, this kind's own settings; None = the kind takes none). The built-in
    kinds keep their settings as flat `SemIdConfig` fields, which their fingerprints hash.
    """

    kind: ClassVar[str]
    whiten_default: ClassVar[bool] = False
    options_class: ClassVar[type[BaseModel] | None] = None

    def __init__(self, config: SemIdConfig | None = None) -> None:
        config = config if config is not None else SemIdConfig(kind=self.kind)
        if config.kind != self.kind:
            raise ConfigError(
                f"{type(self).__name__} needs kind={self.kind!r}, got {config.kind!r}"
            )
        self.config = config
        self.input_dim: int | None = None
        self._fingerprint: str | None = None

    @property
    def options(self) -> BaseModel | None:
        """`config.options` validated by `options_class` (None when the kind has none)."""
        if self.options_class is None:
            return None
        return self.options_class.model_validate(self.config.options or {})

    # ------------------------------------------------------------------ public API
    @property
    def is_fitted(self) -> bool:
        return self.input_dim is not None

    @property
    def vocab(self) -> SidVocab:
        """Token layout (n_levels, codebook_size, max_collision) of this tokenizer's SIDs."""
        return self.config.vocab

    @property
    def n_levels(self) -> int:
        return self.config.n_levels

    def fit(self, emb: np.ndarray, seed: int | None = None) -> Self:
        """Fit on warm-item embeddings float[n, d]; `seed` overrides `config.seed`.

        Refitting replaces all parameters. Raises `DataError` for NaN/Inf/empty input and
        `ConfigError` if there are fewer items than codebook entries.
        """
        x = validate_embeddings(emb)
        if x.shape[0] < self.config.codebook_size:
            raise ConfigError(
                f"cannot fit {self.config.codebook_size} codes per level on {x.shape[0]} items; "
                "lower codebook_size"
            )
        if seed is not None:
            self.config = self.config.model_copy(update={"seed": int(seed)})
        self._fingerprint = None
        self._fit(x)
        self.input_dim = int(x.shape[1])
        return self

    def encode(self, emb: np.ndarray) -> np.ndarray:
        """Codes int64[n, n_levels] (no collision digit) of embeddings float[n, d].

        Deterministic and row-independent: encoding a subset gives the subset's rows.
        """
        self._require_fitted()
        x = validate_embeddings(emb)
        if x.shape[1] != self.input_dim:
            raise ConfigError(
                f"embeddings have dimension {x.shape[1]}, the tokenizer was fit on {self.input_dim}"
            )
        return np.ascontiguousarray(self._encode(x), dtype=np.int64)

    @property
    def fingerprint(self) -> str:
        """16 hex chars of sha256(config + each parameter array: name, dtype, shape, bytes)."""
        self._require_fitted()
        if self._fingerprint is None:
            self._fingerprint = _fingerprint(self.config, self.input_dim or 0, self._arrays())
        return self._fingerprint

    def save(self, folder: str | Path, table: SidTable | None = None) -> Path:
        """Write the tokenizer (and optionally the catalog's `table`) to `folder` atomically.

        An existing folder is replaced as a whole.
        """
        self._require_fitted()
        folder = Path(folder)
        arrays = {k: np.ascontiguousarray(v) for k, v in self._arrays().items()}
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "config": self.config.to_dict(),
            "input_dim": self.input_dim,
            "fingerprint": self.fingerprint,
        }
        with atomic_dir(folder) as tmp:
            write_bytes(tmp / PARAMS_FILE, st_save(arrays))
            if table is not None:
                if table.n_levels != self.n_levels:
                    raise ConfigError(
                        f"SID table has {table.n_levels} levels, the tokenizer {self.n_levels}"
                    )
                table.save(tmp / TABLE_FILE)
            write_json(tmp / CONFIG_FILE, meta)
        return folder

    def __repr__(self) -> str:
        state = f"fingerprint={self.fingerprint}" if self.is_fitted else "unfitted"
        k = self.config.codebook_size
        return f"{type(self).__name__}(n_levels={self.n_levels}, codebook_size={k}, {state})"

    # ------------------------------------------------------------------ subclass hooks
    @abstractmethod
    def _fit(self, x: np.ndarray) -> None:
        """Fit parameters on validated float32[n, d] (config.seed is the seed to use)."""

    @abstractmethod
    def _encode(self, x: np.ndarray) -> np.ndarray:
        """Codes int[n, n_levels] of validated float32[n, input_dim]."""

    @abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]:
        """All fitted parameters as named numpy arrays (saved and fingerprinted)."""

    @abstractmethod
    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore parameters from `_arrays()` output; raise KeyError/ValueError if incomplete."""

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise ConfigError(
                f"{type(self).__name__} is not fitted; call fit() or load_tokenizer() first"
            )


# ---------------------------------------------------------------------- shared numerics
def fit_pca_whitening(x: np.ndarray, dim: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA whitening fit on float[n, d]: returns (mean float32[d], components float32[k, d],
    scale float32[k]) with k = min(dim or d, d); whitened = (x - mean) @ components.T / scale.

    Components are sorted by decreasing variance with a deterministic sign (largest |entry|
    positive).
    """
    # torch (float64) rather than numpy: it honours torch.set_num_threads and its LAPACK is
    # much faster than numpy's multi-threaded OpenBLAS on a busy machine.
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    mean_t = xt.mean(dim=0)
    xc = xt - mean_t
    cov = xc.T @ xc / max(x.shape[0] - 1, 1)
    var_t, vecs_t = torch.linalg.eigh(cov)
    mean, var, vecs = mean_t.numpy(), var_t.numpy(), vecs_t.numpy()
    k = min(dim or x.shape[1], x.shape[1])
    top = np.argsort(-var, kind="stable")[:k]
    var, comps = var[top], vecs[:, top].T
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    var = np.clip(var, 0.0, None)
    scale = np.sqrt(var + 1e-6 * max(float(var[0]), 1e-12))
    return mean.astype(np.float32), comps.astype(np.float32), scale.astype(np.float32)


def apply_pca_whitening(
    x: np.ndarray, mean: np.ndarray, components: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """float64[n, k] whitened coordinates of float[n, d] (see `fit_pca_whitening`)."""
    xc = x.astype(np.float64) - mean.astype(np.float64)
    return (xc @ components.astype(np.float64).T) / scale.astype(np.float64)


def nearest_code(r: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index int64[n] of the nearest codebook row (squared L2) for residuals float[n, k].

    Computed in float64 so the result does not depend on the batch the row is encoded in.
    Ties go to the lowest index.
    """
    r64 = r.astype(np.float64, copy=False)
    c64 = codebook.astype(np.float64)
    dist = (c64 * c64).sum(axis=1)[None, :] - 2.0 * (r64 @ c64.T)
    return dist.argmin(axis=1).astype(np.int64)


def faiss_kmeans(x: np.ndarray, k: int, niter: int, seed: int, nredo: int = 1) -> np.ndarray:
    """Seeded faiss k-means on float[n, d] -> centroids float32[k, d] (best of `nredo` runs)."""
    import faiss

    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=niter,
        nredo=nredo,
        seed=int(seed) % (2**31 - 1),
        verbose=False,
        min_points_per_centroid=1,  # n >= k is checked by the caller; silences faiss warnings
        max_points_per_centroid=256,
    )
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return np.asarray(km.centroids, dtype=np.float32).reshape(k, x.shape[1])


def _fingerprint(config: SemIdConfig, input_dim: int, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    h.update(f"{FORMAT}/{FORMAT_VERSION}\0{config.canonical_json()}\0{input_dim}\0".encode())
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{arr.dtype.str}\0{list(arr.shape)}\0".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------- registry / I/O
TOKENIZERS: Registry[type[SemanticTokenizer]] = Registry("SID tokenizer")


def register_tokenizer(kind: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: set `cls.kind = kind` and register `cls` in `TOKENIZERS` (ConfigError
    if the kind is taken)."""

    def decorate(cls: type[T]) -> type[T]:
        if not (isinstance(cls, type) and issubclass(cls, SemanticTokenizer)):
            raise ConfigError(f"{cls!r} is not a SemanticTokenizer subclass")
        TOKENIZERS.add(kind, cls)
        cls.kind = kind
        return cls

    return decorate


def make_tokenizer(config: SemIdConfig | None = None) -> SemanticTokenizer:
    """An unfitted tokenizer of `config.kind` (default: residual k-means with defaults)."""
    config = config or SemIdConfig()
    return TOKENIZERS.get(config.kind)(config)


def _read_meta(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise CheckpointError(f"tokenizer folder {folder} does not exist")
    return read_manifest(
        folder / CONFIG_FILE,
        "semantic-ID tokenizer config",
        format=FORMAT,
        version=FORMAT_VERSION,
        version_key="format_version",
    )


def load_tokenizer(folder: str | Path) -> SemanticTokenizer:
    """Load a tokenizer saved with `save`, dispatching on its kind.

    Raises `CheckpointError` for a missing, incomplete or corrupt folder (including a
    fingerprint that does not match the stored parameters).
    """
    folder = Path(folder)
    meta = _read_meta(folder)
    kind = meta.get("kind")
    if kind not in TOKENIZERS:
        raise CheckpointError(
            f"{folder}: unknown tokenizer kind {kind!r}; registered: {', '.join(TOKENIZERS)}"
        )
    try:
        config = SemIdConfig.from_dict(meta["config"])
        input_dim = int(meta["input_dim"])
        expected = str(meta["fingerprint"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{folder}/{CONFIG_FILE} is incomplete or invalid: {exc}") from None
    params = folder / PARAMS_FILE
    if not params.is_file():
        raise CheckpointError(f"tokenizer folder {folder} has no {PARAMS_FILE}")
    try:
        arrays = st_load(params.read_bytes())
    except (OSError, SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{params} is corrupt: {exc}") from None
    tok = TOKENIZERS.get(kind)(config)
    try:
        tok._set_arrays(arrays)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{params} is incomplete or inconsistent: {exc}") from None
    tok.input_dim = input_dim
    if tok.fingerprint != expected:
        raise CheckpointError(
            f"{folder}: parameters do not match the stored fingerprint "
            f"({tok.fingerprint} != {expected}); the folder is corrupt"
        )
    return tok


def load_sid_table(folder: str | Path) -> SidTable:
    """The `SidTable` saved alongside a tokenizer; `CheckpointError` if there is none."""
    folder = Path(folder)
    _read_meta(folder)
    return SidTable.load(folder / TABLE_FILE)


# ---------------------------------------------------------------------- SID helpers
def build_sid_table(
    tokenizer: SemanticTokenizer, emb: np.ndarray, items: np.ndarray, n_items: int
) -> SidTable:
    """SID table of the warm `items` (int[n]) with embeddings float[n, d] (fitted tokenizer)."""
    return SidTable.build(tokenizer.encode(emb), items, n_items, tokenizer.config.max_collision)


def fit_sids(
    config: SemIdConfig,
    emb: np.ndarray,
    items: np.ndarray,
    n_items: int,
    seed: int | None = None,
) -> tuple[SemanticTokenizer, SidTable]:
    """Fit a tokenizer on the warm items' embeddings float[n, d] and build their SID table."""
    tok = make_tokenizer(config).fit(emb, seed=seed)
    return tok, build_sid_table(tok, emb, items, n_items)


def assign_new_items(
    tokenizer: SemanticTokenizer,
    table: SidTable,
    emb_new: np.ndarray,
    items_new: np.ndarray,
    n_items: int | None = None,
) -> SidTable:
    """A new table where `items_new` (int[m]) get SIDs from `emb_new` float[m, d] without
    refitting: codes from `tokenizer.encode`, collision digits = next free digit of each code
    group. Existing rows never change; `table` itself is not modified."""
    if table.n_levels != tokenizer.n_levels:
        raise ConfigError(f"SID table has {table.n_levels} levels, tokenizer {tokenizer.n_levels}")
    return table.extend(tokenizer.encode(emb_new), items_new, n_items=n_items)
