"""The per-step decode context: what each decoder token of the running forward predicts.

During every forward that a `GenerativeRecommender` runs for decoding or scoring it sets
`model.decode_context` (a `DecodeContext`); outside those forwards (training included) it is
`NO_CONTEXT`. Forward hooks on the model's layers read it: edit deltas fire at the tokens of
their SID position, the prefix gate reads the decoded prefix (`freshrec.model.edit_hooks`), and
any future per-step logic can do the same without new model attributes.

One model instance runs one forward at a time (the context is per instance).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DecodeContext:
    """positions: Long[B, T_q] (the decoder tokens of the forward): value p at a token whose
    output predicts SID token p of the item being recommended, -1 elsewhere (history tokens of
    the causal model, padding); None outside decoding/scoring forwards.
    prefixes: Long[B, T_q] alongside: key (`SidVocab.prefix_key`) of the SID prefix decoded
    before each token, or None when unknown (prefix-gated logic then treats every prefix as a
    match)."""

    positions: torch.Tensor | None = None
    prefixes: torch.Tensor | None = None


NO_CONTEXT = DecodeContext()
