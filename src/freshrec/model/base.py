"""The `GenerativeRecommender` interface shared by the tiger (T5) and causal (Llama) models.

Decoding API (used by `beam_search`): `decode_start(history) -> state`, then for p in
0..sid_len-1 `decode_step(state, prev_token, p) -> logits`, with `reorder(state, index)` to
expand or select beams. The state holds the transformers KV cache, so a step costs one token.

Editing hooks: during every decoding/scoring forward, `model.trigger_positions` is set to
Long[B, T_q] (the decoder tokens of that forward): value p at a token whose output predicts SID
token p of the item being recommended, -1 elsewhere; it is None outside those forwards
(training included). A forward hook on `ffn_out_projs()[layer]` reads it.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from freshrec.model.config import ModelConfig
from freshrec.semid.vocab import PAD, SidVocab

DecodeState = dict[str, Any]


class GenerativeRecommender(nn.Module, ABC):
    """Next-item SID generator. `arch` in {"tiger", "causal"}."""

    arch: str

    def __init__(self, config: ModelConfig, vocab: SidVocab) -> None:
        super().__init__()
        self.config = config
        self.vocab = vocab
        self.trigger_positions: torch.Tensor | None = None
        # Long[B, T_q] alongside trigger_positions: key (`SidVocab.prefix_keys`) of the SID
        # prefix decoded before each token, or None when unknown (prefix-gated edits then fire
        # wherever their position matches). `step_prefixes` Long[B] is set by the beam search
        # for the rows of its next decoding forward.
        self.trigger_prefixes: torch.Tensor | None = None
        self.step_prefixes: torch.Tensor | None = None
        P, total = vocab.sid_len, sum(vocab.sizes)
        # block_mask[p, j]: token offsets[0] + j belongs to SID position p's block
        mask = torch.zeros(P, total, dtype=torch.bool)
        for p in range(P):
            sl = vocab.block(p)
            mask[p, sl.start - vocab.offsets[0] : sl.stop - vocab.offsets[0]] = True
        self.register_buffer("_block_mask", mask, persistent=False)
        # token t is in block p iff bounds[p-1] <= t < bounds[p] (bounds = block ends)
        self._block_bounds = torch.tensor([vocab.block(p).stop for p in range(P - 1)])

    # --- training --------------------------------------------------------------------------
    @abstractmethod
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over the target SID tokens of a batch from `model.batches`."""

    # --- decoding ----------------------------------------------------------------------------
    @abstractmethod
    def decode_start(self, history_tokens: torch.Tensor) -> DecodeState:
        """Encode histories Long[B, T] (PAD-padded on the left) and prepare the KV cache."""

    @abstractmethod
    def decode_step(
        self, state: DecodeState, tokens: torch.Tensor | None, position: int
    ) -> torch.Tensor:
        """Logits float[B', vocab.size] for SID position `position`; `tokens` Long[B'] is the
        token chosen at position-1 (None at position 0). Advances the cache by one token."""

    @abstractmethod
    def reorder(self, state: DecodeState, index: torch.Tensor) -> None:
        """Select/expand rows of the state in place: new row i = old row index[i]."""

    @abstractmethod
    def sid_log_probs(self, history_tokens: torch.Tensor, sid_tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced log-probs float[B, P] of SID tokens Long[B, P] given histories
        Long[B, T]; position p is log-softmaxed over `vocab.block(p)` only."""

    @abstractmethod
    def ffn_out_projs(self) -> list[nn.Linear]:
        """FFN output projections of the decoder layers, in layer order."""

    # --- shared helpers -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def n_parameters(self) -> int:
        """Distinct trainable parameters (tied embeddings counted once)."""
        return sum(p.numel() for p in self.parameters())

    @contextlib.contextmanager
    def triggers(
        self, positions: torch.Tensor | None, prefixes: torch.Tensor | None = None
    ) -> Iterator[None]:
        """Set `trigger_positions` (and `trigger_prefixes`: `prefixes`, else the beam search's
        `step_prefixes` broadcast over the tokens) for one forward, then clear them."""
        if prefixes is None and positions is not None and self.step_prefixes is not None:
            prefixes = self.step_prefixes.to(positions.device)[:, None].expand_as(positions)
        self.trigger_positions = positions
        self.trigger_prefixes = prefixes
        try:
            yield
        finally:
            self.trigger_positions = None
            self.trigger_prefixes = None

    @contextlib.contextmanager
    def decoding_prefixes(self, keys: torch.Tensor) -> Iterator[None]:
        """Within: the decoding forwards' rows decode after the SID prefixes with keys
        Long[rows] (`SidVocab.prefix_key`), read by prefix-gated edits."""
        before = self.step_prefixes
        self.step_prefixes = keys
        try:
            yield
        finally:
            self.step_prefixes = before

    def sid_triggers(self, sid_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing on SID tokens Long[B, P]: (positions Long[B, P] = 0..P-1,
        prefixes Long[B, P] = key of sid[:p] at column p)."""
        codes = torch.as_tensor(self.vocab.from_tokens(sid_tokens.long()))
        B, P = codes.shape
        positions = torch.arange(P, device=codes.device).expand(B, P)
        return positions, self.vocab.prefix_keys(codes)

    def block_log_softmax(self, logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Log-softmax of logits float[..., vocab.size] over the block of SID position
        `positions` Long[...] (same leading shape); returns float[..., sum(sizes)] indexed by
        token - offsets[0], -inf outside the block."""
        start = self.vocab.offsets[0]
        sub = logits[..., start : start + self._block_mask.shape[1]].float()
        sub = sub.masked_fill(~self._block_mask[positions], float("-inf"))
        return torch.log_softmax(sub, dim=-1)

    def gather_sid_log_probs(self, logits: torch.Tensor, sid_tokens: torch.Tensor) -> torch.Tensor:
        """logits float[B, P, vocab.size] predicting SID tokens Long[B, P] -> float[B, P]."""
        P = sid_tokens.shape[1]
        positions = torch.arange(P, device=logits.device).expand(sid_tokens.shape[0], P)
        lp = self.block_log_softmax(logits, positions)
        return lp.gather(-1, (sid_tokens - self.vocab.offsets[0]).unsqueeze(-1)).squeeze(-1)

    def token_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """SID position Long[...] of SID token ids Long[...] (which block each token is in)."""
        bounds = self._block_bounds.to(tokens.device)
        return torch.bucketize(tokens, bounds, right=True).clamp(0, self.vocab.sid_len - 1)

    def sid_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean CE of logits float[N, vocab.size] vs SID tokens Long[N], each normalised over
        its own position's block (the normalisation beam search scores with)."""
        lp = self.block_log_softmax(logits, self.token_positions(targets))
        return -lp.gather(-1, (targets - self.vocab.offsets[0]).unsqueeze(-1)).mean()


def compact_left(tokens: torch.Tensor) -> torch.Tensor:
    """Move PAD tokens of Long[B, T] to the left, keeping the order of the others."""
    real = tokens != PAD
    if not bool((real[:, :-1] & ~real[:, 1:]).any()):
        return tokens  # already left-padded
    order = torch.sort(real.to(torch.int8), dim=1, stable=True).indices
    return tokens.gather(1, order)


def build_model(config: ModelConfig, vocab: SidVocab) -> GenerativeRecommender:
    """A freshly initialised model of `config.arch` for `vocab`."""
    if config.arch == "tiger":
        from freshrec.model.tiger import TigerModel

        return TigerModel(config, vocab)
    from freshrec.model.causal import CausalModel

    return CausalModel(config, vocab)
