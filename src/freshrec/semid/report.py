"""Quality summary of a SID table: codebook utilisation, collisions, uniqueness."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.table import Table

from freshrec.semid.table import SidTable
from freshrec.semid.vocab import SidVocab


def sid_report(table: SidTable, vocab: SidVocab) -> dict[str, Any]:
    """Statistics of the assigned rows of `table`.

    Keys: n_items, n_assigned, utilisation (list[float], per level: distinct codes used / K),
    n_code_prefixes (distinct L-code tuples), collision_rate (share of assigned items whose
    L codes are shared with another item), n_collision_groups (code tuples used by > 1 item),
    largest_collision_group (items in the biggest group), max_collision_digit, n_unique_sids,
    sids_unique (n_unique_sids == n_assigned).
    """
    sids = table.sids[table.assigned_mask]
    n = int(sids.shape[0])
    L = table.n_levels
    if n == 0:
        return {
            "n_items": table.n_items,
            "n_assigned": 0,
            "utilisation": [0.0] * L,
            "n_code_prefixes": 0,
            "collision_rate": 0.0,
            "n_collision_groups": 0,
            "largest_collision_group": 0,
            "max_collision_digit": -1,
            "n_unique_sids": 0,
            "sids_unique": True,
        }
    codes = sids[:, :L]
    util = [float(np.unique(codes[:, level]).size) / vocab.codebook_size for level in range(L)]
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    shared = counts[inverse.ravel()] > 1
    n_unique = int(np.unique(sids, axis=0).shape[0])
    return {
        "n_items": table.n_items,
        "n_assigned": n,
        "utilisation": util,
        "n_code_prefixes": int(counts.size),
        "collision_rate": float(shared.mean()),
        "n_collision_groups": int((counts > 1).sum()),
        "largest_collision_group": int(counts.max()),
        "max_collision_digit": int(sids[:, L].max()),
        "n_unique_sids": n_unique,
        "sids_unique": n_unique == n,
    }


def report_table(report: dict[str, Any], title: str = "Semantic IDs") -> Table:
    """A two-column rich Table of a `sid_report` dict."""
    out = Table(title=title)
    out.add_column("metric")
    out.add_column("value", justify="right")
    for key, value in report.items():
        if key == "utilisation":
            for level, u in enumerate(value):
                out.add_row(f"utilisation level {level + 1}", f"{u:.1%}")
        elif isinstance(value, float):
            out.add_row(key, f"{value:.2%}" if key.endswith("rate") else f"{value:.4g}")
        else:
            out.add_row(key, str(value))
    return out
