"""Adding items (POST /items): validate everything -> embed the texts (MiniLM, the loaders'
text format) -> assign SIDs with the frozen tokenizer -> insert the rows as `pending` in one
transaction -> make them visible in memory -> queue their edit -> acknowledge (202).

A request is all or nothing: any problem (a duplicate id, an empty text, an item whose code
group has no free collision digit) refuses the whole request before anything is written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from freshrec.errors import FreshrecError
from freshrec.semid import assign_new_items
from freshrec.serve.catalog import PENDING, ItemRow
from freshrec.serve.inputs import NewItem, ServeError, check_new_items, new_item_texts

if TYPE_CHECKING:
    from freshrec.serve.service import Service


def check_new(svc: Service, ids: Sequence[str]) -> None:
    """ServeError 409 naming the ids the catalog already has (warm or added)."""
    taken = [i for i in ids if svc.live.known(i)]
    if taken:
        raise ServeError(
            409,
            f"item ids already in the catalog: {', '.join(map(repr, taken[:20]))}",
            duplicates=taken,
        )


def no_free_sid(svc: Service, ids: Sequence[str], emb: np.ndarray) -> None:
    """ServeError 507 naming the items whose code group has no free collision digit: not the
    client's fault and nothing it can change (the SID format is the model's)."""
    full = svc.live.crowded(svc.tokenizer.encode(emb), ids)
    if not full:
        return
    shown = ", ".join(map(repr, full[:20])) + (" ..." if len(full) > 20 else "")
    raise ServeError(
        507,
        f"no free semantic ID for {len(full)} item(s) ({shown}): the catalog already holds "
        f"{svc.live.table.max_collision} items with the same codes, the most the model's "
        "SIDs can tell apart. Nothing was added; the other items can be posted without "
        "these. More room needs a new tokenizer and model (a task for the service's "
        "operator, see docs/SERVING.md)",
        full_items=full,
    )


def add_items(svc: Service, items: Sequence[NewItem]) -> list[dict[str, Any]]:
    """Persist new items as pending (one transaction) and queue their edit; returns the
    acknowledgements [{"item_id", "sid", "status"}]. ServeError: 503 on a read replica or a
    writer that lost its lock, 413 too many, 409 duplicate ids, 422 empty texts, 507 an
    item's code group is full."""
    svc.check_writer()
    ids = check_new_items(items, svc.config.max_items_per_post)
    check_new(svc, ids)
    texts = new_item_texts(items, svc.text_label)
    emb = svc._embed(texts)
    now = time.time()
    with svc.state_lock:
        check_new(svc, ids)  # a concurrent request may have added one meanwhile
        idx, n_total = svc.live.indices(ids)
        try:
            table = assign_new_items(
                svc.tokenizer, svc.live.table, emb, np.asarray(idx, dtype=np.int64), n_total
            )
        except FreshrecError as exc:
            no_free_sid(svc, ids, emb)
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
            svc.store.add_items(rows)
        except sa.exc.IntegrityError:
            raise ServeError(409, "an item id is already in the catalog") from None
        # durable: now make it visible in memory (pending items may appear in histories;
        # in mode "fresh" they are recommended from now on)
        svc.live.add(rows, table, emb)
        if svc.config.mode == "fresh":
            svc.session.set_catalog(svc.live.catalog())
        else:
            svc.session.set_catalog(svc.live.grown(svc.session.catalog))
        svc.update_gauges()
    svc.metrics.inc("freshrec_items_added_total", len(rows))
    svc.worker.enqueue([r.item_id for r in rows], now)
    return [{"item_id": r.item_id, "sid": list(r.sid), "status": PENDING} for r in rows]
