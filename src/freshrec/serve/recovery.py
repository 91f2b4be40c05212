"""Start-up of the service's durable state: the state folder must belong to this checkpoint,
tokenizer and prepared data (`check_identity`); `recover` brings back the added items (SIDs,
embeddings, statuses) from the catalog database, re-applies the ledger's applied packs in
order (a pack whose folder is missing or corrupt is marked `lost` and its items go back to
`pending`), deletes pack folders without a ledger row (an edit killed between its save and its
commit) and queues the pending items for their edit.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from freshrec.errors import CheckpointError, ConfigError, FreshrecError
from freshrec.model.edit_packs import EditPack
from freshrec.serve.catalog import APPLIED, LIVE, LOST, PENDING

if TYPE_CHECKING:
    from freshrec.serve.service import Service

log = logging.getLogger("freshrec.serve")


def check_identity(svc: Service, want: dict[str, str]) -> None:
    """Refuse a state folder that belongs to another checkpoint, tokenizer or prepared data
    (`want`: tokenizer_fingerprint, checkpoint_hash, data_hash); record `want` otherwise."""
    have = svc.store.meta()
    wrong = [k for k, v in want.items() if k in have and have[k] != v]
    if wrong:
        raise ConfigError(
            f"the service state in {svc.paths.state_dir} ({svc.paths.db_url}) belongs to "
            f"another {', '.join(w.split('_')[0] for w in wrong)} "
            f"({', '.join(f'{k}={have[k]}' for k in wrong)}); serve this checkpoint with a "
            "new --state-dir (its items can be posted again)"
        )
    svc.store.set_meta(want)


def pack_path(svc: Service, stored: str) -> Path:
    """A ledger row's pack folder (relative paths are under the edits folder)."""
    p = Path(stored)
    return p if p.is_absolute() else svc.edits_dir / p


def reapply_packs(svc: Service) -> None:
    """Push the ledger's applied packs on both edit stacks; unloadable ones become `lost`
    (their items pending again), and live items without an applied pack go back to pending."""
    for row in svc.store.packs(APPLIED):
        path = pack_path(svc, row.path)
        try:
            pack = EditPack.load(path)
            if pack.pack_id != row.pack_id:
                raise CheckpointError(f"{path}: holds pack {pack.pack_id}, not {row.pack_id}")
            svc.edit_stack.push(pack)
            svc.serve_stack.push(pack)
        except (FreshrecError, OSError, ValueError, KeyError, TypeError) as exc:
            requeued = svc.store.mark_pack_lost(row.seq, row.pack_id, str(exc))
            log.error(
                "edit pack %s cannot be loaded (%s): marked lost, %d item(s) back to pending",
                row.pack_id,
                exc,
                len(requeued),
            )
    applied = {p.pack_id for p in svc.serve_stack.packs}
    stale = [r.item_id for r in svc.store.items() if r.status == LIVE and r.pack_id not in applied]
    if stale:
        log.error("%d live item(s) without an applied pack: back to pending", len(stale))
        svc.store.requeue(stale)


def remove_unreferenced(svc: Service) -> None:
    """Delete pack folders (and temp folders) that no ledger row references: never committed."""
    keep = {pack_path(svc, r.path).resolve() for r in svc.store.packs() if r.status != LOST}
    for child in sorted(svc.edits_dir.iterdir()):
        if child.resolve() not in keep:
            log.warning("removing %s: no ledger row references it", child)
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def recover(svc: Service) -> None:
    """Rebuild the in-memory catalog, the edit stacks and the edit queue from the database."""
    svc.live.restore(svc.store.items(), svc.paths.db_url)
    reapply_packs(svc)
    remove_unreferenced(svc)
    rows = svc.store.items()
    svc.live.track(rows)
    pending = [r.item_id for r in rows if r.status == PENDING]
    if pending:
        window_start = time.monotonic() - svc.config.edit_batch_window_s  # edit at once
        svc.worker.enqueue(pending, time.time(), since=window_start)
        log.info("%d pending item(s) will be edited", len(pending))
    with svc.state_lock:
        svc.session.set_catalog(svc.live.catalog())
    svc.update_gauges()
    live = svc.live
    log.info(
        "catalog: %d warm items, %d added (%d live), %d edit pack(s) applied",
        live.n_warm,
        len(live.added),
        sum(s.status == LIVE for s in live.added.values()),
        len(svc.serve_stack),
    )
