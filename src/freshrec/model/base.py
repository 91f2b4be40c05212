"""The `GenerativeRecommender` interface shared by the tiger (T5) and causal (Llama) models.

Decoding API (used by `freshrec.recommend.beam_search`): `decode_start(history) -> state`,
then for p in 0..sid_len-1 `decode_step(state, prev_token, p, prefixes) -> logits`, with
`reorder(state, index)` to expand or select beams. The state holds the transformers KV cache,
so a step costs one token.

Per-step decode context: during every decoding/scoring forward, `model.decode_context`
(`freshrec.model.decode_context.DecodeContext`) says which SID position each decoder token
predicts and after which decoded SID prefix; forward hooks on `ffn_out_projs()[layer]` (edit
deltas, the prefix gate) read it.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import nn

from freshrec.model.config import ModelConfig
from freshrec.model.decode_context import NO_CONTEXT, DecodeContext
from freshrec.semid.vocab import PAD, SidVocab

DecodeState = dict[str, Any]


class GenerateInputs(NamedTuple):
    """transformers' `generate` on the wrapped model: `hf` (has `generate` and `lm_head`),
    input_ids Long[B, L] and attention_mask Bool[B, L], `start` = index of the first generated
    token in the output sequences, decoder_start_token_id (None for decoder-only models)."""

    hf: nn.Module
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    start: int
    decoder_start_token_id: int | None


class GenerativeRecommender(nn.Module, ABC):
    """Next-item SID generator. `arch` in {"tiger", "causal"}."""

    arch: str

    def __init__(self, config: ModelConfig, vocab: SidVocab) -> None:
        super().__init__()
        self.config = config
        self.vocab = vocab
        # what the decoder tokens of the running forward predict (read by forward hooks)
        self.decode_context: DecodeContext = NO_CONTEXT
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
        self,
        state: DecodeState,
        tokens: torch.Tensor | None,
        position: int,
        prefixes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits float[B', vocab.size] for SID position `position`; `tokens` Long[B'] is the
        token chosen at position-1 (None at position 0). `prefixes` Long[B']: key
        (`SidVocab.prefix_key`) of each row's SID prefix decoded so far, put in the decode
        context (None = unknown). Advances the cache by one token."""

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

    # --- representations ------------------------------------------------------------------
    @abstractmethod
    def input_embeddings(self) -> nn.Embedding:
        """The input token embedding table [vocab.size, d_model]."""

    @abstractmethod
    def history_states(self, history_tokens: torch.Tensor) -> torch.Tensor:
        """float[B, d_model] representation of histories Long[B, T] (no decode context; runs
        with gradients if the caller enables them)."""

    # --- teacher-forced scoring of one SID position (editing) --------------------------------
    prompt_states_see_ffn_edits: bool = False
    """True when `prompt_states` pass through the decoder FFNs (ungated edits change them)."""

    @abstractmethod
    def prompt_states(self, history_tokens: torch.Tensor) -> list[torch.Tensor]:
        """Per-row states (dim 0 = the B rows of histories Long[B, T]) that scoring any SID
        position reuses and no gated edit changes, for `position_inputs`."""

    @abstractmethod
    def position_inputs(
        self, states: list[torch.Tensor], sid_tokens: torch.Tensor, position: int
    ) -> list[torch.Tensor]:
        """Per-row inputs (dim 0 = rows) of `position_logits` for SID position p, teacher-forced
        on the SID prefix sid_tokens[:, :p] (Long[B, P]) given `prompt_states` rows; whatever
        precedes position p's decoder token is computed here, under the decode context."""

    @abstractmethod
    def position_logits(self, inputs: list[torch.Tensor], position: int) -> torch.Tensor:
        """Logits float[b, vocab.size] of SID position p for rows of `position_inputs` (any
        row subset, gathered along dim 0): runs only what depends on position p's decoder
        token, with decode positions = p there (hooks may add differentiable terms)."""

    # --- transformers generate ---------------------------------------------------------------
    @abstractmethod
    def generate_inputs(self, history_tokens: torch.Tensor) -> GenerateInputs:
        """What transformers' `generate` needs to produce SIDs for histories Long[B, T]."""

    # --- shared helpers -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def n_parameters(self) -> int:
        """Distinct trainable parameters (tied embeddings counted once)."""
        return sum(p.numel() for p in self.parameters())

    @contextlib.contextmanager
    def decoding(
        self, positions: torch.Tensor | None, prefixes: torch.Tensor | None = None
    ) -> Iterator[None]:
        """Within: `decode_context` = DecodeContext(positions, prefixes) (both Long[B, T_q] of
        the forward's decoder tokens, or None); the previous context is restored after."""
        before = self.decode_context
        self.decode_context = DecodeContext(positions, prefixes)
        try:
            yield
        finally:
            self.decode_context = before

    @staticmethod
    def step_context(
        rows: int, position: int, prefixes: torch.Tensor | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(positions Long[rows, 1] = position, prefixes Long[rows, 1] or None) of a decoding
        step whose rows decode after the SID prefixes with keys `prefixes` Long[rows]."""
        pos = torch.full((rows, 1), position, dtype=torch.long, device=device)
        return pos, None if prefixes is None else prefixes.to(device).view(rows, 1)

    def sid_decode_context(self, sid_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
