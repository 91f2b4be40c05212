"""Start-up of a writer's durable state: the state must belong to this checkpoint, tokenizer
and prepared data (`check_identity`); `recover` brings back the added items (SIDs,
embeddings, statuses) from the catalog database, re-applies the ledger's applied packs in
order (a pack that cannot be loaded is moved to the pack store's quarantine, never deleted,
and marked `lost`; its items go back to `pending`), deletes the pack folders that no applied
or rolled-back ledger row references (an edit killed between its save and its commit, packs
folded by a compaction) and queues the pending items for their edit, their time to live
counted from their acknowledgement.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from freshrec.errors import CheckpointError, ConfigError, FreshrecError
from freshrec.model.edit_packs import EditPack
from freshrec.serve.catalog import APPLIED, LIVE, PENDING, ROLLED_BACK

if TYPE_CHECKING:
    from freshrec.serve.service import Service

log = logging.getLogger("freshrec.serve")
LOAD_ERRORS = (FreshrecError, OSError, ValueError, KeyError, TypeError)


def check_identity(svc: Service, want: dict[str, str], record: bool = True) -> None:
    """Refuse a state that belongs to another checkpoint, tokenizer or prepared data
    (`want`: tokenizer_fingerprint, checkpoint_hash, data_hash); record `want` otherwise
    (a writer; a replica only compares)."""
    have = svc.store.meta()
    wrong = [k for k, v in want.items() if k in have and have[k] != v]
    if wrong:
        raise ConfigError(
            f"the service state in {svc.paths.state_dir} ({svc.paths.db_url}) belongs to "
            f"another {', '.join(w.split('_')[0] for w in wrong)} "
            f"({', '.join(f'{k}={have[k]}' for k in wrong)}); serve this checkpoint with a "
            "new --state-dir (its items can be posted again)"
        )
    if record:
        svc.store.set_meta(want)


def pack_path(svc: Service, stored: str) -> Path:
    """A ledger row's pack folder (relative paths are under the edits folder)."""
    p = Path(stored)
    return p if p.is_absolute() else svc.paths.edits_dir / p


def load_pack(path: Path, pack_id: str) -> EditPack:
    """The pack in `path`; CheckpointError when the folder holds another pack."""
    pack = EditPack.load(path)
    if pack.pack_id != pack_id:
        raise CheckpointError(f"{path}: holds pack {pack.pack_id}, not {pack_id}")
    return pack


def reapply_packs(svc: Service) -> None:
    """Push the ledger's applied packs on both edit stacks; unloadable ones go to quarantine
    and become `lost` (their items pending again); live items without an applied pack go
    back to pending."""
    for row in svc.store.packs(APPLIED):
        path = pack_path(svc, row.path)
        try:
            pack = load_pack(path, row.pack_id)
            svc.edit_stack.push(pack)
            svc.serve_stack.push(pack)
        except LOAD_ERRORS as exc:
            moved = svc.pack_store.quarantine(path, f"pack {row.pack_id}: {exc}")
            where = f"moved to {moved.relative_to(svc.paths.edits_dir)}" if moved else "no folder"
            requeued = svc.store.mark_pack_lost(row.seq, row.pack_id, f"{exc} ({where})")
            log.error(
                "edit pack %s cannot be loaded (%s): marked lost (%s), %d item(s) back to pending",
                row.pack_id,
                exc,
                where,
                len(requeued),
            )
    applied = {p.pack_id for p in svc.serve_stack.packs}
    stale = [r.item_id for r in svc.store.items() if r.status == LIVE and r.pack_id not in applied]
    if stale:
        log.error("%d live item(s) without an applied pack: back to pending", len(stale))
        svc.store.requeue(stale)


def remove_unreferenced(svc: Service) -> None:
    """Delete pack folders (and temp folders) that no applied or rolled-back ledger row
    references (never committed, or folded by a compaction); nothing else is touched."""
    keep = {
        pack_path(svc, r.path).name for r in svc.store.packs() if r.status in (APPLIED, ROLLED_BACK)
    }
    svc.pack_store.sweep(keep)


def recover(svc: Service) -> None:
    """Rebuild the in-memory catalog, the edit stacks and the edit queue from the database."""
    svc.live.absorb(svc.store.items(), svc.paths.db_url)
    reapply_packs(svc)
    remove_unreferenced(svc)
    rows = svc.store.items()
    svc.live.track(rows)
    pending = [r for r in rows if r.status == PENDING]
    if pending:
        window_start = time.monotonic() - svc.config.edit_batch_window_s  # edit at once
        # their time to live counts from the acknowledgement, not from this restart
        svc.worker.enqueue(
            [r.item_id for r in pending], [r.created_at for r in pending], since=window_start
        )
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
