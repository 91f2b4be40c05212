"""benchmarks/scale_bench.py end to end on two small catalogs: it writes both results files
with the issue's keys, and every recommendation it times is valid."""

from __future__ import annotations

import json

import torch

import scale_bench


def test_scale_bench_writes_its_results(tmp_path) -> None:
    threads = torch.get_num_threads()
    try:
        scale_bench.main(
            ["--sizes", "10000,12000", "--requests", "8", "--repeats", "1", "--out", str(tmp_path)]
        )
    finally:
        torch.set_num_threads(threads)
    out = json.loads((tmp_path / "scale.json").read_text())
    assert out["catalog_sizes"] == [10000, 12000]
    for key in ("ms_per_request", "trie_build_s", "trie_mem_mb"):
        assert len(out[key]) == 2
        assert all(v > 0 for v in out[key])
    assert out["assign_items_per_s"] > 0
    assert out["fuse_ms_per_request_1m"] is None  # no 1M catalog in this run
    assert out["meta"]["command"].startswith("python")
    for row in out["rows"]:
        assert row["bad_slots_beam"] == 0
        assert row["bad_slots_fresh"] == 0
    assert out["rows"][1]["new_items"] == 120
    md = (tmp_path / "scale.md").read_text()
    assert "How each cost grows and why" in md
