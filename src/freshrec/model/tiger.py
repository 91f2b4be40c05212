"""TIGER: a T5 encoder-decoder that reads history SID tokens and generates the next SID.

Encoder input: SID tokens of the last `max_history` items (optionally preceded by a hashed user
token), left-padded with PAD. Decoder input [BOS, t0 .. t_{P-2}] predicts t0 .. t_{P-1}. SIDs
have a fixed length, so no EOS is trained or generated: decoding always runs sid_len steps.

KV cache (transformers 5.x): `decode_start` runs the encoder once and creates an
`EncoderDecoderCache(DynamicCache, DynamicCache)`; each `decode_step` feeds one decoder token
with `use_cache=True`. The cross-attention K/V are computed on the first step and then reused
(`is_updated`); `reorder` calls the self-attention cache's `reorder_cache` (index_select of
every layer's K/V), and gathers the cross-attention K/V, encoder states and mask only when the
row -> request mapping changes (beam expansion), so beams never recompute anything and the
per-step cost does not grow with the encoder length.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.models.t5.modeling_t5 import T5Attention

from freshrec.model.base import (
    DecodeState,
    GenerateInputs,
    GenerativeRecommender,
    compact_left,
)
from freshrec.model.config import ModelConfig
from freshrec.model.kv_cache import filled_cache
from freshrec.semid.vocab import BOS, PAD, SidVocab


def t5_config(config: ModelConfig, vocab: SidVocab) -> T5Config:
    """The transformers T5Config of a tiger ModelConfig."""
    return T5Config(
        vocab_size=vocab.size,
        d_model=config.d_model,
        d_kv=config.d_kv,
        d_ff=config.d_ff,
        num_layers=config.num_layers,
        num_decoder_layers=config.decoder_layers,
        num_heads=config.num_heads,
        relative_attention_num_buckets=config.relative_attention_num_buckets,
        relative_attention_max_distance=config.relative_attention_max_distance,
        dropout_rate=config.dropout,
        feed_forward_proj=config.activation,
        pad_token_id=PAD,
        eos_token_id=BOS,
        bos_token_id=BOS,
        decoder_start_token_id=BOS,
        is_encoder_decoder=True,
        use_cache=True,
    )


class TigerModel(GenerativeRecommender):
    """T5ForConditionalGeneration wrapped in the GenerativeRecommender API."""

    arch = "tiger"

    def __init__(self, config: ModelConfig, vocab: SidVocab) -> None:
        super().__init__(config, vocab)
        self.t5 = T5ForConditionalGeneration(t5_config(config, vocab))
        # T5 uses dropout_rate for attention probabilities too; allow a separate rate
        for module in self.t5.modules():
            if isinstance(module, T5Attention):
                module.dropout = config.attn_dropout

    # --- training ------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        history, target = batch["history"], batch["target"]
        logits = self._teacher_forced_logits(history, target)
        return self.sid_loss(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))

    def _teacher_forced_logits(
        self, history: torch.Tensor, sid_tokens: torch.Tensor
    ) -> torch.Tensor:
        """logits float[B, P, V] of decoder input [BOS, sid[:, :-1]]."""
        history = compact_left(history)
        dec_in = torch.cat([torch.full_like(sid_tokens[:, :1], BOS), sid_tokens[:, :-1]], dim=1)
        out = self.t5(
            input_ids=history,
            attention_mask=history != PAD,
            decoder_input_ids=dec_in,
            use_cache=False,
        )
        return out.logits

    # --- decoding ------------------------------------------------------------------------
    def decode_start(self, history_tokens: torch.Tensor) -> DecodeState:
        history = compact_left(history_tokens.to(self.device))
        mask = history != PAD
        with self.decoding(None):
            enc = self.t5.encoder(input_ids=history, attention_mask=mask).last_hidden_state
        cache = EncoderDecoderCache(
            DynamicCache(config=self.t5.config), DynamicCache(config=self.t5.config)
        )
        req = torch.arange(enc.shape[0], device=enc.device)  # request of each row
        return {"enc": enc, "mask": mask, "cache": cache, "req": req}

    def decode_step(
        self,
        state: DecodeState,
        tokens: torch.Tensor | None,
        position: int,
        prefixes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B = state["enc"].shape[0]
        if position == 0:
            dec_in = torch.full((B, 1), BOS, dtype=torch.long, device=state["enc"].device)
        else:
            if tokens is None:
                raise ValueError("decode_step needs the previous tokens after position 0")
            dec_in = tokens.reshape(B, 1).to(state["enc"].device)
        with self.decoding(*self.step_context(B, position, prefixes, dec_in.device)):
            out = self.t5(
                encoder_outputs=(state["enc"],),
                attention_mask=state["mask"],
                decoder_input_ids=dec_in,
                past_key_values=state["cache"],
                use_cache=True,
            )
        state["cache"] = out.past_key_values
        return out.logits[:, -1]

    def reorder(self, state: DecodeState, index: torch.Tensor) -> None:
        index = index.to(state["enc"].device)
        state["cache"].self_attention_cache.reorder_cache(index)
        # Encoder states and cross-attention K/V depend only on the request of a row. Beam
        # reorders keep every row within its request, so they are gathered only when that
        # mapping changes (the expansion after step 0), not at every step.
        req = state["req"].index_select(0, index)
        if torch.equal(req, state["req"]):
            return
        for key in ("enc", "mask"):
            state[key] = state[key].index_select(0, index)
        state["cache"].cross_attention_cache.reorder_cache(index)
        state["req"] = req

    def sid_log_probs(self, history_tokens: torch.Tensor, sid_tokens: torch.Tensor) -> torch.Tensor:
        history_tokens = history_tokens.to(self.device)
        sid_tokens = sid_tokens.to(self.device)
        with self.decoding(*self.sid_decode_context(sid_tokens)):
            logits = self._teacher_forced_logits(history_tokens, sid_tokens)
        return self.gather_sid_log_probs(logits, sid_tokens)

    def ffn_out_projs(self) -> list[nn.Linear]:
        return [block.layer[-1].DenseReluDense.wo for block in self.t5.decoder.block]

    # --- representations ------------------------------------------------------------------
    def input_embeddings(self) -> nn.Embedding:
        return self.t5.get_input_embeddings()

    def history_states(self, history_tokens: torch.Tensor) -> torch.Tensor:
        """Encoder states mean-pooled over non-PAD tokens (zeros for an empty history)."""
        hist = compact_left(history_tokens.to(self.device))
        mask = hist != PAD
        with self.decoding(None):
            enc = self.t5.encoder(input_ids=hist, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(enc.dtype)
        return (enc * m).sum(1) / m.sum(1).clamp(min=1.0)

    # --- teacher-forced scoring of one SID position --------------------------------------
    def prompt_states(self, history_tokens: torch.Tensor) -> list[torch.Tensor]:
        """[encoder states, mask, then every decoder layer's cross-attention K, V]."""
        hist = compact_left(history_tokens.to(self.device))
        mask = hist != PAD
        cfg = self.t5.config
        with self.decoding(None):
            enc = self.t5.encoder(input_ids=hist, attention_mask=mask).last_hidden_state
            cache = EncoderDecoderCache(DynamicCache(config=cfg), DynamicCache(config=cfg))
            self.t5(  # one BOS step fills the cross-attention K/V
                encoder_outputs=(enc,),
                attention_mask=mask,
                decoder_input_ids=torch.full_like(hist[:, :1], BOS),
                past_key_values=cache,
                use_cache=True,
            )
        kv = [t for la in cache.cross_attention_cache.layers for t in (la.keys, la.values)]
        return [enc, mask, *kv]

    def position_inputs(
        self, states: list[torch.Tensor], sid_tokens: torch.Tensor, position: int
    ) -> list[torch.Tensor]:
        """[encoder states, mask, decoder input [BOS, t_0 .. t_{p-1}], cross K/V...]."""
        enc, mask, *kv = states
        sid = sid_tokens.to(enc.device)
        dec = torch.cat([torch.full_like(sid[:, :1], BOS), sid[:, :position]], dim=1)
        return [enc, mask, dec, *kv]

    def position_logits(self, inputs: list[torch.Tensor], position: int) -> torch.Tensor:
        """The (p+1)-token decoder on the cached encoder states and cross-attention K/V."""
        enc, mask, dec, *kv = inputs
        cfg = self.t5.config
        cross = filled_cache(cfg, list(zip(kv[::2], kv[1::2], strict=True)))
        cache = EncoderDecoderCache(DynamicCache(config=cfg), cross)
        b = dec.shape[0]
        positions = torch.arange(position + 1, device=dec.device).expand(b, position + 1)
        with self.decoding(positions):
            out = self.t5(
                encoder_outputs=(enc,),
                attention_mask=mask,
                decoder_input_ids=dec,
                past_key_values=cache,
                use_cache=True,
            )
        return out.logits[:, -1]

    def generate_inputs(self, history_tokens: torch.Tensor) -> GenerateInputs:
        inputs = compact_left(history_tokens.to(self.device))
        # decoder sequence = [BOS, generated...]
        return GenerateInputs(self.t5, inputs, inputs != PAD, 1, BOS)
