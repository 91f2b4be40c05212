"""Configuration of the semantic-ID tokenizers.

Why `codebook_size=64` with 3 levels for MovieLens-sized catalogs (~10k items):

- Capacity: K^3 = 262,144 code triples for ~10k items (>25x headroom), so with a reasonably
  spread quantiser most items get a code triple of their own and collision groups stay small
  (measured on the 9.7k MovieLens movies over 5 seeds: 11-13% of items share their triple,
  largest group 6-9 items).
- Learnability: level-1 cells hold ~N/K = 150 items, enough for the coarse level to mean
  something (genre/era neighbourhoods) and for the recommender to see every level-1 token often.
  TIGER's K=256 on 10k items would leave ~40 items per level-1 cell and most of the 16.7M level-3
  codes empty (each level-3 codebook entry fit on a handful of residuals), so deeper tokens
  would be noise; the vocabulary would also be 4x larger for no gain.
- `max_collision=64` bounds the collision digit; a group that would need more digits is a
  configuration problem (too small a codebook for the catalog) and raises `ConfigError`.

Residual k-means (`kind="rkmeans"`) PCA-whitens the embeddings to `pca_dim=64` dimensions
first (64% of the variance). Measured on MovieLens over 5 seeds: collisions 11-13% and smallest
level-1 cell 22-61 items, vs 18-20% and 3-29 items unwhitened; 128 components give 17-19%, 32
give 8-9% but keep only 47% of the variance (nearest neighbours agree less often on their codes).
Whitening *all* 384 dimensions amplifies noise directions and k-means degenerates (236 movies
in one code triple, over the collision limit).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from freshrec.errors import ConfigError, validation_problems
from freshrec.semid.vocab import SidVocab


class SemIdConfig(BaseModel):
    """Hyper-parameters of a semantic-ID tokenizer (immutable; unknown keys are errors).

    `kind` names a tokenizer registered in `freshrec.semid.base.TOKENIZERS`. The shared fields
    and the built-in kinds' fields are flat; a registered kind with an `options_class` takes
    its own settings under `options` (validated by that class; omitted from dumps and
    fingerprints when unset, so existing configs hash as before).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = "rkmeans"
    n_levels: int = Field(3, ge=1, le=8)
    codebook_size: int = Field(64, ge=2, le=65536)
    max_collision: int = Field(64, ge=1, le=65536)
    seed: int = Field(0, ge=0)
    # PCA-whiten the embeddings before quantising (fit on the warm items). None = the kind's
    # default: True for rkmeans, False for rqvae (its encoder MLP learns its own projection).
    whiten: bool | None = None
    # Number of principal components kept when whitening (None = all input dimensions).
    pca_dim: int | None = Field(64, ge=1)

    # Residual k-means (faiss).
    kmeans_niter: int = Field(25, ge=1)
    kmeans_nredo: int = Field(3, ge=1)  # k-means restarts per level; the best objective wins

    # RQ-VAE (torch).
    hidden_dims: tuple[int, ...] = (256, 128)
    latent_dim: int = Field(32, ge=1)
    beta: float = Field(0.25, ge=0.0)
    epochs: int = Field(60, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(256, ge=1)
    weight_decay: float = Field(0.0, ge=0.0)
    dead_code_reset: bool = True

    # Settings of a registered kind with an `options_class` (None for the built-in kinds).
    options: dict[str, Any] | None = None

    @field_validator("kind")
    @classmethod
    def _registered(cls, value: str) -> str:
        from freshrec.semid.base import TOKENIZERS

        if value not in TOKENIZERS:
            raise ValueError(TOKENIZERS.unknown_message(value))
        return value

    @model_validator(mode="after")
    def _resolve_defaults(self) -> SemIdConfig:
        from freshrec.semid.base import TOKENIZERS

        tokenizer = TOKENIZERS.get(self.kind)
        if self.whiten is None:
            object.__setattr__(self, "whiten", tokenizer.whiten_default)
        if any(h < 1 for h in self.hidden_dims):
            raise ValueError(f"hidden_dims must be positive, got {list(self.hidden_dims)}")
        if tokenizer.options_class is None:
            if self.options:
                raise ValueError(
                    f"options: the {self.kind} tokenizer takes no options (set its fields directly)"
                )
            object.__setattr__(self, "options", None)
        else:
            try:
                opts = tokenizer.options_class.model_validate(self.options or {})
            except ValidationError as exc:
                problems = validation_problems(exc, empty="options")
                raise ValueError(f"options of the {self.kind} tokenizer: {problems}") from None
            object.__setattr__(self, "options", opts.model_dump(mode="json"))
        return self

    def __hash__(self) -> int:  # `options` is a dict: hash the canonical JSON instead
        return hash(self.canonical_json())

    @model_serializer(mode="wrap")
    def _drop_unset_options(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if data.get("options") is None:
            data.pop("options", None)
        return data

    @property
    def vocab(self) -> SidVocab:
        """The SID token layout these settings produce (no user buckets)."""
        return SidVocab(
            n_levels=self.n_levels,
            codebook_size=self.codebook_size,
            max_collision=self.max_collision,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SemIdConfig:
        """Validate a plain dict (e.g. from YAML/JSON); problems raise `ConfigError`."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = validation_problems(exc, empty="config")
            raise ConfigError(f"invalid semantic-ID config: {problems}") from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def canonical_json(self) -> str:
        """Sorted, compact JSON used for fingerprints."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
