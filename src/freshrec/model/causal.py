"""Decoder-only recommender: a small Llama over the flattened SID stream of a user's sequence.

Sequence layout: [BOS, (user token), sid(i1) tokens, sid(i2) tokens, ...]. Training
(`batches.causal_windows`) scores every target item of a window in one forward pass.
Inference: prompt = [BOS, (user), last max_history items' tokens], left-padded (positions
start at 0 at BOS, as in training), then sid_len tokens are generated with the KV cache: a
`StaticCache` preallocated for prompt + sid_len - 1 tokens (updates write in place, no
concatenation). `reorder` gathers the whole cache only when rows move between requests (the
beam expansion after step 0); later beam reorders gather just the fed-back tokens' K/V, since a
request's prompt K/V are the same on all of its beams.

Dropout: Llama only has attention dropout, so the model also applies `config.dropout` to the
input embeddings and, via forward hooks on each `mlp`, to the FFN output (training only; the
hooks sit on the `mlp` module, downstream of `down_proj`, so edit hooks on `down_proj` are
unaffected).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import Cache, DynamicCache, StaticCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from freshrec.model.base import (
    DecodeState,
    GenerateInputs,
    GenerativeRecommender,
    compact_left,
)
from freshrec.model.config import ModelConfig
from freshrec.model.kv_cache import filled_cache
from freshrec.semid.vocab import BOS, PAD, SidVocab


def llama_config(config: ModelConfig, vocab: SidVocab) -> LlamaConfig:
    """The transformers LlamaConfig of a causal ModelConfig."""
    max_len = 2 + (config.max_history + 1) * vocab.sid_len
    return LlamaConfig(
        vocab_size=vocab.size,
        hidden_size=config.d_model,
        intermediate_size=config.d_ff,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        head_dim=config.d_kv,
        hidden_act=config.activation,
        max_position_embeddings=max(max_len, 64),
        attention_dropout=config.attn_dropout,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        tie_word_embeddings=True,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=BOS,
        use_cache=True,
    )


def _ffn_dropout_hook(p: float) -> Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor]:
    """Forward hook: dropout on a module's output, active in training mode only."""

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(output, p, module.training)

    return hook


class CausalModel(GenerativeRecommender):
    """LlamaForCausalLM wrapped in the GenerativeRecommender API."""

    arch = "causal"
    prompt_states_see_ffn_edits = True  # the prompt runs through the decoder FFNs

    def __init__(self, config: ModelConfig, vocab: SidVocab) -> None:
        super().__init__(config, vocab)
        self.llama = LlamaForCausalLM(llama_config(config, vocab))
        self.embed_dropout = nn.Dropout(config.dropout)
        if config.dropout > 0:
            for layer in self.llama.model.layers:
                layer.mlp.register_forward_hook(_ffn_dropout_hook(config.dropout))

    def _forward(
        self,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: Cache | None = None,
        logits_to_keep: int = 0,
    ) -> CausalLMOutputWithPast:
        """Llama forward on token ids Long[B, L] (embedding dropout applied here)."""
        embeds = self.embed_dropout(self.llama.model.embed_tokens(tokens))
        return self.llama(
            inputs_embeds=embeds,
            attention_mask=mask.long(),
            position_ids=positions,
            past_key_values=cache,
            use_cache=cache is not None,
            logits_to_keep=logits_to_keep,
        )

    # --- training ------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens, targets = batch["tokens"], batch["targets"]
        mask = tokens != PAD
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        logits = self._forward(tokens, mask, positions).logits
        sel = targets[:, 1:]
        return self.sid_loss(logits[:, :-1][sel], tokens[:, 1:][sel])

    # --- decoding ------------------------------------------------------------------------
    def _prompt(self, history_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[BOS, history] left-padded: (tokens Long[B, T+1], mask Bool[B, T+1])."""
        history = compact_left(history_tokens.to(self.device))
        B, T = history.shape
        n_real = (history != PAD).sum(dim=1)
        tokens = torch.cat(
            [torch.full((B, 1), PAD, dtype=torch.long, device=history.device), history], 1
        )
        tokens[torch.arange(B, device=history.device), T - n_real] = BOS
        return tokens, tokens != PAD

    @staticmethod
    def _positions(mask: torch.Tensor) -> torch.Tensor:
        return (mask.long().cumsum(dim=1) - 1).clamp(min=0)

    def decode_start(self, history_tokens: torch.Tensor) -> DecodeState:
        tokens, mask = self._prompt(history_tokens)
        B, T = tokens.shape
        # preallocated for the prompt + the sid_len - 1 fed-back tokens: updates write in place
        cache = StaticCache(config=self.llama.config, max_cache_len=T + self.vocab.sid_len - 1)
        # only the last prompt token predicts (SID position 0, after the empty prefix: key 0)
        pos = torch.full((B, 1), -1, dtype=torch.long, device=tokens.device)
        pos = torch.cat([pos.expand(B, T - 1), torch.zeros_like(pos)], dim=1)
        with self.decoding(pos, torch.zeros_like(pos)):
            out = self._forward(tokens, mask, self._positions(mask), cache, logits_to_keep=1)
        return {
            "cache": out.past_key_values,
            "mask": mask,
            "next_pos": mask.sum(dim=1),
            "logits": out.logits[:, -1],
            "req": torch.arange(B, device=tokens.device),  # request of each row
            "prompt_len": T,
        }

    def decode_step(
        self,
        state: DecodeState,
        tokens: torch.Tensor | None,
        position: int,
        prefixes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if position == 0:
            return state["logits"]  # computed by decode_start from the last history token
        if tokens is None:
            raise ValueError("decode_step needs the previous tokens after position 0")
        mask = state["mask"]
        B = mask.shape[0]
        mask = torch.cat([mask, torch.ones((B, 1), dtype=torch.bool, device=mask.device)], 1)
        with self.decoding(*self.step_context(B, position, prefixes, mask.device)):
            out = self._forward(
                tokens.reshape(B, 1).to(mask.device),
                mask,
                state["next_pos"][:, None],
                state["cache"],
            )
        state.update(
            cache=out.past_key_values,
            mask=mask,
            next_pos=state["next_pos"] + 1,
            logits=out.logits[:, -1],
        )
        return state["logits"]

    def reorder(self, state: DecodeState, index: torch.Tensor) -> None:
        index = index.to(state["mask"].device)
        for key in ("mask", "next_pos", "logits"):
            state[key] = state[key].index_select(0, index)
        req = state["req"].index_select(0, index)
        if torch.equal(req, state["req"]):
            # rows stay within their request, whose prompt K/V are identical on every row:
            # only the fed-back SID tokens' K/V (after the prompt) need gathering, in place
            start = state["prompt_len"]
            for layer in state["cache"].layers:
                for buf in (layer.keys, layer.values):
                    buf[:, :, start:] = buf[:, :, start:].index_select(0, index)
        else:
            state["cache"].reorder_cache(index)
            state["req"] = req

    def sid_log_probs(self, history_tokens: torch.Tensor, sid_tokens: torch.Tensor) -> torch.Tensor:
        prompt, pmask = self._prompt(history_tokens)
        sid_tokens = sid_tokens.to(prompt.device)
        P = sid_tokens.shape[1]
        T = prompt.shape[1]
        tokens = torch.cat([prompt, sid_tokens[:, :-1]], dim=1)
        mask = torch.cat([pmask, torch.ones_like(sid_tokens[:, :-1], dtype=torch.bool)], dim=1)
        positions = torch.full_like(tokens, -1)
        prefixes = torch.full_like(tokens, -1)
        positions[:, T - 1 :], prefixes[:, T - 1 :] = self.sid_decode_context(sid_tokens)
        with self.decoding(positions, prefixes):
            logits = self._forward(tokens, mask, self._positions(mask), logits_to_keep=P).logits
        return self.gather_sid_log_probs(logits, sid_tokens)

    def ffn_out_projs(self) -> list[nn.Linear]:
        return [layer.mlp.down_proj for layer in self.llama.model.layers]

    # --- representations ------------------------------------------------------------------
    def input_embeddings(self) -> nn.Embedding:
        return self.llama.get_input_embeddings()

    def history_states(self, history_tokens: torch.Tensor) -> torch.Tensor:
        """Last-layer (normed) hidden state of the last prompt token: the state the model
        predicts the first SID token from."""
        tokens, mask = self._prompt(history_tokens)
        embeds = self.embed_dropout(self.llama.model.embed_tokens(tokens))
        with self.decoding(None):
            out = self.llama.model(
                inputs_embeds=embeds,
                attention_mask=mask.long(),
                position_ids=self._positions(mask),
                use_cache=False,
            )
        return out.last_hidden_state[:, -1]

    # --- teacher-forced scoring of one SID position --------------------------------------
    def prompt_states(self, history_tokens: torch.Tensor) -> list[torch.Tensor]:
        """[prompt, prompt mask, then the K, V of every layer for the prompt minus its last
        token (decode positions -1: gated edits never fire there)]."""
        prompt, pmask = self._prompt(history_tokens)
        positions = self._positions(pmask)
        with self.decoding(torch.full_like(prompt[:, :-1], -1)):
            out = self._forward(
                prompt[:, :-1],
                pmask[:, :-1],
                positions[:, :-1],
                DynamicCache(config=self.llama.config),
                1,
            )
        kv = [t for la in out.past_key_values.layers for t in (la.keys, la.values)]
        return [prompt, pmask, *kv]

    def position_inputs(
        self, states: list[torch.Tensor], sid_tokens: torch.Tensor, position: int
    ) -> list[torch.Tensor]:
        """Extends the prompt cache with [last prompt token, t_0 .. t_{p-2}] (decode positions
        0 .. p-1) once: [the token predicting t_p, mask, its position id, K/V...]."""
        prompt, pmask, *kv = states
        p, n, T = position, prompt.shape[0], prompt.shape[1]
        sid = sid_tokens.to(prompt.device)
        tokens = torch.cat([prompt, sid[:, :p]], dim=1)  # the last token predicts t_p
        mask = torch.cat([pmask, torch.ones_like(sid[:, :p], dtype=torch.bool)], dim=1)
        positions = self._positions(mask)
        if p > 0:
            cache = filled_cache(self.llama.config, list(zip(kv[::2], kv[1::2], strict=True)))
            ext = slice(T - 1, T - 1 + p)
            with torch.no_grad(), self.decoding(torch.arange(p, device=prompt.device).expand(n, p)):
                out = self._forward(
                    tokens[:, ext], mask[:, : T - 1 + p], positions[:, ext], cache, 1
                )
            kv = [t for la in out.past_key_values.layers for t in (la.keys, la.values)]
        return [tokens[:, -1:], mask, positions[:, -1:], *kv]

    def position_logits(self, inputs: list[torch.Tensor], position: int) -> torch.Tensor:
        """One token (the one predicting t_p) on the cached prompt + prefix."""
        last, mask, pos, *kv = inputs
        cache = filled_cache(self.llama.config, list(zip(kv[::2], kv[1::2], strict=True)))
        positions = torch.full((last.shape[0], 1), position, dtype=torch.long, device=last.device)
        with self.decoding(positions):
            out = self._forward(last, mask, pos, cache, 1)
        return out.logits[:, -1]

    def generate_inputs(self, history_tokens: torch.Tensor) -> GenerateInputs:
        inputs, mask = self._prompt(history_tokens)
        return GenerateInputs(self.llama, inputs, mask, inputs.shape[1], None)
