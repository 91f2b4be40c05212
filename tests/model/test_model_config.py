"""ModelConfig validation and the named recipes."""

from __future__ import annotations

import pytest

from freshrec.errors import ConfigError
from freshrec.model import build_model
from freshrec.model.config import ModelConfig, causal_cpu, recipe, tiger_cpu, tiger_paper
from freshrec.model.tiger import t5_config
from model_helpers import VOCAB


def test_tiger_paper_is_expressible():
    cfg = tiger_paper()
    t5 = t5_config(cfg, VOCAB)
    assert (t5.num_layers, t5.num_decoder_layers) == (4, 4)
    assert (t5.d_model, t5.d_ff, t5.num_heads, t5.d_kv) == (128, 1024, 6, 64)
    assert t5.dropout_rate == 0.1
    assert cfg.attn_dropout == 0.1
    assert cfg.max_history == 20
    assert (t5.pad_token_id, t5.decoder_start_token_id, t5.eos_token_id) == (0, 1, 1)
    model = build_model(cfg, VOCAB)
    assert len(model.ffn_out_projs()) == 4


def test_cpu_recipes_are_comparable_in_size():
    sizes = {}
    for cfg in (tiger_cpu(), causal_cpu()):
        model = build_model(cfg, VOCAB)
        sizes[cfg.arch] = model.n_parameters - VOCAB.size * cfg.d_model  # non-embedding
    assert 0.8 < sizes["causal"] / sizes["tiger"] < 1.25


def test_validation_errors():
    with pytest.raises(ConfigError, match="activation"):
        ModelConfig.from_dict({"arch": "causal", "activation": "gated-gelu"})
    with pytest.raises(ConfigError):
        ModelConfig.from_dict({"arch": "tiger", "d_modle": 64})
    with pytest.raises(ConfigError, match="unknown model recipe"):
        recipe("huge")
    assert recipe("tiger_cpu") == tiger_cpu()
    cfg = ModelConfig.from_dict(tiger_cpu().model_dump())
    assert cfg == tiger_cpu()
    assert ModelConfig(arch="causal", max_history=20).min_context == 10
