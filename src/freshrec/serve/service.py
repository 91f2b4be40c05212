"""The recommendation service: a trained checkpoint that learns new items while it serves.

Catalog. The live catalog starts as the prepared split's **warm** items (those with training
interactions, the only items the checkpoint was trained on). Items added through the API get
a SID from the existing tokenizer (no refit) and a model-side index: an id that the prepared
dataset knows as a *new* item keeps that dataset index (its text comes from the request),
any other id gets the next index past the split's items. Histories may mention any catalog
item (warm or added, whatever its status); only warm and live items are recommended.

Adding items (`add_items`): validate everything -> embed the texts (MiniLM, the loaders' text
format) -> assign SIDs -> insert the rows as `pending` in one transaction -> acknowledge. A
background worker then waits `edit_batch_window_s` for more items and edits all waiting
items into one `EditPack` (on its own copy of the model, so recommendations never wait for an
edit), saves the pack atomically, records it in the ledger and flips its items to `live` in
one transaction, and finally applies it to the serving model together with a new catalog trie.

Recovery (`start`): added items (SIDs, embeddings, statuses) come back from the catalog
database; the ledger's applied packs are re-applied in order; a pack whose folder is missing
or corrupt is marked `lost` and its items go back to `pending`; pack folders without a ledger
row (an edit killed between its save and its commit) are deleted; pending items are edited.

Concurrency: recommendations run in one micro-batcher thread that owns the serving model
(`model.decode_context` is per model, so one forward at a time); edits run in one worker
thread on a second model instance. Lock order: `_edit_lock` -> `_state_lock` -> `_model_lock`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import shutil
import threading
import time
import zlib
from collections import defaultdict, deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
import torch

from freshrec.data import load_split
from freshrec.edit import EditPack, EditStack, GenRecEditor
from freshrec.edit.covariance import split_hash
from freshrec.embed import embed_texts
from freshrec.embed.encoder import EMBED_DIM, TextEmbedder
from freshrec.errors import CheckpointError, ConfigError, FreshrecError
from freshrec.model.batches import history_tokens
from freshrec.model.checkpoint import load_checkpoint
from freshrec.recommend.beam_search import beam_search
from freshrec.semid import SidTable, assign_new_items, load_sid_table, load_tokenizer
from freshrec.semid.trie import SidTrie
from freshrec.serve.batching import MicroBatcher
from freshrec.serve.catalog import (
    APPLIED,
    FAILED,
    LIVE,
    LOST,
    PENDING,
    ROLLED_BACK,
    CatalogStore,
    ItemRow,
)
from freshrec.serve.config import ServeConfig

log = logging.getLogger("freshrec.serve")

MAX_DESCRIPTION_CHARS = 1000
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_EDIT_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0, 120.0, 300.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServeError(FreshrecError):
    """A request the service refuses: HTTP `status`, a message, optional extra JSON fields."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


# ---------------------------------------------------------------------------------- metrics
class Metrics:
    """A tiny thread-safe Prometheus registry: counters, gauges and histograms with labels."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._meta: dict[str, tuple[str, str, tuple[float, ...]]] = {}
        self._values: dict[str, dict[tuple[tuple[str, str], ...], Any]] = defaultdict(dict)

    def declare(self, name: str, kind: str, help_: str, buckets: Sequence[float] = ()) -> None:
        self._meta[name] = (kind, help_, tuple(buckets))

    @staticmethod
    def _key(labels: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((labels or {}).items()))

    def inc(self, name: str, value: float = 1.0, labels: dict[str, str] | None = None) -> None:
        with self._lock:
            vals = self._values[name]
            key = self._key(labels)
            vals[key] = vals.get(key, 0.0) + value

    def set(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        with self._lock:
            self._values[name][self._key(labels)] = float(value)

    def observe(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        buckets = self._meta[name][2]
        with self._lock:
            vals = self._values[name]
            key = self._key(labels)
            h = vals.get(key)
            if h is None:
                h = vals[key] = {"buckets": [0] * len(buckets), "sum": 0.0, "count": 0}
            for i, b in enumerate(buckets):
                if value <= b:
                    h["buckets"][i] += 1
            h["sum"] += value
            h["count"] += 1

    def value(self, name: str, labels: dict[str, str] | None = None) -> Any:
        with self._lock:
            return self._values.get(name, {}).get(self._key(labels))

    @staticmethod
    def _fmt(labels: tuple[tuple[str, str], ...], extra: tuple[str, str] | None = None) -> str:
        items = list(labels) + ([extra] if extra else [])
        if not items:
            return ""
        body = ",".join(
            f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
            for k, v in items
        )
        return "{" + body + "}"

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        out: list[str] = []
        with self._lock:
            for name, (kind, help_, buckets) in self._meta.items():
                out.append(f"# HELP {name} {help_}")
                out.append(f"# TYPE {name} {kind}")
                for key, v in sorted(self._values.get(name, {}).items()):
                    if kind != "histogram":
                        out.append(f"{name}{self._fmt(key)} {float(v):.10g}")
                        continue
                    for b, c in zip(buckets, v["buckets"], strict=True):
                        out.append(f"{name}_bucket{self._fmt(key, ('le', f'{b:g}'))} {c}")
                    out.append(f"{name}_bucket{self._fmt(key, ('le', '+Inf'))} {v['count']}")
                    out.append(f"{name}_sum{self._fmt(key)} {v['sum']:.10g}")
                    out.append(f"{name}_count{self._fmt(key)} {v['count']}")
        return "\n".join(out) + "\n"


def service_metrics() -> Metrics:
    m = Metrics()
    m.declare("freshrec_http_requests_total", "counter", "HTTP requests by endpoint and status")
    m.declare(
        "freshrec_http_request_duration_seconds",
        "histogram",
        "HTTP request latency by endpoint",
        _LATENCY_BUCKETS,
    )
    m.declare(
        "freshrec_recommend_batch_size", "histogram", "requests per beam search", _BATCH_BUCKETS
    )
    m.declare("freshrec_warm_items", "gauge", "items of the trained catalog")
    m.declare("freshrec_items", "gauge", "items added through the API, by status")
    m.declare("freshrec_live_items", "gauge", "recommendable items (warm + live new)")
    m.declare("freshrec_pending_items", "gauge", "acknowledged items waiting for their edit")
    m.declare("freshrec_items_added_total", "counter", "items acknowledged by POST /items")
    m.declare("freshrec_edit_packs_applied", "gauge", "edit packs currently applied")
    m.declare("freshrec_edits_total", "counter", "edit attempts by result")
    m.declare("freshrec_edit_seconds", "histogram", "seconds per edit (pack)", _EDIT_BUCKETS)
    m.declare(
        "freshrec_item_live_seconds",
        "histogram",
        "seconds from acknowledgement to live",
        _EDIT_BUCKETS,
    )
    m.declare("freshrec_rollbacks_total", "counter", "edit packs rolled back")
    return m


# ---------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class NewItem:
    """A validated item of POST /items."""

    item_id: str
    title: str
    text: str | None = None
    categories: tuple[str, ...] = ()
    description: str | None = None


def _sentence(text: str) -> str | None:
    s = text.strip()
    if not s:
        return None
    return s if s[-1] in ".!?…" else s + "."


def item_text(
    title: str,
    categories: Sequence[str] = (),
    description: str | None = None,
    label: str = "Genres",
) -> str:
    """The loaders' item text: "Title. Genres: a, b. Description: ..." (empty parts skipped,
    description cut to 1000 characters, whitespace collapsed)."""
    parts: list[str] = [title]
    cats = ", ".join(c.strip() for c in categories if c and c.strip())
    if cats:
        parts.append(f"{label}: {cats}")
    if description and description.strip():
        d = description.strip()
        if len(d) > MAX_DESCRIPTION_CHARS:
            d = d[: MAX_DESCRIPTION_CHARS - 1].rstrip() + "…"
        parts.append(f"Description: {d}")
    sentences = [s for s in (_sentence(p) for p in parts) if s]
    return re.sub(r"\s+", " ", " ".join(sentences)).strip()


@dataclass(frozen=True)
class RecQuery:
    """One recommendation request, resolved to item indices (full history, oldest first)."""

    history: np.ndarray
    top_k: int
    exclude_seen: bool
    only_new: bool
    user: int


@dataclass
class ItemState:
    """In-memory mirror of an added item's catalog row (no text / embedding)."""

    idx: int
    item_id: str
    title: str
    sid: tuple[int, ...]
    status: str
    created_at: float
    pack_id: str | None = None
    live_at: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class View:
    """What a recommendation reads, swapped as a whole: SID tokens of every item with a SID
    (history encoding), the trie of recommendable items and the trie of live new items."""

    sid_tokens: np.ndarray
    full: SidTrie
    new: SidTrie
    n_full: int
    n_new: int


def iso_time(ts: float | None) -> str | None:
    """UTC ISO 8601 with milliseconds, e.g. 2024-01-02T03:04:05.678Z (None stays None)."""
    if ts is None:
        return None
    ms = round((ts % 1) * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{ms:03d}Z"


# ---------------------------------------------------------------------------------- service
class Service:
    """Loads a checkpoint and its data, serves recommendations and learns new items.

    Construct, then `start()` (recovery + worker threads); `close()` stops the threads.
    """

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.api_key = config.api_key()
        # torch's OpenMP thread count is per calling thread: each worker sets its own
        self._rec_threads = config.threads()
        self.recipe = config.load_recipe()
        self.paths = config.paths(self.recipe)
        ws = self.paths.workspace
        self.edit_config = config.edit_config()
        self.metrics = service_metrics()
        self.started_at = time.time()

        self.split = load_split(ws.prepared)
        ds = self.split.dataset
        self.n_split = ds.n_items
        self.tokenizer = load_tokenizer(ws.tokenizer)
        full_table = load_sid_table(ws.tokenizer)
        if full_table.n_items != self.n_split:
            raise ConfigError(
                f"{ws.tokenizer}: SID table has {full_table.n_items} items, the prepared data "
                f"{self.n_split}; tokenize again"
            )
        self.checkpoint = Path(config.checkpoint)
        self.model = load_checkpoint(self.checkpoint, expect_fingerprint=self.tokenizer.fingerprint)
        self.edit_model = load_checkpoint(
            self.checkpoint, expect_fingerprint=self.tokenizer.fingerprint
        )
        self.vocab = self.model.vocab
        self.max_history = self.model.config.max_history
        self.serve_stack = EditStack(self.model, self.checkpoint)
        self.edit_stack = EditStack(self.edit_model, self.checkpoint)

        self.is_warm = ~np.asarray(self.split.is_new, dtype=bool)
        base = full_table.sids.copy()
        base[~self.is_warm] = -1  # dataset new items are not in the catalog until added
        self.table = SidTable(base, full_table.max_collision)
        self.emb = embed_texts(ds.items.texts, cache_dir=ws.embeddings, progress=False)
        if self.emb.shape != (self.n_split, EMBED_DIM):
            raise ConfigError(f"item embeddings have shape {self.emb.shape}")
        self.text_label = "Genres" if self.recipe.data.kind == "movielens" else "Categories"

        self._dataset_index = ds.items.index_of()
        self._ids: list[str] = list(ds.items.ids)
        self._titles: list[str] = list(ds.items.titles)
        self._lookup: dict[str, int] = {
            i: k for i, k in self._dataset_index.items() if self.is_warm[k]
        }
        self._added: dict[str, ItemState] = {}
        self._users = (
            {u: i for i, u in enumerate(ds.user_ids)} if self.vocab.user_buckets > 0 else {}
        )

        self.store = CatalogStore(self.paths.db_url)
        self.edits_dir = self.paths.edits_dir
        self.edits_dir.mkdir(parents=True, exist_ok=True)
        self.embedder = TextEmbedder()

        self._state_lock = threading.RLock()
        self._model_lock = threading.Lock()
        self._edit_lock = threading.Lock()
        self._embed_lock = threading.Lock()
        self._cond = threading.Condition()
        self._queue: deque[str] = deque()
        self._queue_since: float | None = None
        self._enqueued_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._editor_state = "starting"
        self._editing: list[str] = []
        self._last_edit: dict[str, Any] | None = None
        self._view: View | None = None
        self._threads: list[threading.Thread] = []
        self._check_identity()
        self.batcher: MicroBatcher[RecQuery, tuple[np.ndarray, np.ndarray]] = MicroBatcher(
            self._rank_batch,
            max_batch=config.max_batch,
            window_ms=config.batch_window_ms,
            enabled=config.batching,
            on_batch=lambda n, _s: self.metrics.observe("freshrec_recommend_batch_size", n),
            name="freshrec-recommend",
        )

    # ================================================================== lifecycle
    def start(self) -> Service:
        """Recover the catalog and the applied packs, then start the workers."""
        self._recover()
        self.batcher.start()
        workers = (("freshrec-embedder", self._load_embedder), ("freshrec-edit", self._edit_loop))
        for name, target in workers:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self.batcher.close()
        for t in self._threads:
            t.join(timeout=10)
        self._threads = []
        self.store.close()

    def _load_embedder(self) -> None:
        # load MiniLM and run it once, so that the first POST is not slower than the others
        with contextlib.suppress(Exception), self._embed_lock:
            self.embedder.encode(["warm-up"], progress=False)

    # ================================================================== recovery
    def _check_identity(self) -> None:
        """The state folder belongs to one checkpoint + tokenizer + prepared data."""
        want = {
            "tokenizer_fingerprint": self.tokenizer.fingerprint,
            "checkpoint_hash": self.serve_stack.base_hash,
            "data_hash": split_hash(self.split),
        }
        have = self.store.meta()
        wrong = [k for k, v in want.items() if k in have and have[k] != v]
        if wrong:
            raise ConfigError(
                f"the service state in {self.paths.state_dir} ({self.paths.db_url}) belongs to "
                f"another {', '.join(w.split('_')[0] for w in wrong)} "
                f"({', '.join(f'{k}={have[k]}' for k in wrong)}); serve this checkpoint with a "
                "new --state-dir (its items can be posted again)"
            )
        self.store.set_meta(want)

    def _recover(self) -> None:
        rows = self.store.items()
        n_total = max([self.n_split, *[r.idx + 1 for r in rows]])
        sids = np.full((n_total, self.table.sid_len), -1, dtype=np.int64)
        sids[: self.n_split] = self.table.sids
        emb = np.zeros((n_total, EMBED_DIM), dtype=np.float32)
        emb[: self.n_split] = self.emb
        ids = self._ids + [""] * (n_total - self.n_split)
        titles = self._titles + [""] * (n_total - self.n_split)
        for r in rows:
            if r.idx < self.n_split and (self._ids[r.idx] != r.item_id or self.is_warm[r.idx]):
                raise CheckpointError(
                    f"catalog database {self.paths.db_url}: item {r.item_id!r} has index "
                    f"{r.idx}, which the prepared data gives to {self._ids[r.idx]!r}; the "
                    "database belongs to other prepared data"
                )
            sids[r.idx] = r.sid
            emb[r.idx] = np.frombuffer(r.embedding, dtype=np.float32)
            ids[r.idx], titles[r.idx] = r.item_id, r.title
        self.table = SidTable(sids, self.table.max_collision)
        self.emb, self._ids, self._titles = emb, ids, titles

        # re-apply the ledger's applied packs in order
        for row in self.store.packs(APPLIED):
            path = self._pack_path(row.path)
            try:
                pack = EditPack.load(path)
                if pack.pack_id != row.pack_id:
                    raise CheckpointError(f"{path}: holds pack {pack.pack_id}, not {row.pack_id}")
                self.edit_stack.push(pack)
                self.serve_stack.push(pack)
            except (FreshrecError, OSError, ValueError, KeyError, TypeError) as exc:
                requeued = self.store.mark_pack_lost(row.seq, row.pack_id, str(exc))
                log.error(
                    "edit pack %s cannot be loaded (%s): marked lost, %d item(s) back to pending",
                    row.pack_id,
                    exc,
                    len(requeued),
                )
        applied = {p.pack_id for p in self.serve_stack.packs}
        stale = [
            r.item_id for r in self.store.items() if r.status == LIVE and r.pack_id not in applied
        ]
        if stale:
            log.error("%d live item(s) without an applied pack: back to pending", len(stale))
            self.store.requeue(stale)

        # pack folders (and temp folders) the ledger does not reference were never committed
        keep = {self._pack_path(r.path).resolve() for r in self.store.packs() if r.status != LOST}
        for child in sorted(self.edits_dir.iterdir()):
            if child.resolve() not in keep:
                log.warning("removing %s: no ledger row references it", child)
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)

        now = time.time()
        for r in self.store.items():
            self._added[r.item_id] = ItemState(
                r.idx,
                r.item_id,
                r.title,
                r.sid,
                r.status,
                r.created_at,
                r.pack_id,
                r.live_at,
                r.error,
            )
            self._lookup[r.item_id] = r.idx
            if r.status == PENDING:
                self._queue.append(r.item_id)
                self._enqueued_at[r.item_id] = now
        if self._queue:
            self._queue_since = time.monotonic() - self.config.edit_batch_window_s
            log.info("%d pending item(s) will be edited", len(self._queue))
        with self._state_lock:
            self._view = self._build_view()
        self._update_gauges()
        log.info(
            "catalog: %d warm items, %d added (%d live), %d edit pack(s) applied",
            int(self.is_warm.sum()),
            len(self._added),
            sum(s.status == LIVE for s in self._added.values()),
            len(self.serve_stack),
        )

    def _pack_path(self, stored: str) -> Path:
        p = Path(stored)
        return p if p.is_absolute() else self.edits_dir / p

    # ================================================================== views
    def _live_mask(self, n: int, extra: Collection[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        new = np.zeros(n, dtype=bool)
        for s in self._added.values():
            if s.status == LIVE:
                new[s.idx] = True
        new[list(extra)] = True
        full = new.copy()
        full[: self.n_split] |= self.is_warm
        return full, new

    def _build_view(self, extra_live: Collection[int] = ()) -> View:
        """A fresh view of the current table and statuses, plus `extra_live` item indices
        (caller holds _state_lock)."""
        sids = self.table.sids
        full_mask, new_mask = self._live_mask(sids.shape[0], extra_live)
        full = SidTrie.from_table(sids, self.vocab, full_mask)
        new = SidTrie.from_table(sids, self.vocab, new_mask)
        return View(
            self.table.tokens(self.vocab), full, new, int(full_mask.sum()), int(new_mask.sum())
        )

    def _update_gauges(self) -> None:
        counts = dict.fromkeys((PENDING, LIVE, FAILED, ROLLED_BACK), 0)
        for s in self._added.values():
            counts[s.status] = counts.get(s.status, 0) + 1
        for status, n in counts.items():
            self.metrics.set("freshrec_items", n, {"status": status})
        n_warm = int(self.is_warm.sum())
        self.metrics.set("freshrec_warm_items", n_warm)
        self.metrics.set("freshrec_live_items", n_warm + counts[LIVE])
        self.metrics.set("freshrec_pending_items", counts[PENDING])
        self.metrics.set("freshrec_edit_packs_applied", len(self.serve_stack))

    # ================================================================== recommend
    def resolve_query(
        self,
        history: Sequence[str],
        top_k: int = 10,
        exclude_seen: bool = True,
        only_new: bool = False,
        user: str | None = None,
    ) -> RecQuery:
        """Validate a request against the catalog (ServeError 422 naming what is wrong)."""
        cfg = self.config
        if not history:
            raise ServeError(422, "history is empty")
        if len(history) > cfg.max_history_items:
            raise ServeError(
                422, f"history has {len(history)} items; at most {cfg.max_history_items}"
            )
        if not 1 <= top_k <= cfg.max_top_k:
            raise ServeError(422, f"top_k must be between 1 and {cfg.max_top_k}, got {top_k}")
        lookup = self._lookup
        idx = [lookup.get(h, -1) for h in history]
        unknown = list(dict.fromkeys(h for h, i in zip(history, idx, strict=True) if i < 0))
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:20])
            more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
            raise ServeError(
                422, f"unknown item ids in history: {shown}{more}", unknown_items=unknown
            )
        u = 0
        if user is not None and self.vocab.user_buckets > 0:
            u = self._users.get(user, -1)
            if u < 0:
                u = zlib.crc32(user.encode("utf-8"))
        return RecQuery(np.asarray(idx, dtype=np.int64), top_k, exclude_seen, only_new, u)

    def recommend(self, query: RecQuery) -> list[dict[str, Any]]:
        """Top-k items of a resolved query: [{"item_id", "title", "score", "new"}]."""
        try:
            items, scores = self.batcher.submit(query, timeout=self.config.request_timeout_s)
        except TimeoutError:
            raise ServeError(503, "recommendation timed out; the service is overloaded") from None
        ids, titles, n_split = self._ids, self._titles, self.n_split
        out = []
        for i, s in zip(items.tolist(), scores.tolist(), strict=True):
            if i < 0 or not math.isfinite(s):
                continue
            new = i >= n_split or not self.is_warm[i]
            out.append({"item_id": ids[i], "title": titles[i], "score": s, "new": bool(new)})
        return out

    def _rank_batch(self, queries: list[RecQuery]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Answer a micro-batch: one beam search per (only_new, exclude_seen) group."""
        out: list[tuple[np.ndarray, np.ndarray]] = [None] * len(queries)  # type: ignore[list-item]
        groups: dict[tuple[bool, bool], list[int]] = defaultdict(list)
        for i, q in enumerate(queries):
            groups[(q.only_new, q.exclude_seen)].append(i)
        H = self.max_history
        if torch.get_num_threads() != self._rec_threads:
            torch.set_num_threads(self._rec_threads)
        with self._model_lock:
            view = self._view
            assert view is not None
            for (only_new, exclude_seen), members in groups.items():
                trie, n_cat = (view.new, view.n_new) if only_new else (view.full, view.n_full)
                if n_cat == 0:
                    for i in members:
                        out[i] = (np.zeros(0, np.int64), np.zeros(0, np.float32))
                    continue
                qs = [queries[i] for i in members]
                hist = np.full((len(qs), H), -1, dtype=np.int64)
                for r, q in enumerate(qs):
                    tail = q.history[-H:]
                    hist[r, H - len(tail) :] = tail
                users = np.asarray([q.user for q in qs], dtype=np.int64)
                tokens = history_tokens(hist, view.sid_tokens, users, self.vocab)
                exclude = None
                if exclude_seen:
                    E = max(len(q.history) for q in qs)
                    ex = np.full((len(qs), E), -1, dtype=np.int64)
                    for r, q in enumerate(qs):
                        ex[r, : len(q.history)] = q.history
                    exclude = torch.from_numpy(ex)
                k = max(q.top_k for q in qs)
                items, scores = self._search(trie, tokens, k, exclude)
                # beams whose items were all excluded (seen) can leave a row short of k
                # items: search those rows again with a wider beam
                want = np.asarray(
                    [min(q.top_k, n_cat - len(set(q.history.tolist()))) for q in qs]
                    if exclude_seen
                    else [min(q.top_k, n_cat) for q in qs]
                )
                beam = max(self.config.beam_size, k)
                for _ in range(3):
                    short = np.flatnonzero((items[:, :k] >= 0).sum(1) < want)
                    if short.size == 0 or beam >= n_cat:
                        break
                    beam *= 4
                    sub = exclude[short] if exclude is not None else None
                    items_s, scores_s = self._search(trie, tokens[short], k, sub, beam)
                    items[short], scores[short] = items_s, scores_s
                for r, (i, q) in enumerate(zip(members, qs, strict=True)):
                    out[i] = (items[r, : q.top_k], scores[r, : q.top_k])
        return out

    def _search(
        self,
        trie: SidTrie,
        tokens: torch.Tensor,
        k: int,
        exclude: torch.Tensor | None,
        beam: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        # a beam yields at least one item at the last level unless it is excluded, so
        # beam >= k gives k items in the common case
        beam = max(self.config.beam_size, k) if beam is None else beam
        res = beam_search(self.model, tokens, trie, beam, k, exclude=exclude)
        return res.items.cpu().numpy(), res.scores.cpu().numpy()

    # ================================================================== items
    def _known(self, item_id: str) -> bool:
        return item_id in self._lookup

    def _text(self, item: NewItem) -> str:
        if item.text is not None:
            return re.sub(r"\s+", " ", item.text).strip()
        return item_text(item.title, item.categories, item.description, self.text_label)

    def _embed(self, texts: list[str]) -> np.ndarray:
        with self._embed_lock:
            return self.embedder.encode(texts, progress=False)

    def add_items(self, items: Sequence[NewItem]) -> list[dict[str, Any]]:
        """Persist new items as pending (one transaction) and queue their edit.

        ServeError: 413 too many, 409 duplicate ids, 422 empty texts / no free SID."""
        cfg = self.config
        if not items:
            raise ServeError(422, "items is empty")
        if len(items) > cfg.max_items_per_post:
            raise ServeError(
                413, f"{len(items)} items in one request; at most {cfg.max_items_per_post}"
            )
        ids = [it.item_id for it in items]
        seen: set[str] = set()
        twice = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
        if twice:
            twice = list(dict.fromkeys(twice))
            raise ServeError(
                409,
                f"duplicate item ids in the request: {', '.join(map(repr, twice))}",
                duplicates=twice,
            )
        self._check_new(ids)
        texts = [self._text(it) for it in items]
        empty = [it.item_id for it, t in zip(items, texts, strict=True) if not t]
        if empty:
            raise ServeError(422, f"empty text for items: {', '.join(map(repr, empty))}")
        emb = self._embed(texts)
        now = time.time()
        with self._state_lock:
            self._check_new(ids)  # a concurrent request may have added one meanwhile
            n_total = self.table.n_items
            idx = []
            for item_id in ids:
                k = self._dataset_index.get(item_id)
                if k is None:
                    k, n_total = n_total, n_total + 1
                idx.append(k)
            try:
                table = assign_new_items(
                    self.tokenizer, self.table, emb, np.asarray(idx, dtype=np.int64), n_total
                )
            except FreshrecError as exc:
                raise ServeError(422, f"cannot assign semantic IDs: {exc}") from None
            rows = [
                ItemRow(
                    item_id=it.item_id,
                    idx=k,
                    title=it.title,
                    text=text,
                    sid=tuple(int(c) for c in table.sids[k]),
                    embedding=np.ascontiguousarray(e, dtype=np.float32).tobytes(),
                    created_at=now,
                    status=PENDING,
                )
                for it, k, text, e in zip(items, idx, texts, emb, strict=True)
            ]
            try:
                self.store.add_items(rows)
            except sa.exc.IntegrityError:
                raise ServeError(409, "an item id is already in the catalog") from None
            # durable: now make it visible in memory
            grown = np.zeros((n_total, EMBED_DIM), dtype=np.float32)
            grown[: self.emb.shape[0]] = self.emb
            grown[idx] = emb
            extra = n_total - len(self._ids)
            ids_list = self._ids + [""] * extra
            titles = self._titles + [""] * extra
            for r in rows:
                ids_list[r.idx], titles[r.idx] = r.item_id, r.title
                self._added[r.item_id] = ItemState(
                    r.idx, r.item_id, r.title, r.sid, PENDING, r.created_at
                )
            self.table, self.emb, self._ids, self._titles = table, grown, ids_list, titles
            for r in rows:
                self._lookup[r.item_id] = r.idx
            assert self._view is not None
            self._view = replace(self._view, sid_tokens=table.tokens(self.vocab))
            self._update_gauges()
        self.metrics.inc("freshrec_items_added_total", len(rows))
        with self._cond:
            t = time.monotonic()
            for r in rows:
                self._queue.append(r.item_id)
                self._enqueued_at[r.item_id] = now
            if self._queue_since is None:
                self._queue_since = t
            self._cond.notify_all()
        return [{"item_id": r.item_id, "sid": list(r.sid), "status": PENDING} for r in rows]

    def _check_new(self, ids: Sequence[str]) -> None:
        taken = [i for i in ids if self._known(i)]
        if taken:
            raise ServeError(
                409,
                f"item ids already in the catalog: {', '.join(map(repr, taken[:20]))}",
                duplicates=taken,
            )

    def item(self, item_id: str) -> dict[str, Any]:
        """GET /items/{id}: an added item's row, or a warm item (ServeError 404 if unknown)."""
        s = self._added.get(item_id)
        if s is not None:
            return {
                "item_id": s.item_id,
                "title": s.title,
                "sid": list(s.sid),
                "status": s.status,
                "pack_id": s.pack_id,
                "live_at": iso_time(s.live_at),
                "created_at": iso_time(s.created_at),
                "new": True,
                "error": s.error,
            }
        k = self._lookup.get(item_id)
        if k is None:
            raise ServeError(404, f"unknown item id {item_id!r}")
        return {
            "item_id": item_id,
            "title": self._titles[k],
            "sid": self.table.sids[k].tolist(),
            "status": LIVE,
            "pack_id": None,
            "live_at": None,
            "created_at": None,
            "new": False,
            "error": None,
        }

    # ================================================================== edits
    def _edit_loop(self) -> None:
        torch.set_num_threads(self.config.edit_thread_count())
        if self.config.warmup:
            self._editor_state = "warming"
            try:
                self._warmup()
            except Exception:  # the first edit will compute (and report) it instead
                log.exception("edit warm-up failed")
        self._editor_state = "idle"
        window = self.config.edit_batch_window_s
        while not self._stop.is_set():
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait(1.0)
                if self._stop.is_set():
                    return
                since = self._queue_since or time.monotonic()
            delay = since + window - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            with self._cond:
                batch = [
                    self._queue.popleft()
                    for _ in range(min(len(self._queue), self.config.max_edit_batch))
                ]
                self._queue_since = time.monotonic() if self._queue else None
            if batch:
                self._edit_batch(batch)

    def _make_editor(self) -> GenRecEditor:
        with self._state_lock:
            table, emb = self.table, self.emb
        return GenRecEditor(
            self.edit_model,
            self.checkpoint,
            self.split,
            table,
            emb,
            self.edit_config,
            self.paths.workspace,
        )

    def _warmup(self) -> None:
        """Localisation + preservation statistics now (cached on disk) rather than in the
        first edit."""
        t0 = time.perf_counter()
        editor = self._make_editor()
        loc = editor.localise()
        positions = self.edit_config.resolved_positions(self.vocab.sid_len)
        editor.covariances([(p, loc.layers[p]) for p in positions])
        log.info("edit statistics ready in %.1f s", time.perf_counter() - t0)

    def _edit_batch(self, item_ids: list[str]) -> None:
        with self._edit_lock:
            with self._state_lock:
                todo = [i for i in item_ids if self._added[i].status == PENDING]
                idx = [self._added[i].idx for i in todo]
            if not todo:
                return
            self._editor_state = "editing"
            self._editing = todo
            t0 = time.perf_counter()
            try:
                editor = self._make_editor()
                pack = editor.edit(idx, seed=self.config.edit_seed, previous=self.edit_stack.packs)
            except Exception as exc:
                reason = str(exc) if isinstance(exc, FreshrecError) else f"internal error: {exc!r}"
                log.exception("edit of %d item(s) failed", len(todo))
                self._fail(todo, reason)
                self.metrics.inc("freshrec_edits_total", labels={"result": "failed"})
                return
            finally:
                self._editor_state = "idle"
                self._editing = []
            no_ctx = {int(i) for i in pack.metrics.get("items_without_context", [])}
            failed = [i for i, k in zip(todo, idx, strict=True) if k in no_ctx]
            live = [i for i in todo if i not in set(failed)]
            folder = self.edits_dir / pack.pack_id
            now = time.time()
            try:
                pack.save(folder)
                self.store.record_pack(
                    pack.pack_id,
                    folder.name,
                    live,
                    failed,
                    "no training context among its text neighbours",
                    now=now,
                )
            except (OSError, sa.exc.SQLAlchemyError) as exc:
                # not recorded: the items stay pending and are edited again (the folder, if
                # written, is unreferenced and removed at the next start)
                log.exception("cannot record edit pack %s; retrying later", pack.pack_id)
                self._last_edit = {"error": str(exc)}
                time.sleep(1.0)
                with self._cond:
                    self._queue.extendleft(reversed(todo))
                    self._queue_since = self._queue_since or time.monotonic()
                    self._cond.notify_all()
                return
            self.edit_stack.push(pack)
            seconds = time.perf_counter() - t0
            self._last_edit = {
                "pack_id": pack.pack_id,
                "items": len(todo),
                "seconds": round(seconds, 3),
                "timings": pack.timings,
            }
            with self._state_lock:
                # the trie and the model change together; statuses flip after both, so an
                # item reported live is always recommendable
                view = self._build_view(extra_live={self._added[i].idx for i in live})
                with self._model_lock:
                    self.serve_stack.push(pack)
                    self._view = view
                for i in live:
                    s = self._added[i]
                    s.status, s.pack_id, s.live_at, s.error = LIVE, pack.pack_id, now, None
                for i in failed:
                    s = self._added[i]
                    s.status, s.pack_id = FAILED, pack.pack_id
                    s.error = "no training context among its text neighbours"
                self._update_gauges()
            self.metrics.observe("freshrec_edit_seconds", seconds)
            self.metrics.inc("freshrec_edits_total", labels={"result": "applied"})
            for i in live:
                t_in = self._enqueued_at.pop(i, None)
                if t_in is not None:
                    self.metrics.observe("freshrec_item_live_seconds", time.time() - t_in)
            log.info("edit pack %s: %d item(s) live in %.2f s", pack.pack_id, len(live), seconds)

    def _fail(self, item_ids: list[str], reason: str) -> None:
        try:
            self.store.mark_failed(item_ids, reason)
        except sa.exc.SQLAlchemyError:
            log.exception("cannot mark items failed")
            return
        with self._state_lock:
            for i in item_ids:
                s = self._added[i]
                s.status, s.error = FAILED, reason
            self._update_gauges()

    @staticmethod
    def _restack(stack: EditStack, packs: list[EditPack]) -> None:
        while len(stack):
            stack.pop()
        for p in packs:
            stack.push(p)

    def rollback(self, pack_id: str) -> dict[str, Any]:
        """Roll back an applied pack (any of them, not only the latest): its items become
        `rolled_back` and stop being recommended. ServeError 404 unknown, 409 not applied."""
        with self._edit_lock:
            row = self.store.pack(pack_id)
            if row is None:
                raise ServeError(404, f"unknown edit pack {pack_id!r}")
            if row.status != APPLIED:
                raise ServeError(409, f"edit pack {pack_id!r} is {row.status}, not applied")
            ids = self.store.rollback_pack(row.seq, pack_id)
            remaining = [p for p in self.edit_stack.packs if p.pack_id != pack_id]
            self._restack(self.edit_stack, remaining)
            with self._state_lock:
                for i in ids:
                    if i in self._added:
                        self._added[i].status = ROLLED_BACK
                view = self._build_view()
                with self._model_lock:
                    self._restack(self.serve_stack, remaining)
                    self._view = view
                self._update_gauges()
        self.metrics.inc("freshrec_rollbacks_total")
        log.info("edit pack %s rolled back (%d item(s))", pack_id, len(ids))
        return {"pack_id": pack_id, "status": ROLLED_BACK, "items": ids}

    def packs(self) -> list[dict[str, Any]]:
        """The edit ledger, oldest first."""
        return [
            {
                "pack_id": r.pack_id,
                "status": r.status,
                "created_at": iso_time(r.created_at),
                "items": r.items,
                "note": r.note,
            }
            for r in self.store.packs()
        ]

    # ================================================================== health
    def health(self) -> dict[str, Any]:
        view = self._view
        with self._cond:
            queued = len(self._queue)
        with self._state_lock:
            pending = sum(s.status == PENDING for s in self._added.values())
        return {
            "status": "ok",
            "editor": self._editor_state,
            "editing": len(self._editing),
            "queued": queued,
            "warm_items": int(self.is_warm.sum()),
            "live_new_items": view.n_new if view else 0,
            "pending_items": pending,
            "packs_applied": len(self.serve_stack),
            "checkpoint": str(self.checkpoint),
            "arch": self.model.arch,
            "batching": self.config.batching,
            "uptime_s": round(time.time() - self.started_at, 1),
            "last_edit": self._last_edit,
        }
