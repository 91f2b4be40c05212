"""Compaction: the edit worker folds the oldest applied packs into one pack, in the background,
so that the pack count (memory, disk, start-up and restack time) stays bounded while the
newest `compact_keep` packs can still be rolled back one by one.

`fold_packs(packs)` builds a pack that computes what the packs applied together compute: the
hooks sum every pack's deltas per site anyway (`edit_packs.combined_deltas`), and gate on the
union of the packs' SIDs, so the folded pack holds the summed deltas and key grams (AlphaEdit
sums the grams of previous packs too), the concatenated edit requests, items and SIDs. The
ledger change is one transaction (`CatalogStore.record_compaction`): the folded rows become
`compacted`, a new `applied` row names the new pack, and their live items move to it; only
then are the old folders deleted (a crash in between leaves folders that the next start
sweeps). Rolling back the folded pack rolls back all of its items.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

import freshrec
from freshrec.errors import ConfigError
from freshrec.model.edit_hooks import Site
from freshrec.model.edit_packs import FORMAT, VERSION, EditPack


def _sum(
    tensors: Sequence[dict[Site, torch.Tensor]], dtype: torch.dtype
) -> dict[Site, torch.Tensor]:
    out: dict[Site, torch.Tensor] = {}
    for part in tensors:
        for site, t in part.items():
            out[site] = out[site] + t.to(dtype) if site in out else t.to(dtype).clone()
    return out


def fold_packs(packs: Sequence[EditPack]) -> EditPack:
    """One pack equivalent to applying `packs` together (see the module docstring).

    ConfigError when there are fewer than two packs or they differ in base checkpoint,
    tokenizer or trigger (a triggered and an untriggered delta cannot share a site)."""
    if len(packs) < 2:
        raise ConfigError("folding needs at least two packs")
    first = packs[0]
    for p in packs[1:]:
        if (p.base_hash, p.tokenizer_fingerprint, p.trigger) != (
            first.base_hash,
            first.tokenizer_fingerprint,
            first.trigger,
        ):
            raise ConfigError(
                f"packs {first.pack_id} and {p.pack_id} differ in base checkpoint, tokenizer or "
                "trigger: they cannot be folded into one"
            )
    deltas = _sum([p.deltas for p in packs], torch.float32)
    grams = _sum([p.grams for p in packs], torch.float64)
    requests: dict[str, np.ndarray] = {}
    if all(p.requests for p in packs):
        for key in first.requests:
            requests[key] = np.concatenate([p.requests[key] for p in packs]).astype(np.int64)
    items = [p.manifest["items"] for p in packs]
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "pack_id": "",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "freshrec_version": freshrec.__version__,
        "arch": first.manifest.get("arch"),
        "base": first.manifest["base"],
        "items": {
            "index": [i for it in items for i in it["index"]],
            "id": [i for it in items for i in it.get("id", [])],
        },
        "sids": [s for p in packs for s in p.manifest.get("sids", [])],
        "sites": [{"position": p, "layer": layer} for p, layer in sorted(deltas)],
        "method": "folded",
        "trigger": first.trigger,
        # the stack's gate is the union of the packs' SIDs when every pack asks for it
        "gate": "prefix" if all(p.gate == "prefix" for p in packs) else "none",
        "seed": None,
        "config": {"folded": [p.pack_id for p in packs]},
        "folded_packs": [
            {
                "pack_id": p.pack_id,
                "method": p.manifest.get("method"),
                "created": p.manifest.get("created"),
                "items": len(p.items),
            }
            for p in packs
        ],
        "metrics": {
            "n_items": sum(len(p.items) for p in packs),
            "items_without_context": [
                i for p in packs for i in p.metrics.get("items_without_context", [])
            ],
        },
        "timings": {},
    }
    manifest["pack_id"] = EditPack.content_id(deltas, manifest)
    return EditPack(deltas=deltas, manifest=manifest, grams=grams, requests=requests)
