"""A read replica's view of its writer's catalog (`read_only: true`).

The writer owns the catalog database and the pack folder; a replica opens the same database
(PostgreSQL, or the same SQLite file on one host) and the same pack folder (shared storage),
writes neither, and every `follow_interval_s` seconds compares a cheap fingerprint of the
catalog (`CatalogStore.fingerprint`). When it changed, the replica reads the item statuses,
fetches the rows (SIDs, embeddings) of items it does not know yet, loads the packs that the
ledger applies and that it does not hold (from the shared folder), then swaps the serving
stack, the recommend catalog and the statuses together under its locks, as the writer does.
An item is shown live only once its pack is applied here, so an item reported live is
recommendable. A pack it cannot load yet (shared storage lag, a compaction deleting folded
folders meanwhile) leaves the stack as it was until the next poll; a replica never marks
packs lost, never quarantines or deletes anything.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from freshrec.model.edit_packs import EditPack
from freshrec.serve.catalog import APPLIED, LIVE, PENDING
from freshrec.serve.edit_worker import restack
from freshrec.serve.live import ItemState
from freshrec.serve.recovery import LOAD_ERRORS, load_pack, pack_path
from freshrec.serve.tables import ItemRow

if TYPE_CHECKING:
    from freshrec.serve.service import Service

log = logging.getLogger("freshrec.serve")


class Follower:
    """Polls the writer's catalog and applies its changes (see the module docstring)."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self._fingerprint: Any = None
        self.synced_at: float | None = None  # unix seconds of the last successful poll
        self.changed_at: float | None = None  # unix seconds of the last applied change
        self.behind: list[str] = []  # packs the ledger applies that could not be loaded
        self.error: str | None = None
        self.syncs = 0

    def lag(self) -> float:
        """Seconds since the last successful poll (inf before the first)."""
        return float("inf") if self.synced_at is None else time.time() - self.synced_at

    def report(self) -> dict[str, Any]:
        return {
            "synced_s_ago": round(self.lag(), 2) if self.synced_at else None,
            "changes_applied": self.syncs,
            "packs_not_loaded": list(self.behind),
            "error": self.error,
        }

    def run(self) -> None:
        """The replica's poll loop (a thread), until the service stops."""
        svc = self.svc
        while not svc.stopping.wait(svc.config.follow_interval_s):
            try:
                self.sync()
                self.error = None
            except (sa.exc.SQLAlchemyError, OSError) as exc:
                self.error = str(exc)[:500]
                log.warning("replica: cannot poll the catalog (%s)", exc)
            svc.metrics.set("freshrec_replica_lag_seconds", min(self.lag(), 1e9))

    def _packs(self) -> tuple[list[EditPack], list[str]]:
        """The packs the ledger applies, in order (held ones reused), and the ids of those
        that cannot be loaded."""
        svc = self.svc
        held = {p.pack_id: p for p in svc.serve_stack.packs}
        packs, missing = [], []
        for row in svc.store.packs(APPLIED):
            pack = held.get(row.pack_id)
            if pack is None:
                try:
                    pack = load_pack(pack_path(svc, row.path), row.pack_id)
                except LOAD_ERRORS as exc:
                    log.warning("replica: pack %s not loadable yet (%s)", row.pack_id, exc)
                    missing.append(row.pack_id)
                    continue
            packs.append(pack)
        return packs, missing

    @staticmethod
    def _state(row: ItemRow, applied: set[str]) -> ItemState:
        """The replica's status of a catalog row: live only when its pack is applied here."""
        state = ItemState.of(row)
        if state.status == LIVE and state.pack_id not in applied:
            state.status, state.pack_id, state.live_at = PENDING, None, None
        return state

    def sync(self) -> bool:
        """One poll; True when something changed and was applied."""
        svc = self.svc
        fingerprint = svc.store.fingerprint()
        if fingerprint == self._fingerprint:
            self.synced_at = time.time()
            return False
        states = svc.store.item_states()
        new = [r.item_id for r in states if r.item_id not in svc.live.added]
        rows = svc.store.items(new) if new else []
        packs, missing = self._packs()
        if missing:  # keep the stack; items of unapplied packs stay pending here
            packs = svc.serve_stack.packs
        applied = {p.pack_id for p in packs}
        fresh = {r.item_id: self._state(r, applied) for r in states}
        # statuses are published last: an item reported live is already recommendable here
        hidden = [dataclasses.replace(r, status=PENDING) for r in rows]
        with svc.state_lock:
            svc.live.absorb(hidden, svc.paths.db_url)
            catalog = svc.live.catalog(added={**svc.live.added, **fresh})
            with svc.model_lock:
                if [p.pack_id for p in packs] != [p.pack_id for p in svc.serve_stack.packs]:
                    restack(svc.serve_stack, packs)
                svc.session.set_catalog(catalog)
            svc.live.added.update(fresh)
            svc.update_gauges()
        self.behind = missing
        self._fingerprint = None if missing else fingerprint  # retry the packs next poll
        self.synced_at = self.changed_at = time.time()
        self.syncs += 1
        if new or missing:
            log.info(
                "replica: %d new item(s), %d pack(s) applied, %d not loadable yet",
                len(new),
                len(packs),
                len(missing),
            )
        return True
