"""`GRRanker`: a generative recommender ranking histories by trie-constrained beam search over
one scope of a `Catalog` ("warm": training-period items, plain TIGER; "full": every
recommendable item, new ones included, TIGER_C and edited models; "new": new items only).

It satisfies `freshrec.evaluate.Ranker` (name, catalog, history_len, rank) structurally.
"""

from __future__ import annotations

import numpy as np
import torch

from freshrec.data.schema import Requests, Split
from freshrec.errors import ConfigError
from freshrec.model.base import GenerativeRecommender
from freshrec.model.batches import history_tokens
from freshrec.recommend.beam_search import beam_search
from freshrec.recommend.catalog import Catalog, Scope


def model_window(histories: np.ndarray, length: int) -> np.ndarray:
    """The last `length` items of right-aligned, -1 padded histories int64[n, H], left-padded
    with -1 to exactly int64[n, length] (the model input)."""
    hist = np.asarray(histories, dtype=np.int64)[:, -length:]
    if hist.shape[1] == length:
        return hist
    pad = np.full((hist.shape[0], length - hist.shape[1]), -1, dtype=np.int64)
    return np.concatenate([pad, hist], axis=1)


def drop_items(histories: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """Right-aligned, -1 padded histories int64[n, H] without the items flagged in bool[n_items]
    `drop`, the rest kept in order and right-aligned; a row that would be left empty keeps its
    items (the model needs a prompt)."""
    hist = np.asarray(histories, dtype=np.int64)
    keep = hist >= 0
    keep[keep] = ~np.asarray(drop, dtype=bool)[hist[keep]]
    empty = ~keep.any(axis=1)
    keep[empty] = hist[empty] >= 0
    order = np.argsort(keep, axis=1, kind="stable")  # dropped first, kept last, both in order
    return np.take_along_axis(np.where(keep, hist, -1), order, axis=1)


class GRRanker:
    """Ranks item histories with `beam_search(model, ...)` in batches of `batch_size` rows.

    view: the Catalog to decode over (its SID tokens encode histories); scope: which of its
    items may be returned. catalog: "warm" | "full" (evaluate's Ranker protocol; scope "new"
    counts as "full"). retries: when excluding the history leaves a row with fewer than its
    top_k valid items (although the scope has them), search those rows again with a 4x wider
    beam, at most `retries` times (0 = plain beam search, the evaluation protocol's).
    prompt_new_items: False = the model reads only the items it was trained on (the view's
    `is_new` items are dropped from the prompt, as SASRec, which has no embedding for them,
    does); the history exclusion still covers every history item.
    """

    def __init__(
        self,
        model: GenerativeRecommender,
        view: Catalog,
        *,
        scope: Scope = "full",
        name: str | None = None,
        beam_size: int = 50,
        batch_size: int = 256,
        retries: int = 0,
        prompt_new_items: bool = True,
    ) -> None:
        if beam_size < 1 or batch_size < 1 or retries < 0:
            raise ConfigError("beam_size and batch_size must be >= 1, retries >= 0")
        if view.vocab != model.vocab:
            raise ConfigError(f"catalog vocab {view.vocab} does not match model vocab")
        view.mask(scope)  # validates the scope
        self.model = model
        self.view = view
        self.scope: Scope = scope
        self.catalog = "warm" if scope == "warm" else "full"
        self.name = name or (model.arch.upper() if scope == "warm" else f"{model.arch.upper()}_C")
        self.beam_size = beam_size
        self.batch_size = batch_size
        self.retries = retries
        self.prompt_new_items = prompt_new_items
        self.history_len: int | None = model.config.max_history

    def rank_histories(
        self,
        histories: np.ndarray,
        users: np.ndarray | None = None,
        top_k: int | np.ndarray = 50,
        *,
        exclude_history: bool = True,
        beam_size: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(items int64[n, K], scores float32[n, K]: summed SID log-probs, best first; -1 /
        -inf for empty slots) for item histories int64[n, H] (right-aligned, -1 padded; the
        model reads the last `history_len`). top_k: int, or int64[n] per row (K = max; the
        retry fills each row up to its own). exclude_history: never return a history item.
        users: int[n] user indices (user-bucket tokens), or None. beam_size overrides the
        ranker's for this call."""
        hist = np.asarray(histories, dtype=np.int64)
        if hist.ndim != 2 or hist.shape[1] < 1:
            raise ConfigError(f"histories must be int64[n, H >= 1], got shape {hist.shape}")
        n = hist.shape[0]
        ks = np.broadcast_to(np.asarray(top_k, dtype=np.int64), (n,))
        if n and ks.min() < 1:
            raise ConfigError(f"top_k must be >= 1, got {int(ks.min())}")
        k = int(ks.max()) if n else max(1, int(np.max(top_k)))
        users = np.zeros(n, dtype=np.int64) if users is None else np.asarray(users)
        beam = beam_size or self.beam_size
        items = np.full((n, k), -1, dtype=np.int64)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        if self.view.size(self.scope) == 0:
            return items, scores
        was_training = self.model.training
        self.model.eval()
        try:
            for s in range(0, n, self.batch_size):
                rows = slice(s, s + self.batch_size)
                out = self._batch(hist[rows], users[rows], ks[rows], exclude_history, beam)
                items[rows], scores[rows] = out
        finally:
            self.model.train(was_training)
        return items, scores

    def _search(
        self, tokens: torch.Tensor, k: int, exclude: torch.Tensor | None, beam: int
    ) -> tuple[np.ndarray, np.ndarray]:
        res = beam_search(self.model, tokens, self.view.trie(self.scope), beam, k, exclude)
        return res.items.cpu().numpy(), res.scores.cpu().numpy()

    @torch.no_grad()
    def _batch(
        self, hist: np.ndarray, users: np.ndarray, ks: np.ndarray, exclude_history: bool, beam: int
    ) -> tuple[np.ndarray, np.ndarray]:
        assert self.history_len is not None
        prompt = hist if self.prompt_new_items else drop_items(hist, self.view.is_new)
        window = model_window(prompt, self.history_len)
        tokens = history_tokens(window, self.view.sid_tokens, users, self.model.vocab)
        exclude = torch.from_numpy(hist) if exclude_history else None
        k = int(ks.max())
        items, scores = self._search(tokens, k, exclude, beam)
        if self.retries == 0:
            return items, scores
        # beams whose items were all excluded can leave a row short of its top_k items:
        # search those rows again with a wider beam
        n_cat = self.view.size(self.scope)
        avail = n_cat - np.asarray([len(set(r[r >= 0].tolist())) for r in hist])
        want = np.minimum(ks, avail if exclude_history else n_cat)
        for _ in range(self.retries):
            short = np.flatnonzero((items >= 0).sum(1) < want)
            if short.size == 0 or beam >= n_cat:
                break
            beam *= 4
            sub = exclude[short] if exclude is not None else None
            items[short], scores[short] = self._search(tokens[short], k, sub, beam)
        return items, scores

    def rank(self, split: Split, requests: Requests, top_k: int = 50) -> np.ndarray:
        """int64[n, top_k] for evaluation requests (history = the last `history_len` items)."""
        hist = split.histories(requests, self.model.config.max_history)
        return self.rank_histories(hist, np.asarray(requests.user), top_k)[0]
