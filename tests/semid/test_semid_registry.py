"""The SID tokenizer registry: a tokenizer defined here (one class + its decorator) is usable
by `semid.kind` through recipes, `fit_sids` and `load_tokenizer`, with its own options class;
unknown and duplicate kinds are refused; the built-in configs hash as before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field

from freshrec.config import load_recipe
from freshrec.errors import CheckpointError, ConfigError
from freshrec.semid import (
    ResidualKMeansTokenizer,
    SemanticTokenizer,
    SemIdConfig,
    fit_sids,
    load_tokenizer,
)
from freshrec.semid.base import TOKENIZERS, register_tokenizer

ALL = np.arange(400)


class QuantileOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    projection_seed: int = Field(0, ge=0)


class QuantileTokenizer(SemanticTokenizer):
    """Test tokenizer: level l's code is the quantile bin of a random projection l."""

    options_class = QuantileOptions
    directions: np.ndarray  # float32[L, d]
    edges: np.ndarray  # float64[L, K - 1]

    def _fit(self, x: np.ndarray) -> None:
        cfg, opts = self.config, self.options
        assert isinstance(opts, QuantileOptions)
        rng = np.random.default_rng(cfg.seed + opts.projection_seed)
        self.directions = rng.standard_normal((cfg.n_levels, x.shape[1])).astype(np.float32)
        proj = x.astype(np.float64) @ self.directions.T.astype(np.float64)
        q = np.arange(1, cfg.codebook_size) / cfg.codebook_size
        self.edges = np.quantile(proj, q, axis=0).T.copy()

    def _encode(self, x: np.ndarray) -> np.ndarray:
        proj = x.astype(np.float64) @ self.directions.T.astype(np.float64)
        cols = [np.searchsorted(e, proj[:, i], side="right") for i, e in enumerate(self.edges)]
        return np.stack(cols, axis=1)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"directions": self.directions, "edges": self.edges}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.directions, self.edges = arrays["directions"], arrays["edges"]


@pytest.fixture
def quantile() -> Iterator[type[QuantileTokenizer]]:
    yield register_tokenizer("quantile")(QuantileTokenizer)
    TOKENIZERS.remove("quantile")


@pytest.fixture
def emb() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((400, 16)).astype(np.float32)


def test_builtin_kinds_registered() -> None:
    assert {"rkmeans", "rqvae"} <= set(TOKENIZERS.names())
    assert TOKENIZERS.get("rkmeans") is ResidualKMeansTokenizer
    assert SemIdConfig().whiten is True  # rkmeans' whiten_default
    assert SemIdConfig(kind="rqvae").whiten is False


def test_default_config_json_unchanged() -> None:
    """Fingerprints hash this JSON: existing checkpoints must keep matching their tokenizer."""
    assert SemIdConfig().canonical_json() == (
        '{"batch_size":256,"beta":0.25,"codebook_size":64,"dead_code_reset":true,"epochs":60,'
        '"hidden_dims":[256,128],"kind":"rkmeans","kmeans_niter":25,"kmeans_nredo":3,'
        '"latent_dim":32,"lr":0.001,"max_collision":64,"n_levels":3,"pca_dim":64,"seed":0,'
        '"weight_decay":0.0,"whiten":true}'
    )
    assert "options" not in SemIdConfig().to_dict()


def test_registered_tokenizer_through_recipe_fit_and_load(
    quantile: type[QuantileTokenizer], emb: np.ndarray, tmp_path: Path
) -> None:
    recipe = load_recipe(
        "cpu",
        ["semid.kind=quantile", "semid.codebook_size=8", "semid.options={projection_seed: 3}"],
    )
    cfg = recipe.semid
    assert cfg.options == {"projection_seed": 3}
    assert cfg.whiten is False  # the base class default
    assert recipe.to_dict()["semid"]["options"] == {"projection_seed": 3}
    tok, table = fit_sids(cfg, emb[:300], np.arange(300), 400)
    assert isinstance(tok, quantile)
    assert tok.encode(emb).shape == (400, 3)
    assert (table.sids[:300] >= 0).all()
    tok.save(tmp_path / "tok", table)
    back = load_tokenizer(tmp_path / "tok")
    assert type(back) is quantile
    assert back.fingerprint == tok.fingerprint
    assert np.array_equal(back.encode(emb), tok.encode(emb))
    other = fit_sids(cfg.model_copy(update={"options": {"projection_seed": 4}}), emb, ALL, 400)
    assert other[0].fingerprint != tok.fingerprint  # options are part of the fingerprint
    assert hash(cfg) == hash(SemIdConfig.from_dict(cfg.to_dict()))


@pytest.mark.usefixtures("quantile")
def test_options_validated_by_the_kinds_own_class() -> None:
    with pytest.raises(ConfigError, match=r"semid: .*options of the quantile tokenizer: colour"):
        load_recipe("cpu", ["semid.kind=quantile", "semid.options={colour: red}"])
    with pytest.raises(ConfigError, match=r"projection_seed: Input should be greater than"):
        SemIdConfig.from_dict({"kind": "quantile", "options": {"projection_seed": -1}})
    with pytest.raises(ConfigError, match=r"the rkmeans tokenizer takes no options"):
        SemIdConfig.from_dict({"kind": "rkmeans", "options": {"projection_seed": 1}})


def test_unknown_kind_lists_registered_ones(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"semid\.kind: .*unknown SID tokenizer 'vqgan'; expected one of: rkmeans, rqvae",
    ):
        load_recipe("cpu", ["semid.kind=vqgan"])
    with pytest.raises(ConfigError, match=r"unknown SID tokenizer 'vqgan'"):
        SemIdConfig.from_dict({"kind": "vqgan"})


def test_unknown_kind_in_saved_folder(
    quantile: type[QuantileTokenizer], emb: np.ndarray, tmp_path: Path
) -> None:
    tok, table = fit_sids(SemIdConfig(kind="quantile", codebook_size=8), emb, ALL, 400)
    tok.save(tmp_path / "tok", table)
    TOKENIZERS.remove("quantile")
    try:
        with pytest.raises(CheckpointError, match=r"unknown tokenizer kind 'quantile'"):
            load_tokenizer(tmp_path / "tok")
    finally:
        TOKENIZERS.add("quantile", quantile)


def test_duplicate_and_non_tokenizer_refused() -> None:
    with pytest.raises(ConfigError, match=r"SID tokenizer 'rkmeans' is already registered"):
        register_tokenizer("rkmeans")(QuantileTokenizer)
    assert TOKENIZERS.get("rkmeans") is ResidualKMeansTokenizer
    with pytest.raises(ConfigError, match=r"is not a SemanticTokenizer subclass"):
        register_tokenizer("thing")(QuantileOptions)  # type: ignore[arg-type]
