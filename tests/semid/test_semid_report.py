"""sid_report on a hand-checked table."""

from __future__ import annotations

import numpy as np
from rich.console import Console

from freshrec.semid import SidTable, SidVocab, report_table, sid_report


def test_report_counts() -> None:
    codes = np.array([[0, 1], [0, 1], [0, 1], [2, 3], [1, 1], [1, 1]])
    table = SidTable.build(codes, np.array([0, 1, 2, 3, 4, 6]), 8, 4)
    rep = sid_report(table, SidVocab(n_levels=2, codebook_size=4, max_collision=4))
    assert rep["n_items"] == 8
    assert rep["n_assigned"] == 6
    assert rep["utilisation"] == [3 / 4, 2 / 4]
    assert rep["n_code_prefixes"] == 3
    assert rep["collision_rate"] == 5 / 6
    assert rep["n_collision_groups"] == 2
    assert rep["largest_collision_group"] == 3
    assert rep["max_collision_digit"] == 2
    assert rep["n_unique_sids"] == 6
    assert rep["sids_unique"]
    console = Console(record=True, width=80)
    console.print(report_table(rep))
    text = console.export_text()
    assert "utilisation level 2" in text
    assert "83.33%" in text


def test_report_empty_table() -> None:
    table = SidTable(np.full((3, 3), -1), 4)
    rep = sid_report(table, SidVocab(n_levels=2, codebook_size=4, max_collision=4))
    assert rep["n_assigned"] == 0
    assert rep["sids_unique"]
