"""The recommendation service: a trained checkpoint that learns new items while it serves.

`Service` wires the parts, one module each:
- `live.LiveCatalog`: the in-memory catalog (the prepared split's **warm** items, the ones the
  checkpoint was trained on, plus items added through the API) and the recommend `Catalog`;
- `inputs`: request validation and errors (`ServeError`); `metrics`: Prometheus metrics;
- `edit_worker.EditWorker`: the background edits (one pack per batch window) and rollbacks;
- `recovery`: start-up from the catalog database and the edit ledger (`catalog.CatalogStore`).

Adding items (`add_items`): validate everything -> embed the texts (MiniLM, the loaders' text
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

import contextlib
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
import torch

from freshrec.data import load_split
from freshrec.edit.covariance import split_hash
from freshrec.embed import embed_texts
from freshrec.embed.encoder import TextEmbedder
from freshrec.errors import ConfigError, FreshrecError
from freshrec.model.checkpoint import load_checkpoint
from freshrec.model.edit_packs import EditStack
from freshrec.recommend import Session
from freshrec.recommend.fresh import FreshParams
from freshrec.semid import assign_new_items, load_sid_table, load_tokenizer
from freshrec.serve.batching import MicroBatcher
from freshrec.serve.catalog import FAILED, LIVE, PENDING, CatalogStore, ItemRow
from freshrec.serve.config import ServeConfig
from freshrec.serve.edit_worker import EditWorker
from freshrec.serve.inputs import (
    NewItem,
    RecQuery,
    ServeError,
    category_label,
    check_new_items,
    check_query,
    iso_time,
    new_item_texts,
)
from freshrec.serve.live import LiveCatalog
from freshrec.serve.metrics import service_metrics
from freshrec.serve.recovery import check_identity, recover

RETRIES = 3  # wider-beam retries of rows that history exclusion leaves short


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
        self.edit_config = config.edit_config()
        self.metrics = service_metrics()
        self.started_at = time.time()
        self._load_data_and_models()

        self.store = CatalogStore(self.paths.db_url)
        self.edits_dir = self.paths.edits_dir
        self.edits_dir.mkdir(parents=True, exist_ok=True)
        self.embedder = TextEmbedder()
        self.state_lock = threading.RLock()
        self.model_lock = threading.Lock()
        self._embed_lock = threading.Lock()
        self.stopping = threading.Event()
        self.worker = EditWorker(self)
        self._threads: list[threading.Thread] = []
        want = {
            "tokenizer_fingerprint": self.tokenizer.fingerprint,
            "checkpoint_hash": self.serve_stack.base_hash,
            "data_hash": split_hash(self.split),
        }
        check_identity(self, want)
        self.batcher: MicroBatcher[RecQuery, tuple[np.ndarray, np.ndarray]] = MicroBatcher(
            self._rank_batch,
            max_batch=config.max_batch,
            window_ms=config.batch_window_ms,
            enabled=config.batching,
            on_batch=lambda n, _s: self.metrics.observe("freshrec_recommend_batch_size", n),
            name="freshrec-recommend",
        )

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
        self.edit_model = load_checkpoint(self.checkpoint, expect_fingerprint=fingerprint)
        self.vocab = self.model.vocab
        self.serve_stack = EditStack(self.model, self.checkpoint)
        self.edit_stack = EditStack(self.edit_model, self.checkpoint)
        emb = embed_texts(ds.items.texts, cache_dir=ws.embeddings, progress=False)
        shown = (LIVE, PENDING, FAILED) if self.config.mode == "fresh" else (LIVE,)
        self.live = LiveCatalog(self.split, full_table, emb, self.vocab, shown)
        self.text_label = category_label(self.recipe.data.kind)
        self._users = (
            {u: i for i, u in enumerate(ds.user_ids)} if self.vocab.user_buckets > 0 else {}
        )
        self.session = Session(
            self.model,
            self.live.catalog(build_tries=False),
            edit_stack=self.serve_stack,
            beam_size=self.config.beam_size,
            batch_size=self.config.max_batch,
            retries=RETRIES,
            tokenizer_fingerprint=fingerprint,
            fresh=FreshParams.load_or_default(self.checkpoint),
        )

    # ================================================================== lifecycle
    def start(self) -> Service:
        """Recover the catalog and the applied packs, then start the workers."""
        recover(self)
        self.batcher.start()
        workers = (("freshrec-embedder", self._load_embedder), ("freshrec-edit", self.worker.run))
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
        self.store.close()

    def _load_embedder(self) -> None:
        # load MiniLM and run it once, so that the first POST is not slower than the others
        with contextlib.suppress(Exception), self._embed_lock:
            self.embedder.encode(["warm-up"], progress=False)

    def update_gauges(self) -> None:
        counts = self.live.counts()
        for status, n in counts.items():
            self.metrics.set("freshrec_items", n, {"status": status})
        n_warm = self.live.n_warm
        self.metrics.set("freshrec_warm_items", n_warm)
        self.metrics.set("freshrec_live_items", n_warm + counts["live"])
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
                    beam_size=max(self.config.beam_size, int(ks.max())),
                )
                for r, (i, q) in enumerate(zip(members, qs, strict=True)):
                    out[i] = (recs.items[r, : q.top_k], recs.scores[r, : q.top_k])
        return out

    # ================================================================== items
    def _embed(self, texts: list[str]) -> np.ndarray:
        with self._embed_lock:
            return self.embedder.encode(texts, progress=False)

    def _check_new(self, ids: Sequence[str]) -> None:
        taken = [i for i in ids if self.live.known(i)]
        if taken:
            raise ServeError(
                409,
                f"item ids already in the catalog: {', '.join(map(repr, taken[:20]))}",
                duplicates=taken,
            )

    def add_items(self, items: Sequence[NewItem]) -> list[dict[str, Any]]:
        """Persist new items as pending (one transaction) and queue their edit.

        ServeError: 413 too many, 409 duplicate ids, 422 empty texts / no free SID."""
        ids = check_new_items(items, self.config.max_items_per_post)
        self._check_new(ids)
        texts = new_item_texts(items, self.text_label)
        emb = self._embed(texts)
        now = time.time()
        with self.state_lock:
            self._check_new(ids)  # a concurrent request may have added one meanwhile
            idx, n_total = self.live.indices(ids)
            try:
                table = assign_new_items(
                    self.tokenizer, self.live.table, emb, np.asarray(idx, dtype=np.int64), n_total
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
            # durable: now make it visible in memory (pending items may appear in histories;
            # in mode "fresh" they are recommended from now on)
            self.live.add(rows, table, emb)
            if self.config.mode == "fresh":
                self.session.set_catalog(self.live.catalog())
            else:
                self.session.set_catalog(self.live.grown(self.session.catalog))
            self.update_gauges()
        self.metrics.inc("freshrec_items_added_total", len(rows))
        self.worker.enqueue([r.item_id for r in rows], now)
        return [{"item_id": r.item_id, "sid": list(r.sid), "status": PENDING} for r in rows]

    def item(self, item_id: str) -> dict[str, Any]:
        """GET /items/{id}: an added item's row, or a warm item (ServeError 404 if unknown)."""
        return self.live.item(item_id)

    # ================================================================== edits
    def rollback(self, pack_id: str) -> dict[str, Any]:
        """Roll back an applied pack (any of them): its items stop being recommended."""
        return self.worker.rollback(pack_id)

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

    def health(self) -> dict[str, Any]:
        queued = self.worker.queued()
        with self.state_lock:
            pending = sum(s.status == PENDING for s in self.live.added.values())
        return {
            "status": "ok",
            "editor": self.worker.state,
            "editing": len(self.worker.editing),
            "queued": queued,
            "warm_items": self.live.n_warm,
            "live_new_items": self.session.catalog.size("new"),
            "pending_items": pending,
            "packs_applied": len(self.serve_stack),
            "checkpoint": str(self.checkpoint),
            "arch": self.model.arch,
            "batching": self.config.batching,
            "uptime_s": round(time.time() - self.started_at, 1),
            "last_edit": self.worker.last_edit,
        }
