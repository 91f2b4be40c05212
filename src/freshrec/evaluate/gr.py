"""A generative recommender as a `Ranker`: trie-constrained beam search over a chosen catalog.

catalog "warm": the trie holds training-period items only (plain TIGER); "full": every item
with a SID, new items included (TIGER_C, edited models).
"""

from __future__ import annotations

import numpy as np
import torch

from freshrec.data.schema import Requests, Split
from freshrec.model.base import GenerativeRecommender
from freshrec.model.batches import history_tokens
from freshrec.model.beam_search import beam_search
from freshrec.semid.table import SidTable
from freshrec.semid.trie import SidTrie
from freshrec.semid.vocab import SidVocab


def catalog_trie(table: SidTable, vocab: SidVocab, items_mask: np.ndarray | None = None) -> SidTrie:
    """Trie over the assigned items of `table` (optionally only where `items_mask` is True)."""
    return SidTrie.from_table(table.sids, vocab, items_mask)


class GRRanker:
    """Ranks requests with `beam_search(model, ...)` in batches of `batch_size` requests.

    sid_tokens: int64[n_items, sid_len] token ids of every item (history encoding).
    trie: the catalog to decode over. The request's history (last `history_len` items) is the
    model input and the exclusion set.
    """

    def __init__(
        self,
        model: GenerativeRecommender,
        sid_tokens: np.ndarray,
        trie: SidTrie,
        *,
        name: str,
        catalog: str,
        beam_size: int = 50,
        batch_size: int = 256,
    ) -> None:
        self.model = model
        self.sid_tokens = np.asarray(sid_tokens, dtype=np.int64)
        self.trie = trie
        self.name = name
        self.catalog = catalog
        self.beam_size = beam_size
        self.batch_size = batch_size
        self.history_len: int | None = model.config.max_history

    def rank_histories(
        self, histories: np.ndarray, users: np.ndarray, top_k: int = 50
    ) -> tuple[np.ndarray, np.ndarray]:
        """(items int64[n, top_k], scores float32[n, top_k]) for item histories int64[n, H]
        (right-aligned, -1 padded); history items are excluded."""
        n = histories.shape[0]
        items = np.full((n, top_k), -1, dtype=np.int64)
        scores = np.full((n, top_k), -np.inf, dtype=np.float32)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for s in range(0, n, self.batch_size):
                    hist = histories[s : s + self.batch_size]
                    tok = history_tokens(
                        hist, self.sid_tokens, users[s : s + self.batch_size], self.model.vocab
                    )
                    out = beam_search(
                        self.model,
                        tok,
                        self.trie,
                        beam_size=self.beam_size,
                        top_k=top_k,
                        exclude=torch.from_numpy(hist),
                    )
                    items[s : s + len(hist)] = out.items.cpu().numpy()
                    scores[s : s + len(hist)] = out.scores.cpu().numpy()
        finally:
            self.model.train(was_training)
        return items, scores

    def rank(self, split: Split, requests: Requests, top_k: int = 50) -> np.ndarray:
        hist = split.histories(requests, self.model.config.max_history)
        return self.rank_histories(hist, np.asarray(requests.user), top_k)[0]
