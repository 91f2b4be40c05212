"""`spec_benchmark_rows` (benchmarks/spec_rows.py) on real MovieLens data with a fresh tiny
tiger model standing in for both the base and the edited verifier."""

from __future__ import annotations

import pytest
import torch

from freshrec.model.base import build_model
from freshrec.recommend.spec import SpecRanker, TextDrafter
from model_helpers import tiny_config
from spec_rows import spec_benchmark_rows

INF = float("inf")


@pytest.fixture(scope="module")
def real(ml_split, ml_emb, ml_sids) -> dict:
    """A fresh tiny tiger model over the real SID vocabulary, and the spec ranker on it."""
    tok, table = ml_sids
    torch.manual_seed(0)
    model = build_model(tiny_config("tiger", max_history=5), tok.vocab).eval()
    ranker = SpecRanker(model, TextDrafter(ml_emb), table, n_drafts=20, beam_size=5, batch_size=16)
    return {"model": model, "table": table, "ranker": ranker}


def test_benchmark_rows(real, ml_split, ml_emb):
    rows = spec_benchmark_rows(
        real["model"],
        ml_split,
        real["table"],
        ml_emb,
        edited=real["model"],  # stands in for an edited model
        methods=("text", "hybrid"),
        valid_requests=24,
        test_requests=24,
        grid=(-INF, -4.0, INF),
        n_drafts=20,
        beam_size=5,
    )
    assert [r.method for r in rows] == [
        "SpecGR (text drafter)",
        "SpecGR + edited verifier (text drafter)",
    ]
    for r in rows:
        assert r.part == "test"
        assert r.n_requests == 24
        assert r.extra["gamma"] in (-INF, -4.0, INF)
        assert r.extra["verifier"] in ("base", "edited")
