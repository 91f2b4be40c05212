"""A LIGER-style dense head: the GR model's history state mapped into the text-embedding
space, so that any item with a text embedding, new ones included, can be scored.

Head: Linear-GELU-Linear from the GR model's history state (`model.history_states`)
to the 384-d MiniLM space, unit-normalised; score(j) = cos(head(state), e_j). It is fitted on
the frozen model's training-period (history, target) pairs with an InfoNCE loss over every
warm item's text embedding (LIGER trains it jointly with the SID loss; here the base
checkpoint stays as it is and only the head learns, in a few minutes on a CPU).
`DenseScorer` plugs into `FreshRanker` in place of the content channel.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from freshrec.data.schema import Split
from freshrec.errors import ConfigError
from freshrec.model.base import GenerativeRecommender
from freshrec.model.batches import history_tokens, iterate_batches, tiger_examples
from freshrec.recommend.fresh.content import normalise_rows
from freshrec.recommend.gr import model_window
from freshrec.semid.table import SidTable
from freshrec.semid.trie import SidTrie


class DenseHead(nn.Module):
    """d_model -> hidden -> d_text, plus a learnable InfoNCE logit scale (init 1/0.07)."""

    def __init__(self, d_model: int, d_text: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_text))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """float[B, d_text] unit vectors of history states float[B, d_model]."""
        return F.normalize(self.net(states), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=100.0)


def train_dense_head(
    model: GenerativeRecommender,
    split: Split,
    table: SidTable,
    emb: np.ndarray,
    steps: int = 600,
    *,
    batch_size: int = 256,
    lr: float = 3e-3,
    seed: int = 0,
) -> DenseHead:
    """Fit a DenseHead on the training targets of `split` (model frozen, full softmax over
    the warm items' text embeddings emb float32[n_items, d])."""
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    torch.manual_seed(seed)
    vocab = model.vocab
    tokens = table.tokens(vocab)
    ex = tiger_examples(split, tokens, model.config.max_history, vocab)
    trie = SidTrie.from_table(table.sids, vocab)
    ex["item"] = trie.lookup(np.asarray(vocab.from_tokens(ex["target"].astype(np.int64))))
    warm = np.flatnonzero(~np.asarray(split.is_new, dtype=bool))
    e_warm = normalise_rows(emb)[torch.from_numpy(warm)]
    slot = torch.full((len(emb),), -1, dtype=torch.long)
    slot[torch.from_numpy(warm)] = torch.arange(len(warm))
    head = DenseHead(model.config.d_model, emb.shape[1])
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    model.eval()
    step, epoch = 0, 0
    while step < steps:
        for batch in iterate_batches(ex, batch_size, shuffle=True, seed=seed + epoch):
            with torch.no_grad():
                states = model.history_states(batch["history"])
            logits = head.scale() * head(states) @ e_warm.T
            loss = F.cross_entropy(logits, slot[batch["item"]])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
        epoch += 1
    return head.eval()


class DenseScorer:
    """New-item scores from a DenseHead, with `ContentScorer`'s interface: `scores` (cosine
    units) and `log_probs` over the whole catalog at temperature `temperature`."""

    def __init__(
        self,
        model: GenerativeRecommender,
        head: DenseHead,
        sid_tokens: np.ndarray,
        emb: np.ndarray | torch.Tensor,
        temperature: float = 0.05,
    ) -> None:
        self.model, self.head, self.sid_tokens = model, head, sid_tokens
        self.emb = emb if isinstance(emb, torch.Tensor) else normalise_rows(emb)
        self.temperature = temperature

    @torch.no_grad()
    def query(self, histories: np.ndarray, users: np.ndarray | None = None) -> torch.Tensor:
        window = model_window(histories, self.model.config.max_history)
        tok = history_tokens(window, self.sid_tokens, users, self.model.vocab)
        chunks = range(0, len(tok), 256)
        out = [self.head(self.model.history_states(tok[s : s + 256])) for s in chunks]
        return torch.cat(out) if out else torch.zeros((0, self.emb.shape[1]))

    def scores(self, histories: np.ndarray, items: np.ndarray) -> np.ndarray:
        q = self.query(histories)
        return (q @ self.emb[torch.from_numpy(np.asarray(items, dtype=np.int64))].T).numpy()

    def log_probs(
        self, histories: np.ndarray, items: np.ndarray, reference: np.ndarray, n_total: int
    ) -> np.ndarray:
        q = self.query(histories)
        t = self.temperature
        c = (q @ self.emb[torch.from_numpy(np.asarray(items, dtype=np.int64))].T) / t
        r = (q @ self.emb[torch.from_numpy(np.asarray(reference, dtype=np.int64))].T) / t
        norm = torch.logsumexp(r.double(), dim=1) + math.log(n_total / max(len(reference), 1))
        return (c.double() - norm[:, None]).float().numpy()
