"""The service's edit worker: one background thread that waits `edit_batch_window_s` for more
items, edits every waiting item into one `EditPack` on its own copy of the model (so
recommendations never wait for an edit), saves the pack atomically, records it in the ledger,
flips its items to `live` in one transaction, and finally applies it to the serving model
together with a new recommend catalog. Also rolls packs back, and folds old packs into one
(`compaction`) when more than `compact_keep + compact_min` are applied.

Lock order: the edit lock -> the service's state lock -> its model lock.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import torch

from freshrec.edit import GenRecEditor
from freshrec.errors import ConfigError, FreshrecError
from freshrec.model.edit_packs import EditPack, EditStack
from freshrec.serve.catalog import APPLIED, COMPACTED, FAILED, LIVE, PENDING, ROLLED_BACK
from freshrec.serve.compaction import fold_packs
from freshrec.serve.inputs import ServeError

if TYPE_CHECKING:
    from freshrec.serve.service import Service

log = logging.getLogger("freshrec.serve")
NO_CONTEXT = "no training context among its text neighbours"


def restack(stack: EditStack, packs: Sequence[EditPack]) -> None:
    """Make `stack` hold exactly `packs`, in order."""
    while len(stack):
        stack.pop()
    for p in packs:
        stack.push(p)


class EditWorker:
    """The queue of item ids waiting for their edit and the thread that edits them."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.lock = threading.Lock()  # one edit or rollback at a time
        self.cond = threading.Condition()
        self.queue: deque[str] = deque()
        self.queue_since: float | None = None  # monotonic time the oldest waiting item came
        self.enqueued_at: dict[str, float] = {}
        self.state = "starting"
        self.editing: list[str] = []
        self.last_edit: dict[str, Any] | None = None
        self.last_compaction: dict[str, Any] | None = None

    # ------------------------------------------------------------------ queue
    def enqueue(
        self, item_ids: Sequence[str], acked: float | Sequence[float], since: float | None = None
    ) -> None:
        """Queue items acknowledged at `acked` (unix seconds, one for all or one per item; the
        clock of freshrec_item_live_seconds); `since`: the batch window's start (monotonic
        seconds, default: now)."""
        times = [acked] * len(item_ids) if isinstance(acked, int | float) else list(acked)
        with self.cond:
            for i, t in zip(item_ids, times, strict=True):
                self.queue.append(i)
                self.enqueued_at[i] = float(t)
            if self.queue_since is None and self.queue:
                self.queue_since = time.monotonic() if since is None else since
            self.cond.notify_all()

    def queued(self) -> int:
        with self.cond:
            return len(self.queue)

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    # ------------------------------------------------------------------ thread
    def run(self) -> None:
        """The worker thread: warm-up, then edit batches until the service stops."""
        svc = self.svc
        torch.set_num_threads(svc.config.edit_thread_count())
        if svc.config.warmup:
            self.state = "warming"
            try:
                self.warmup()
            except Exception:  # the first edit will compute (and report) it instead
                log.exception("edit warm-up failed")
        self.state = "idle"
        self.maybe_compact()
        while not svc.stopping.is_set():
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self.edit(batch)
                self.maybe_compact()

    def _next_batch(self) -> list[str] | None:
        """Wait for items and the batch window; None when the service stops."""
        stop = self.svc.stopping
        with self.cond:
            while not self.queue and not stop.is_set():
                self.cond.wait(1.0)
            if stop.is_set():
                return None
            since = self.queue_since or time.monotonic()
        delay = since + self.svc.config.edit_batch_window_s - time.monotonic()
        if delay > 0 and stop.wait(delay):
            return None
        with self.cond:
            n = min(len(self.queue), self.svc.config.max_edit_batch)
            batch = [self.queue.popleft() for _ in range(n)]
            self.queue_since = time.monotonic() if self.queue else None
        return batch

    def make_editor(self) -> GenRecEditor:
        svc = self.svc
        with svc.state_lock:
            table, emb = svc.live.table, svc.live.emb
        return GenRecEditor(
            svc.edit_model,
            svc.checkpoint,
            svc.split,
            table,
            emb,
            svc.edit_config,
            svc.paths.workspace,
        )

    def warmup(self) -> None:
        """Localisation + preservation statistics now (cached on disk) rather than in the
        first edit."""
        t0 = time.perf_counter()
        editor = self.make_editor()
        loc = editor.localise()
        positions = self.svc.edit_config.resolved_positions(self.svc.vocab.sid_len)
        editor.covariances([(p, loc.layers[p]) for p in positions])
        log.info("edit statistics ready in %.1f s", time.perf_counter() - t0)

    # ------------------------------------------------------------------ edits
    def edit(self, item_ids: list[str]) -> None:
        """Edit the still-pending items of `item_ids` into one pack and apply it."""
        svc = self.svc
        with self.lock:
            with svc.state_lock:
                todo = [i for i in item_ids if svc.live.added[i].status == PENDING]
                idx = [svc.live.added[i].idx for i in todo]
            if not todo:
                return
            self.state, self.editing = "editing", todo
            t0 = time.perf_counter()
            try:
                pack = self.make_editor().edit(
                    idx, seed=svc.config.edit_seed, previous=svc.edit_stack.packs
                )
            except Exception as exc:
                reason = str(exc) if isinstance(exc, FreshrecError) else f"internal error: {exc!r}"
                log.exception("edit of %d item(s) failed", len(todo))
                self.fail(todo, reason)
                svc.metrics.inc("freshrec_edits_total", labels={"result": "failed"})
                return
            finally:
                self.state, self.editing = "idle", []
            no_ctx = {int(i) for i in pack.metrics.get("items_without_context", [])}
            failed = [i for i, k in zip(todo, idx, strict=True) if k in no_ctx]
            live = [i for i in todo if i not in set(failed)]
            now = time.time()
            if self._record(pack, todo, live, failed, now):
                self._apply(pack, todo, live, failed, now, t0)

    def _record(
        self, pack: EditPack, todo: list[str], live: list[str], failed: list[str], now: float
    ) -> bool:
        """Save the pack and record it in the ledger; on failure re-queue `todo` (the folder,
        if written, is unreferenced and removed at the next start) and return False."""
        svc = self.svc
        if svc.lock_lost is not None:  # no longer the writer: leave the items pending
            log.error("edit pack %s not recorded: %s", pack.pack_id, svc.lock_lost)
            return False
        folder = svc.pack_store.folder(pack.pack_id)
        try:
            pack.save(folder)
            svc.store.record_pack(pack.pack_id, folder.name, live, failed, NO_CONTEXT, now=now)
        except (OSError, sa.exc.SQLAlchemyError) as exc:
            log.exception("cannot record edit pack %s; retrying later", pack.pack_id)
            self.last_edit = {"error": str(exc)}
            time.sleep(1.0)
            with self.cond:
                self.queue.extendleft(reversed(todo))
                self.queue_since = self.queue_since or time.monotonic()
                self.cond.notify_all()
            return False
        return True

    def _apply(
        self,
        pack: EditPack,
        todo: list[str],
        live: list[str],
        failed: list[str],
        now: float,
        t0: float,
    ) -> None:
        """Apply a recorded pack: edit model, then serving model + catalog, then statuses
        (`t0`: perf_counter when the edit started)."""
        svc = self.svc
        svc.edit_stack.push(pack)
        seconds = time.perf_counter() - t0
        self.last_edit = {
            "pack_id": pack.pack_id,
            "items": len(todo),
            "seconds": round(seconds, 3),
            "timings": pack.timings,
        }
        with svc.state_lock:
            # the catalog and the model change together; statuses flip after both, so an
            # item reported live is always recommendable
            catalog = svc.live.catalog(extra_live={svc.live.added[i].idx for i in live})
            with svc.model_lock:
                svc.serve_stack.push(pack)
                svc.session.set_catalog(catalog)
            for i in live:
                s = svc.live.added[i]
                s.status, s.pack_id, s.live_at, s.error = LIVE, pack.pack_id, now, None
            for i in failed:
                s = svc.live.added[i]
                s.status, s.pack_id, s.error = FAILED, pack.pack_id, NO_CONTEXT
            svc.update_gauges()
        svc.metrics.observe("freshrec_edit_seconds", seconds)
        svc.metrics.inc("freshrec_edits_total", labels={"result": "applied"})
        for i in live:
            t_in = self.enqueued_at.pop(i, None)
            if t_in is not None:
                svc.metrics.observe("freshrec_item_live_seconds", time.time() - t_in)
        log.info("edit pack %s: %d item(s) live in %.2f s", pack.pack_id, len(live), seconds)

    def fail(self, item_ids: list[str], reason: str) -> None:
        svc = self.svc
        try:
            svc.store.mark_failed(item_ids, reason)
        except sa.exc.SQLAlchemyError:
            log.exception("cannot mark items failed")
            return
        with svc.state_lock:
            for i in item_ids:
                s = svc.live.added[i]
                s.status, s.error = FAILED, reason
            svc.update_gauges()

    def rollback(self, pack_id: str) -> dict[str, Any]:
        """Roll back an applied pack (any of them, not only the latest): its items become
        `rolled_back` and stop being recommended. ServeError 404 unknown, 409 not applied."""
        svc = self.svc
        svc.check_writer()
        with self.lock:
            row = svc.store.pack(pack_id)
            if row is None:
                raise ServeError(404, f"unknown edit pack {pack_id!r}")
            if row.status == COMPACTED:
                raise ServeError(
                    409,
                    f"edit pack {pack_id!r} was compacted ({row.note}): roll back that pack "
                    "to take out its items together with those of the packs folded with it",
                )
            if row.status != APPLIED:
                raise ServeError(409, f"edit pack {pack_id!r} is {row.status}, not applied")
            ids = svc.store.rollback_pack(row.seq, pack_id)
            remaining = [p for p in svc.edit_stack.packs if p.pack_id != pack_id]
            restack(svc.edit_stack, remaining)
            with svc.state_lock:
                for i in ids:
                    if i in svc.live.added:
                        svc.live.added[i].status = ROLLED_BACK
                        svc.live.added[i].live_at = None
                catalog = svc.live.catalog()
                with svc.model_lock:
                    restack(svc.serve_stack, remaining)
                    svc.session.set_catalog(catalog)
                svc.update_gauges()
        svc.metrics.inc("freshrec_rollbacks_total")
        log.info("edit pack %s rolled back (%d item(s))", pack_id, len(ids))
        return {"pack_id": pack_id, "status": ROLLED_BACK, "items": ids}

    # ------------------------------------------------------------------ compaction
    def maybe_compact(self) -> None:
        """Fold the applied packs older than the newest `compact_keep` into one pack once there
        are at least `compact_min` of them (module `compaction`). Failures are logged; the
        packs then stay as they are."""
        svc, cfg = self.svc, self.svc.config
        if not cfg.compact or svc.lock_lost is not None:
            return
        with self.lock:
            rows = svc.store.packs(APPLIED)
            fold = rows[: max(0, len(rows) - cfg.compact_keep)]
            if len(fold) < cfg.compact_min:
                return
            t0 = time.perf_counter()
            by_id = {p.pack_id: p for p in svc.edit_stack.packs}
            try:
                if any(r.pack_id not in by_id for r in fold):
                    raise ConfigError("the ledger and the applied packs disagree")
                folded = fold_packs([by_id[r.pack_id] for r in fold])
                folder = folded.save(svc.pack_store.folder(folded.pack_id))
                svc.store.record_compaction(folded.pack_id, folder.name, fold)
            except (ConfigError, OSError, sa.exc.SQLAlchemyError) as exc:
                log.error(
                    "compaction of %d packs failed (%s); packs left as they are", len(fold), exc
                )
                return
            gone = {r.pack_id for r in fold}
            remaining = [p for p in svc.edit_stack.packs if p.pack_id not in gone] + [folded]
            restack(svc.edit_stack, remaining)
            with svc.state_lock:
                with svc.model_lock:
                    restack(svc.serve_stack, remaining)
                for s in svc.live.added.values():
                    if s.status == LIVE and s.pack_id in gone:
                        s.pack_id = folded.pack_id
                svc.update_gauges()
            for r in fold:
                shutil.rmtree(svc.pack_store.folder(r.pack_id), ignore_errors=True)
        seconds = time.perf_counter() - t0
        self.last_compaction = {
            "pack_id": folded.pack_id,
            "folded": len(fold),
            "items": len(folded.items),
            "seconds": round(seconds, 3),
        }
        svc.metrics.inc("freshrec_compactions_total")
        log.info(
            "compaction: %d packs folded into %s in %.2f s", len(fold), folded.pack_id, seconds
        )
