"""`Session`: the one recommend path. A model (with its edit stack), the catalog it decodes over
and the recipe's decoding settings; `recommend(histories, top_k, mode)` for every caller (the
CLI's recommend modes, evaluation, benchmarks, the service).

```python
session = Session.open(recipe, checkpoint, edit_packs=["<pack id>"])
user, hist = session.user_history("1")               # int64[1, max_history]
recs = session.recommend(hist, top_k=10, users=[user])     # mode "fresh": warm + new items
recs.items, recs.scores, recs.is_new                 # [1, 10] each
```

Modes are a registry (`recommend.modes.MODES`: name -> factory(session, scope, **options) ->
a ranker with `rank_histories(histories, users, top_k, *, exclude_history)`); one
`@register_mode("name")` adds a mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from freshrec.data.schema import Split
from freshrec.errors import ConfigError, UnknownItemError
from freshrec.model.base import GenerativeRecommender
from freshrec.model.checkpoint import load_checkpoint, resolve_checkpoint
from freshrec.model.edit_packs import EditPack, EditStack, pack_folder
from freshrec.recommend.catalog import SCOPES, Catalog, Scope
from freshrec.recommend.fresh.params import FreshParams
from freshrec.recommend.modes import MODES, ModeRanker
from freshrec.workspace import Workspace

if TYPE_CHECKING:
    from freshrec.config import Recipe


DEFAULT_MODE = "fresh"
"""What `recommend` uses unless told otherwise: warm and new items fused."""


class Recommendations(NamedTuple):
    """items int64[n, K] (-1 = empty slot), scores float32[n, K] (higher = better; the mode's
    score: beam = summed SID log-prob, spec = mean SID log-prob, fresh = the mixture log-score;
    -inf on empty slots), is_new
    bool[n, K] (False on empty slots)."""

    items: np.ndarray
    scores: np.ndarray
    is_new: np.ndarray


def user_history(split: Split, user_id: str, max_history: int) -> tuple[int, np.ndarray]:
    """(user index, int64[1, max_history]) the last items of a user's whole sequence,
    right-aligned and -1 padded. Unknown users and empty histories are clear errors."""
    users = {u: i for i, u in enumerate(split.dataset.user_ids)}
    if user_id not in users:
        raise UnknownItemError(f"unknown user id {user_id!r} (dataset has {len(users)} users)")
    u = users[user_id]
    seq = split.sequence(u)
    if len(seq) == 0:
        raise ConfigError(f"user {user_id!r} has an empty history")
    hist = np.full((1, max_history), -1, dtype=np.int64)
    tail = seq[-max_history:]
    hist[0, -len(tail) :] = tail
    return u, hist


class Session:
    """A model (edit packs applied by `edit_stack`, if any) recommending over a `Catalog`.

    beam_size / batch_size: the recipe's decoding settings (`eval.beam_size`,
    `eval.batch_size`); retries: the beam mode's wider-beam retries (0 = plain beam search).
    split: the prepared data (users, `user_history`), if any. embeddings: item text
    embeddings float32[n_items, d], or a function loading them on first use (text drafters).
    tokenizer_fingerprint: the SID tokenizer the model and catalog belong to, if known.
    fresh: the fused ranker's calibration (mode "fresh"; default: the built-in values).
    prompt_new_items: whether the GR model's prompt keeps the catalog's new items (the recipe's
    `eval.prompt_new_items`; see `GRRanker`).
    """

    def __init__(
        self,
        model: GenerativeRecommender,
        catalog: Catalog,
        *,
        edit_stack: EditStack | None = None,
        split: Split | None = None,
        beam_size: int = 50,
        batch_size: int = 256,
        retries: int = 0,
        embeddings: np.ndarray | Callable[[], np.ndarray] | None = None,
        workspace: Workspace | None = None,
        tokenizer_fingerprint: str | None = None,
        fresh: FreshParams | None = None,
        prompt_new_items: bool = True,
    ) -> None:
        if catalog.vocab != model.vocab:
            raise ConfigError(f"catalog vocab {catalog.vocab} does not match the model's")
        self.model = model
        self.edit_stack = edit_stack
        self.split = split
        self.beam_size, self.batch_size, self.retries = beam_size, batch_size, retries
        self.workspace = workspace
        self.tokenizer_fingerprint = tokenizer_fingerprint
        self.fresh = fresh or FreshParams()
        self.prompt_new_items = prompt_new_items
        self._embeddings = embeddings
        self._rankers: dict[tuple[Any, ...], tuple[Catalog, ModeRanker]] = {}
        self._catalog = catalog
        if catalog.embeddings is None and isinstance(embeddings, np.ndarray):
            self._catalog = catalog.with_embeddings(embeddings)

    @classmethod
    def open(
        cls,
        recipe: Recipe,
        checkpoint: str | Path,
        edit_packs: Sequence[str | Path] = (),
        *,
        map_location: str | torch.device = "cpu",
    ) -> Session:
        """The session of `recipe`'s workspace (prepared split, tokenizer, SID table; item
        embeddings on first use) serving `checkpoint` (a checkpoint or a run folder's best/)
        with `edit_packs` (folders or pack ids under `<work>/edits/`) applied in order."""
        ws = Workspace.for_dataset(recipe.data.dataset_name, recipe.work_dir)
        split = ws.load_split()
        tokenizer, table = ws.load_tokenized()
        folder = resolve_checkpoint(checkpoint)
        model = load_checkpoint(folder, tokenizer.fingerprint, map_location)
        packs = [EditPack.load(pack_folder(p, ws.edits())) for p in edit_packs]
        stack = None
        if packs:
            stack = EditStack(model, folder)
            for pack in packs:
                stack.push(pack)
        return cls(
            model,
            Catalog.from_split(split, table, model.vocab),
            edit_stack=stack,
            split=split,
            beam_size=recipe.eval.beam_size,
            batch_size=recipe.eval.batch_size,
            prompt_new_items=recipe.eval.prompt_new_items,
            embeddings=lambda: ws.item_embeddings(split.dataset.items.texts),
            workspace=ws,
            tokenizer_fingerprint=tokenizer.fingerprint,
            fresh=FreshParams.load_or_default(folder),
        )

    # ------------------------------------------------------------------ state
    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def set_catalog(self, catalog: Catalog) -> None:
        """Recommend over `catalog` from now on (e.g. when items go live)."""
        if catalog.vocab != self.model.vocab:
            raise ConfigError(f"catalog vocab {catalog.vocab} does not match the model's")
        self._catalog = catalog
        self._rankers = {}  # a ranker being built on the old catalog lands in the old dict

    @property
    def history_len(self) -> int:
        """History items the model reads (the last ones of each row)."""
        return self.model.config.max_history

    @property
    def embeddings(self) -> np.ndarray:
        """float32[n_items, d] item text embeddings (loaded on first use)."""
        if self._catalog.embeddings is None:
            emb = self._embeddings() if callable(self._embeddings) else self._embeddings
            if emb is None:
                raise ConfigError("this session has no item text embeddings")
            self._catalog = self._catalog.with_embeddings(emb)
        assert self._catalog.embeddings is not None
        return self._catalog.embeddings

    def close(self) -> None:
        """Take the edit packs off the model (it then computes the base checkpoint)."""
        if self.edit_stack is not None:
            self.edit_stack.remove()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ recommend
    def ranker(
        self,
        mode: str = "beam",
        scope: Scope = "full",
        catalog: Catalog | None = None,
        **options: Any,
    ) -> ModeRanker:
        """The ranker of `mode` over `scope` of `catalog` (default: the session's), cached per
        catalog, mode, scope and options."""
        if mode not in MODES:
            raise ConfigError(f"unknown recommend mode {mode!r}; known: {', '.join(MODES)}")
        if scope not in SCOPES:
            raise ConfigError(f"catalog must be one of {', '.join(SCOPES)}, got {scope!r}")
        cat = self._catalog if catalog is None else catalog
        rankers = self._rankers  # replaced (not cleared) by set_catalog
        key = (id(cat), mode, scope, *sorted(options.items()))
        try:
            hash(key)
        except TypeError:
            return MODES[mode](self, cat, scope, **options)
        if key not in rankers:  # the entry keeps `cat` alive, so its id is not reused
            rankers[key] = (cat, MODES[mode](self, cat, scope, **options))
        return rankers[key][1]

    def recommend(
        self,
        histories: np.ndarray,
        top_k: int | Sequence[int] | np.ndarray = 10,
        mode: str = DEFAULT_MODE,
        *,
        users: Sequence[int] | np.ndarray | None = None,
        scope: Scope = "full",
        exclude_history: bool = True,
        **options: Any,
    ) -> Recommendations:
        """Top-k items for item histories int64[n, H] (right-aligned, -1 padded; the model
        reads the last `history_len`). top_k: int, or int[n] per row (rows padded to the max).
        users: int[n] user indices (user-bucket tokens). scope: "full" | "warm" | "new".
        exclude_history: never return a history item. options: the mode's (beam: beam_size;
        spec: drafter, gamma, n_drafts, self_drafter_dir, beam_size)."""
        cat = self._catalog  # one snapshot for the whole call (set_catalog may swap it)
        hist = self._check_histories(histories, cat)
        n = hist.shape[0]
        ks = np.broadcast_to(np.asarray(top_k, dtype=np.int64), (n,)).copy()
        if np.asarray(top_k).ndim > 1 or (ks < 1).any() or np.asarray(top_k).size == 0:
            raise ConfigError(f"top_k must be >= 1 (an int or one per row), got {top_k!r}")
        u = None if users is None else np.asarray(users, dtype=np.int64).reshape(n)
        ranker = self.ranker(mode, scope, cat, **options)
        items, scores = ranker.rank_histories(hist, u, ks, exclude_history=exclude_history)
        cut = np.arange(items.shape[1])[None, :] >= ks[:, None]  # beyond a row's own top_k
        items = np.where(cut, -1, items)
        scores = np.where(cut, -np.inf, scores).astype(np.float32)
        is_new = np.where(items >= 0, cat.is_new[np.maximum(items, 0)], False)
        return Recommendations(items, scores, is_new)

    @staticmethod
    def _check_histories(histories: np.ndarray, cat: Catalog) -> np.ndarray:
        hist = np.asarray(histories)
        if hist.ndim != 2 or hist.shape[1] < 1 or not np.issubdtype(hist.dtype, np.integer):
            raise ConfigError(f"histories must be int64[n, H >= 1], got {hist.dtype} {hist.shape}")
        hist = hist.astype(np.int64)
        bad = (hist < -1) | (hist >= cat.n_items)
        bad[~bad] = (cat.sids[hist[~bad].clip(min=0)] < 0).any(axis=1) & (hist[~bad] >= 0)
        if bad.any():
            raise UnknownItemError(
                f"history item {int(hist[bad][0])} is not a catalog item with a SID "
                f"({cat.n_items} items)"
            )
        return hist

    def user_history(self, user_id: str) -> tuple[int, np.ndarray]:
        """(user index, int64[1, history_len]) the last items of a dataset user's sequence."""
        if self.split is None:
            raise ConfigError("this session has no dataset users (made without a split)")
        return user_history(self.split, user_id, self.history_len)

    def recommend_user(
        self, user_id: str, top_k: int = 10, mode: str = DEFAULT_MODE, **kw: Any
    ) -> Recommendations:
        """`recommend` for one dataset user from their whole sequence."""
        u, hist = self.user_history(user_id)
        return self.recommend(hist, top_k, mode, users=[u], **kw)
