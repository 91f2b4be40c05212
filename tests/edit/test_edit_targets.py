"""Success rule of the target-residual optimisation: the target must win outright (margin 0)
or come within `margin` nats of the best token the trie allows (a softer target)."""

from __future__ import annotations

import pytest
import torch

from freshrec.edit import EditConfig
from freshrec.edit.targets import _success
from freshrec.errors import ConfigError


def test_success_margin_counts_only_allowed_tokens() -> None:
    logits = torch.tensor(
        [
            [0.0, 5.0, 4.5, 9.0],  # best allowed = 5.0 (token 3 is not allowed)
            [0.0, 5.0, 3.0, 9.0],
            [2.0, 1.0, 0.0, 0.0],
        ]
    )
    allowed = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    target = torch.tensor([2, 2, 0])
    # margin 0: argmax among the allowed tokens
    assert _success(logits, target, allowed).tolist() == [False, False, True]
    # margin 1: within one nat of the best allowed logit (4.5 >= 4.0; 3.0 < 4.0)
    assert _success(logits, target, allowed, 1.0).tolist() == [True, False, True]
    assert _success(logits, target, allowed, 2.0).tolist() == [True, True, True]


def test_negative_margin_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="target_margin"):
        EditConfig.from_dict({"target_margin": -1})
