"""Helpers for merge tests: small checkpoint folders in freshrec's documented format."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

VOCAB = {"n_levels": 3, "codebook_size": 8, "max_collision": 4, "user_buckets": 0}
MODEL_CFG = {"d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 1}

WriteCkpt = Callable[..., Path]


def transformer_state(seed: int, base: dict[str, torch.Tensor] | None = None, scale: float = 0.05):
    """Random T5/encoder-like weights: embedding, one TransformerEncoderLayer, an int buffer.

    With `base`, returns `base + scale * noise` (a checkpoint "continued" from base).
    """
    torch.manual_seed(seed)
    emb = nn.Embedding(2 + 3 * 8 + 4, 32)
    layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)
    state = {"shared.weight": emb.weight}
    state |= {f"encoder.layers.0.{k}": v for k, v in layer.state_dict().items()}
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    if base is not None:
        state = {
            k: v + scale * torch.randn_like(v) for k, v in base.items() if v.is_floating_point()
        }
    state["position_ids"] = torch.arange(16, dtype=torch.int64)
    return state


def make_config(fingerprint: str = "fp-A", **overrides: Any) -> dict[str, Any]:
    cfg = {
        "arch": "tiger",
        "model": dict(MODEL_CFG),
        "vocab": dict(VOCAB),
        "tokenizer_fingerprint": fingerprint,
        "freshrec_version": "0.1.0",
        "extra": {"phase": "test"},
    }
    cfg.update(overrides)
    return cfg


@pytest.fixture
def make_state() -> Callable[..., dict[str, torch.Tensor]]:
    """The `transformer_state` factory, as a fixture."""
    return transformer_state


@pytest.fixture
def write_ckpt(tmp_path: Path) -> WriteCkpt:
    """write_ckpt(name, state, fingerprint="fp-A", **config_overrides) -> folder under tmp."""

    def write(name: str, state: dict[str, torch.Tensor], fingerprint: str = "fp-A", **kw: Any):
        folder = tmp_path / name
        folder.mkdir(parents=True)
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        cfg = make_config(fingerprint, **kw)
        (folder / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
        return folder

    return write
