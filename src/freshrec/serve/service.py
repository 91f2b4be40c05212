"""The recommendation service: a trained checkpoint that learns new items while it serves.

`Service` wires the parts, one module each:
- `live.LiveCatalog`: the in-memory catalog (the prepared split's **warm** items, the ones the
  checkpoint was trained on, plus items added through the API) and the recommend `Catalog`;
- `inputs`: request validation and errors (`ServeError`); `metrics`: Prometheus metrics;
- `edit_worker.EditWorker`: the background edits (one pack per batch window) and rollbacks;
- `recovery`: a writer's start-up from the catalog database and the edit ledger
  (`catalog.CatalogStore`); `follower.Follower`: a read replica's view of its writer's catalog;
- `state`: the layout check, the pack store (`PackStore`) and the one-writer lock;
- `status`: the gauges, the /health summary and the ledger view.

Adding items (`adding.add_items`): validate everything -> embed the texts (MiniLM, the loaders' text
format) -> assign SIDs -> insert the rows as `pending` in one transaction -> acknowledge; the
edit worker makes them live. Recommendations go through `recommend.Session` in the configured
mode over the live `Catalog`, which the worker swaps together with the packs: mode "fresh"
(default) fuses the GR beam with the content channel, so an item is recommended from its
acknowledgement on and its edit refines it; mode "beam" (the wider-beam retry on) recommends
an added item once its edit is live.

Concurrency: recommendations run in one micro-batcher thread that owns the serving model
(`model.decode_context` is per model, so one forward at a time); edits run in one worker
thread on a second model instance. Lock order: edit lock -> `state_lock` -> `model_lock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from freshrec.data import load_split
from freshrec.edit.covariance import split_hash
from freshrec.embed import embed_texts
from freshrec.embed.encoder import TextEmbedder
from freshrec.errors import ConfigError
from freshrec.model.checkpoint import load_checkpoint
from freshrec.model.edit_packs import EditStack
from freshrec.recommend import Session
from freshrec.recommend.fresh import FreshParams
from freshrec.semid import load_sid_table, load_tokenizer
from freshrec.serve.adding import add_items
from freshrec.serve.batching import BatcherClosedError, MicroBatcher
from freshrec.serve.catalog import FAILED, LIVE, PENDING, CatalogStore
from freshrec.serve.config import ServeConfig
from freshrec.serve.edit_worker import EditWorker
from freshrec.serve.follower import Follower
from freshrec.serve.inputs import (
    NewItem,
    RecQuery,
    ServeError,
    category_label,
    check_query,
)
from freshrec.serve.live import LiveCatalog
from freshrec.serve.metrics import service_metrics
from freshrec.serve.recovery import check_identity, recover
from freshrec.serve.state import PackStore, WriterLock, check_layout
from freshrec.serve.status import health, ledger, update_gauges

log = logging.getLogger("freshrec.serve")
RETRIES = 3  # mode beam: wider-beam retries of rows that history exclusion leaves short
LOCK_CHECK_S = 2.0  # how often a PostgreSQL writer checks that it still holds its lock


class Service:
    """Loads a checkpoint and its data, serves recommendations and learns new items.

    Construct, then `start()` (recovery + worker threads); `close()` stops the threads.
    """

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.api_key = config.api_key()
        self.role = "replica" if config.read_only else "writer"
        self.lock_lost: str | None = None  # why this writer stopped writing (lock lost)
        self.db_down: str | None = None  # the catalog database unreachable at the last check
        # torch's OpenMP thread count is per calling thread: each worker sets its own
        self._rec_threads = config.threads()
        self.recipe = config.load_recipe()
        self.paths = config.paths(self.recipe)
        self.edit_config = config.edit_config()
        self.metrics = service_metrics()
        self.started_at = time.time()
        ws = self.paths.workspace
        inputs = [Path(config.checkpoint), ws.prepared, ws.tokenizer, ws.embeddings]
        check_layout(self.paths.edits_dir, self.paths.state_dir, self.paths.db_file, inputs)
        self.store = CatalogStore(self.paths.db_url, read_only=config.read_only)
        self.writer_lock = WriterLock(self.store.engine, self.paths.db_file)
        try:
            if not config.read_only:
                self.writer_lock.acquire()  # before anything is loaded or written
            self._own_packs()
            self._load_data_and_models()
            self._own_state()
        except BaseException:
            self.writer_lock.release()
            self.store.close()
            raise
        self.edits_dir = self.paths.edits_dir
        self.embedder = TextEmbedder()
        self.state_lock = threading.RLock()
        self.model_lock = threading.Lock()
        self._embed_lock = threading.Lock()
        self.stopping = threading.Event()
        self.worker = EditWorker(self)
        self.follower = Follower(self) if config.read_only else None
        self._threads: list[threading.Thread] = []
        self._summary: dict[str, Any] = {}
        self.batcher: MicroBatcher[RecQuery, tuple[np.ndarray, np.ndarray]] = MicroBatcher(
            self._rank_batch,
            max_batch=config.max_batch,
            window_ms=config.batch_window_ms,
            enabled=config.batching,
            on_batch=lambda n, _s: self.metrics.observe("freshrec_recommend_batch_size", n),
            name="freshrec-recommend",
        )

    def _own_packs(self) -> None:
        """The pack folder must belong to this catalog (a writer claims it, a replica only
        checks): before anything slow, so that a wrong layout is refused at once."""
        writer = not self.config.read_only
        self.pack_store = PackStore(self.paths.edits_dir)
        state_id = self.store.state_id(create=writer)
        if state_id is None:
            raise ConfigError(
                f"the catalog {self.paths.db_url} has no writer yet: start the writer first"
            )
        if writer:
            self.pack_store.claim(state_id)
        else:
            self.pack_store.check(state_id)

    def _own_state(self) -> None:
        """The state must belong to this checkpoint, tokenizer and data (a writer records
        them, a replica only compares)."""
        want = {
            "tokenizer_fingerprint": self.tokenizer.fingerprint,
            "checkpoint_hash": self.serve_stack.base_hash,
            "data_hash": split_hash(self.split),
        }
        check_identity(self, want, record=not self.config.read_only)

    def _load_data_and_models(self) -> None:
        """Prepared split, tokenizer + SID table, embeddings, the serving and editing models."""
        ws = self.paths.workspace
        self.split = load_split(ws.prepared)
        ds = self.split.dataset
        self.tokenizer = load_tokenizer(ws.tokenizer)
        full_table = load_sid_table(ws.tokenizer)
        if full_table.n_items != ds.n_items:
            raise ConfigError(
                f"{ws.tokenizer}: SID table has {full_table.n_items} items, the prepared data "
                f"{ds.n_items}; tokenize again"
            )
        self.checkpoint = Path(self.config.checkpoint)
        fingerprint = self.tokenizer.fingerprint
        self.model = load_checkpoint(self.checkpoint, expect_fingerprint=fingerprint)
        self.vocab = self.model.vocab
        self.serve_stack = EditStack(self.model, self.checkpoint)
        # the edit model: a second copy that only a writer needs
        self.edit_model = self.model
        self.edit_stack = self.serve_stack
        if not self.config.read_only:
            self.edit_model = load_checkpoint(self.checkpoint, expect_fingerprint=fingerprint)
            self.edit_stack = EditStack(self.edit_model, self.checkpoint)
        emb = embed_texts(ds.items.texts, cache_dir=ws.embeddings, progress=False)
        shown = (LIVE, PENDING, FAILED) if self.config.mode == "fresh" else (LIVE,)
        self.live = LiveCatalog(self.split, full_table, emb, self.vocab, shown)
        self.text_label = category_label(self.recipe.data.kind)
        self._users = (
            {u: i for i, u in enumerate(ds.user_ids)} if self.vocab.user_buckets > 0 else {}
        )
        # mode fresh runs the fused ranker as it was calibrated and evaluated: the GR channel
        # with at least the recipe's evaluation beam and no wider-beam retries (new items fill
        # the list); the same lists as beam 20 + retries at 2.2x less cost (2 cores, batch 8)
        cfg = self.config
        fresh_beam = max(cfg.beam_size, self.recipe.eval.beam_size)
        self.beam_size = cfg.beam_size if cfg.mode == "beam" else fresh_beam
        self.session = Session(
            self.model,
            self.live.catalog(build_tries=False),
            edit_stack=self.serve_stack,
            beam_size=self.beam_size,
            batch_size=self.config.max_batch,
            retries=RETRIES if self.config.mode == "beam" else 0,
            tokenizer_fingerprint=fingerprint,
            fresh=FreshParams.load_or_default(self.checkpoint),
            prompt_new_items=self.recipe.eval.prompt_new_items,
        )

    # ================================================================== lifecycle
    def start(self) -> Service:
        """Recover the catalog and the applied packs (a writer) or read the writer's (a
        replica), then start the workers."""
        if self.follower is not None:
            self.follower.sync()
            workers = [("freshrec-follow", self.follower.run)]
        else:
            recover(self)
            workers = [
                ("freshrec-embedder", self._load_embedder),
                ("freshrec-edit", self.worker.run),
            ]
            if self.store.dialect == "postgresql":  # a file lock cannot be lost
                workers.append(("freshrec-lock", self._watch_lock))
        self.batcher.start()
        for name, target in workers:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def close(self) -> None:
        self.stopping.set()
        self.worker.wake()
        self.batcher.close()
        for t in self._threads:
            t.join(timeout=10)
        self._threads = []
        self.writer_lock.release()
        self.store.close()

    def _watch_lock(self) -> None:
        def report(state: str, why: str | None) -> None:
            self.db_down = why if state == "down" else None
            if state == "lost":
                self.lock_lost = f"this service lost its writer lock ({why}); restart it"
                log.error("%s: writes are refused from now on", self.lock_lost)

        self.writer_lock.watch(self.stopping, report, LOCK_CHECK_S)

    def check_writer(self) -> None:
        """ServeError 503 unless this process may write: a read replica never, a writer that
        lost its lock (another writer may have taken the catalog) no more."""
        if self.config.read_only:
            raise ServeError(503, "this is a read-only replica: send writes to the writer")
        if self.lock_lost is not None:
            raise ServeError(503, self.lock_lost)

    def not_ready_reason(self) -> str | None:
        """Why this process should get no traffic now (None: ready): a writer that lost its
        writer lock or cannot reach its database; a replica whose last successful catalog
        poll is older than 30 s."""
        if self.lock_lost is not None:
            return self.lock_lost
        if self.db_down is not None:
            return self.db_down
        if self.follower is not None:
            lag = self.follower.lag()
            if lag > max(30.0, 10 * self.config.follow_interval_s):
                return f"catalog not polled successfully for {lag:.0f} s"
        return None

    def _load_embedder(self) -> None:
        # load MiniLM and run it once, so that the first POST is not slower than the others
        with contextlib.suppress(Exception), self._embed_lock:
            self.embedder.encode(["warm-up"], progress=False)

    def update_gauges(self) -> None:
        """Gauges and the /health summary (callers hold the state lock)."""
        self._summary = update_gauges(self)

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
        check_query(history, top_k, self.config.max_history_items, self.config.max_top_k)
        lookup = self.live.lookup
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
        except BatcherClosedError:
            raise ServeError(503, "the service is shutting down") from None
        return self.live.describe(items, scores)

    async def recommend_async(self, query: RecQuery) -> list[dict[str, Any]]:
        """`recommend` for the event loop: waits for the micro-batcher without a thread."""
        if not self.batcher.enabled:
            return await asyncio.to_thread(self.recommend, query)
        try:
            fut = self.batcher.submit_future(query)
            items, scores = await asyncio.wait_for(
                asyncio.wrap_future(fut), self.config.request_timeout_s
            )
        except TimeoutError:
            raise ServeError(503, "recommendation timed out; the service is overloaded") from None
        except BatcherClosedError:
            raise ServeError(503, "the service is shutting down") from None
        return self.live.describe(items, scores)

    def _rank_batch(self, queries: list[RecQuery]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Answer a micro-batch: one `Session.recommend` per (only_new, exclude_seen) group,
        over the whole history (the model reads its last `max_history` items), the beam at
        least each group's largest top_k."""
        out: list[tuple[np.ndarray, np.ndarray]] = [None] * len(queries)  # type: ignore[list-item]
        groups: dict[tuple[bool, bool], list[int]] = defaultdict(list)
        for i, q in enumerate(queries):
            groups[(q.only_new, q.exclude_seen)].append(i)
        if torch.get_num_threads() != self._rec_threads:
            torch.set_num_threads(self._rec_threads)
        with self.model_lock:
            for (only_new, exclude_seen), members in groups.items():
                qs = [queries[i] for i in members]
                hist = np.full((len(qs), max(len(q.history) for q in qs)), -1, dtype=np.int64)
                for r, q in enumerate(qs):
                    hist[r, hist.shape[1] - len(q.history) :] = q.history
                ks = np.asarray([q.top_k for q in qs])
                recs = self.session.recommend(
                    hist,
                    ks,
                    self.config.mode,
                    users=[q.user for q in qs],
                    scope="new" if only_new else "full",
                    exclude_history=exclude_seen,
                    beam_size=max(self.beam_size, int(ks.max())),
                )
                for r, (i, q) in enumerate(zip(members, qs, strict=True)):
                    out[i] = (recs.items[r, : q.top_k], recs.scores[r, : q.top_k])
        return out

    # ================================================================== items
    def _embed(self, texts: list[str]) -> np.ndarray:
        with self._embed_lock:
            return self.embedder.encode(texts, progress=False)

    def add_items(self, items: Sequence[NewItem]) -> list[dict[str, Any]]:
        """Persist new items as pending (one transaction) and queue their edit (`adding`).

        ServeError: 503 on a read replica, 413 too many, 409 duplicate ids, 422 empty texts,
        507 an item's code group is full."""
        return add_items(self, items)

    def item(self, item_id: str) -> dict[str, Any]:
        """GET /items/{id}: an added item's row, or a warm item (ServeError 404 if unknown)."""
        return self.live.item(item_id)

    # ================================================================== edits
    def rollback(self, pack_id: str) -> dict[str, Any]:
        """Roll back an applied pack (any of them): its items stop being recommended."""
        return self.worker.rollback(pack_id)

    def packs(self) -> list[dict[str, Any]]:
        """The edit ledger, oldest first."""
        return ledger(self.store)

    def health(self) -> dict[str, Any]:
        """The /health summary: read without locks (the probe runs on the event loop)."""
        return health(self)
