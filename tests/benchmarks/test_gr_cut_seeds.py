"""`--cut-seeds` of benchmarks/gr_bench.py: one list for every cut, or seeds per cut."""

from __future__ import annotations

import pytest

from gr_bench import cut_seeds


def test_one_list_applies_to_every_cut() -> None:
    assert cut_seeds("0,1,2", "60/20/20") == [0, 1, 2]


def test_per_cut_seeds_and_seed_0_for_unnamed_cuts() -> None:
    spec = "80/10/10=0,1,2;70/15/15=1"
    assert cut_seeds(spec, "80/10/10") == [0, 1, 2]
    assert cut_seeds(spec, "70/15/15") == [1]
    assert cut_seeds(spec, "60/20/20") == [0]


@pytest.mark.parametrize("spec", ["a,b", "80/10/10=0;70/15/15", "80/10/10=x"])
def test_malformed_spec_is_a_clear_error(spec: str) -> None:
    with pytest.raises(SystemExit, match="--cut-seeds"):
        cut_seeds(spec, "80/10/10")
