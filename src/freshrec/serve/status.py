"""What the service reports about itself: the gauges, the /health summary and the ledger
view of GET /edits (functions over a `Service`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from freshrec.serve.catalog import PENDING, CatalogStore
from freshrec.serve.inputs import iso_time

if TYPE_CHECKING:
    from freshrec.serve.service import Service


def update_gauges(svc: Service) -> dict[str, Any]:
    """Set the catalog gauges; returns the catalog part of the /health summary (callers hold
    the state lock; the summary is replaced, never changed in place, so /health reads it
    without locks)."""
    counts = svc.live.counts()
    for status, n in counts.items():
        svc.metrics.set("freshrec_items", n, {"status": status})
    n_warm = svc.live.n_warm
    quarantined = svc.pack_store.quarantined()
    svc.metrics.set("freshrec_warm_items", n_warm)
    svc.metrics.set("freshrec_live_items", n_warm + counts["live"])
    svc.metrics.set("freshrec_pending_items", counts[PENDING])
    svc.metrics.set("freshrec_edit_packs_applied", len(svc.serve_stack))
    svc.metrics.set("freshrec_packs_quarantined", len(quarantined))
    return {
        "warm_items": n_warm,
        "live_new_items": svc.session.catalog.size("new"),
        "pending_items": counts[PENDING],
        "quarantined_packs": quarantined,
    }


def health(svc: Service) -> dict[str, Any]:
    """The /health summary (no locks: the probe runs on the event loop; no server paths)."""
    worker = svc.worker
    out = {
        "status": "ok",
        "role": svc.role,
        "editor": worker.state if svc.role == "writer" else "none (replica)",
        "editing": len(worker.editing),
        "queued": len(worker.queue),
        **svc._summary,
        "packs_applied": len(svc.serve_stack),  # read now: the stack changes before statuses
        "checkpoint_hash": svc.serve_stack.base_hash[:16],
        "arch": svc.model.arch,
        "batching": svc.config.batching,
        "uptime_s": round(time.time() - svc.started_at, 1),
        "last_edit": worker.last_edit,
        "last_compaction": worker.last_compaction,
    }
    if svc.follower is not None:
        out["replica"] = svc.follower.report()
    return out


def ledger(store: CatalogStore) -> list[dict[str, Any]]:
    """GET /edits: the edit ledger, oldest first."""
    return [
        {
            "pack_id": r.pack_id,
            "status": r.status,
            "created_at": iso_time(r.created_at),
            "items": r.items,
            "note": r.note,
        }
        for r in store.packs()
    ]
