"""SpecGR++-style self-drafter: the GR model's own encoder as an inductive retriever.

User vector: the GR model's representation of the history (`model.history_states`; tiger:
mean-pooled encoder states; causal: the final hidden state at the last prompt token) through a
small MLP head.
Item vector: the model's input token embeddings of the item's SID codes (concatenated over
positions) through another small MLP head. Both are L2-normalised; score = inner product.

Because an item's vector is a function of its SID only, a new item is scored as soon as the
tokenizer gives it a SID: no training step ever sees it. `train_self_drafter` fits the heads
with an InfoNCE loss on the training period (optionally fine-tuning the whole model with the
generative loss kept, which changes the verifier too).

Unlike SpecGR++ (which projects and mean-pools the encoder states of the item's SID sequence),
items here skip the encoder: a lookup + MLP per item, so the whole catalog is embedded in
milliseconds and the encoder is run once per request.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from freshrec.atomic import atomic_dir, write_json
from freshrec.data.schema import Split
from freshrec.errors import CheckpointError, ConfigError
from freshrec.manifest import read_json_object
from freshrec.model.base import GenerativeRecommender
from freshrec.model.batches import iterate_batches, tiger_examples, training_examples
from freshrec.semid.table import SidTable
from freshrec.semid.trie import SidTrie

HEADS_FILE = "heads.safetensors"
HEADS_CONFIG = "self_drafter.json"
NEG_INF = float("-inf")


# --------------------------------------------------------------------------- representations
def item_features(
    model: GenerativeRecommender, sid_tokens: torch.Tensor, n_positions: int
) -> torch.Tensor:
    """float[N, n_positions * d_model]: input embeddings of the first `n_positions` SID tokens
    of Long[N, sid_len] (token ids; rows of -1 give zeros), concatenated over positions."""
    emb = model.input_embeddings()
    tok = sid_tokens[:, :n_positions].to(emb.weight.device)
    valid = (tok >= 0).all(dim=1, keepdim=True)
    feats = emb(tok.clamp(min=0)).flatten(1)
    return feats * valid.to(feats.dtype)


class SelfDraftHeads(nn.Module):
    """The two projection heads (user: d_model -> d_proj; item: n_positions*d_model -> d_proj,
    each Linear-GELU-Linear) and a learnable InfoNCE logit scale (init 1/0.07, max 100)."""

    def __init__(self, d_model: int, n_positions: int, d_proj: int = 64, hidden: int = 128) -> None:
        super().__init__()
        self.d_model, self.n_positions, self.d_proj, self.hidden = (
            d_model,
            n_positions,
            d_proj,
            hidden,
        )
        self.user = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_proj))
        self.item = nn.Sequential(
            nn.Linear(n_positions * d_model, hidden), nn.GELU(), nn.Linear(hidden, d_proj)
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def config(self) -> dict[str, int]:
        return {
            "d_model": self.d_model,
            "n_positions": self.n_positions,
            "d_proj": self.d_proj,
            "hidden": self.hidden,
        }

    def users(self, states: torch.Tensor) -> torch.Tensor:
        """float[B, d_proj] unit user vectors of float[B, d_model] states."""
        return F.normalize(self.user(states), dim=-1)

    def items(self, feats: torch.Tensor) -> torch.Tensor:
        """float[N, d_proj] unit item vectors of `item_features` float[N, n_positions*d]."""
        return F.normalize(self.item(feats), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=100.0)


# --------------------------------------------------------------------------- drafter
class SelfDrafter:
    """Drafter scoring every item with a SID by <user vector, item vector> (see module doc).

    sid_tokens: int64[n_items, sid_len] token ids of the catalog (`SidTable.tokens`), -1 rows
    for items without a SID (scored -inf). Item vectors are cached; call `set_items` when the
    catalog grows and `refresh` after changing the model or heads.
    """

    def __init__(
        self,
        model: GenerativeRecommender,
        heads: SelfDraftHeads,
        sid_tokens: np.ndarray,
        *,
        name: str = "self",
    ) -> None:
        if heads.d_model != model.config.d_model:
            raise ConfigError(
                f"heads expect d_model {heads.d_model}, the model has {model.config.d_model}"
            )
        self.model = model
        self.heads = heads.to(model.device).eval()
        self.name = name
        self.set_items(sid_tokens)

    def set_items(self, sid_tokens: np.ndarray) -> None:
        """Use catalog tokens int64[n_items, sid_len] (e.g. after new items got SIDs)."""
        self.sid_tokens = torch.as_tensor(np.asarray(sid_tokens, dtype=np.int64))
        self._items: torch.Tensor | None = None

    def refresh(self) -> None:
        """Drop the cached item vectors (recomputed at the next `score`)."""
        self._items = None

    @property
    def assigned(self) -> torch.Tensor:
        """Bool[n_items]: items with a SID."""
        return (self.sid_tokens >= 0).all(dim=1)

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """float[n_items, d_proj] unit item vectors (zeros for items without a SID)."""
        if self._items is None:
            feats = item_features(self.model, self.sid_tokens, self.heads.n_positions)
            vec = self.heads.items(feats)
            self._items = vec * self.assigned.to(vec.device).unsqueeze(1).to(vec.dtype)
        return self._items

    @torch.no_grad()
    def score(self, histories: torch.Tensor, history_tokens: torch.Tensor) -> torch.Tensor:
        """float32[B, n_items] inner products; -inf for items without a SID."""
        was = self.model.training
        self.model.eval()
        try:
            u = self.heads.users(self.model.history_states(history_tokens))
        finally:
            self.model.train(was)
        s = (u @ self.item_vectors().T).float().cpu()
        return s.masked_fill(~self.assigned, NEG_INF)

    # ------------------------------------------------------------------ I/O
    def save(self, folder: str | Path) -> Path:
        """Write the heads (safetensors + json config) to `folder`, atomically."""
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            state = {k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}
            save_file(state, str(tmp / HEADS_FILE))
            write_json(tmp / HEADS_CONFIG, {"heads": self.heads.config(), "arch": self.model.arch})
        return folder

    @classmethod
    def load(
        cls, folder: str | Path, model: GenerativeRecommender, sid_tokens: np.ndarray
    ) -> SelfDrafter:
        """Heads written by `save`, attached to `model` (the model they were trained with)."""
        folder = Path(folder)
        cfg = read_json_object(folder / HEADS_CONFIG, "self-drafter config")
        try:
            heads = SelfDraftHeads(**cfg["heads"])
            heads.load_state_dict(load_file(str(folder / HEADS_FILE)))
        except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{folder}: not a self-drafter folder ({exc})") from None
        return cls(model, heads, sid_tokens)


# --------------------------------------------------------------------------- training
def info_nce(
    users: torch.Tensor,
    items: torch.Tensor,
    labels: torch.Tensor,
    scale: torch.Tensor,
    same: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of unit users float[B, d] over unit candidate items float[M, d] with
    positives labels Long[B]; `same` Bool[B, M] masks false negatives (other copies of a
    row's positive item) out of the softmax."""
    logits = scale * users @ items.T
    if same is not None:
        logits = logits.masked_fill(same, NEG_INF)
    return F.cross_entropy(logits, labels)


def train_self_drafter(
    model: GenerativeRecommender,
    split: Split,
    table: SidTable,
    steps: int = 300,
    *,
    batch_size: int = 256,
    lr: float = 3e-3,
    d_proj: int = 64,
    hidden: int = 128,
    include_collision: bool = False,
    negatives: Literal["batch", "catalog"] = "batch",
    finetune_model: bool = False,
    gen_weight: float = 1.0,
    model_lr: float = 1e-4,
    seed: int = 0,
    log: list[dict[str, float]] | None = None,
) -> SelfDrafter:
    """Fit self-drafter heads on `split`'s training targets with InfoNCE; returns the drafter.

    Examples: every training-period (history, target) pair (`tiger_examples`, for both
    archs). negatives "batch": the other targets of the batch (copies of the positive item
    masked out); "catalog": every warm item with a SID (full softmax). Only the heads train
    unless `finetune_model`, which also trains the whole GR model at `model_lr` with
    loss = InfoNCE + gen_weight * generative loss (its own training batches).
    include_collision: item vectors also read the collision-digit token (default: codes only,
    so a new item is embedded exactly like the warm items of its code group).
    `log` (if given) receives {"step", "loss", "seconds"} every 50 steps and at the end.
    """
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if negatives not in ("batch", "catalog"):
        raise ConfigError(f"negatives must be 'batch' or 'catalog', got {negatives!r}")
    vocab = model.vocab
    torch.manual_seed(seed)
    tokens = table.tokens(vocab)
    ex = _drafter_examples(model, split, table, tokens)
    n_pos = vocab.sid_len if include_collision else vocab.n_levels
    heads = SelfDraftHeads(model.config.d_model, n_pos, d_proj, hidden).to(model.device)
    catalog = _warm_catalog(split, table, tokens, model.device) if negatives == "catalog" else None

    groups = [{"params": list(heads.parameters()), "lr": lr}]
    if finetune_model:
        groups.append({"params": list(model.parameters()), "lr": model_lr})
        gen_ex = training_examples(model.config, split, tokens, vocab)
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    batches = _endless_batches(ex, batch_size, seed)
    gen_batches = _endless_batches(gen_ex, batch_size, seed) if finetune_model else None
    model.train(finetune_model)
    heads.train()
    t0 = time.perf_counter()
    try:
        for step in range(1, steps + 1):
            loss = _drafter_loss(model, heads, next(batches), n_pos, catalog, finetune_model)
            if gen_batches is not None:
                gen = {k: v.to(model.device) for k, v in next(gen_batches).items()}
                loss = loss + gen_weight * model.loss(gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if log is not None and (step % 50 == 0 or step == steps):
                log.append(
                    {
                        "step": step,
                        "loss": float(loss.detach()),
                        "seconds": time.perf_counter() - t0,
                    }
                )
    finally:
        model.eval()
        heads.eval()
    return SelfDrafter(model, heads, tokens)


def _drafter_examples(
    model: GenerativeRecommender, split: Split, table: SidTable, tokens: np.ndarray
) -> dict[str, np.ndarray]:
    """Every training-period (history, target) pair (`tiger_examples`: "history" int64[n, T],
    "target" int64[n, sid_len] tokens) plus "item": int64[n] the target's item index.
    tokens: int64[n_items, sid_len] the catalog's SID tokens."""
    vocab = model.vocab
    ex = tiger_examples(split, tokens, model.config.max_history, vocab)
    if ex["target"].shape[0] == 0:
        raise ConfigError("no training examples: the split has no training targets")
    trie = SidTrie.from_table(table.sids, vocab)
    ex["item"] = trie.lookup(np.asarray(vocab.from_tokens(ex["target"].astype(np.int64))))
    return ex


def _warm_catalog(
    split: Split, table: SidTable, tokens: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The candidates of negatives="catalog": (Long[m, sid_len] tokens of the m warm items
    with a SID, on `device`; Long[n_items] each item's row among them, -1 for other items)."""
    warm = np.flatnonzero(~np.asarray(split.is_new, dtype=bool) & table.assigned_mask)
    warm_tok = torch.from_numpy(tokens[warm]).to(device)
    slot = torch.full((table.n_items,), -1, dtype=torch.long)
    slot[torch.from_numpy(warm)] = torch.arange(len(warm))
    return warm_tok, slot


def _endless_batches(
    examples: dict[str, np.ndarray], batch_size: int, seed: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Shuffled batches of `examples` without end, reshuffled every epoch (seed + epoch)."""
    epoch = 0
    while True:
        yield from iterate_batches(examples, batch_size, shuffle=True, seed=seed + epoch)
        epoch += 1


def _drafter_loss(
    model: GenerativeRecommender,
    heads: SelfDraftHeads,
    batch: dict[str, torch.Tensor],
    n_pos: int,
    catalog: tuple[torch.Tensor, torch.Tensor] | None,
    grad_model: bool,
) -> torch.Tensor:
    """InfoNCE of a batch's user vectors (from "history" Long[B, T]) against its targets'
    item vectors: over the batch's targets (other copies of the positive masked out) when
    `catalog` is None, else over every warm item (`_warm_catalog`, full softmax). The model's
    states and item features carry gradients only when `grad_model`."""
    items = batch["item"].to(model.device)
    with torch.set_grad_enabled(grad_model):
        states = model.history_states(batch["history"])
        if catalog is None:
            feats = item_features(model, batch["target"], n_pos)
        else:
            feats = item_features(model, catalog[0], n_pos)
    u = heads.users(states)
    if catalog is None:
        same = items[:, None] == items[None, :]
        same.fill_diagonal_(False)
        labels = torch.arange(len(items), device=model.device)
        return info_nce(u, heads.items(feats), labels, heads.scale(), same)
    return info_nce(u, heads.items(feats), catalog[1].to(model.device)[items], heads.scale())
