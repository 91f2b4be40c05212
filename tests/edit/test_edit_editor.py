"""GenRecEditor end to end on the real MovieLens split with the tiny trained models: an edit of
new items (a seeded sample of the catalog's new items, never chosen from test labels) raises
recall on held-out validation/test requests whose target is an edited item above the unedited
full-catalog model's; failures are reported; sequential AlphaEdit batches; ablation options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from freshrec.data.schema import Requests
from freshrec.edit import EditConfig, EditPack, EditStack, GenRecEditor
from freshrec.edit.keys import request_tokens
from freshrec.errors import ConfigError
from freshrec.model.edit_hooks import EditHooks, active_hooks
from freshrec.recommend.catalog import Catalog
from freshrec.recommend.gr import GRRanker

# lambda per arch for these tiny models (a coarse sweep over 10..1000; docs/EDITING.md)
LAM = {"tiger": 30.0, "causal": 300.0}


def edited_sample(split, n: int, seed: int = 0) -> np.ndarray:
    """A seeded sample of the catalog's new items (no look at any request)."""
    new = np.flatnonzero(split.is_new)
    return np.sort(np.random.default_rng(seed).choice(new, n, replace=False))


def heldout(split, items: np.ndarray) -> Requests:
    """Validation + test requests whose target is one of `items` (one Requests)."""
    mask = np.zeros(split.dataset.n_items, dtype=bool)
    mask[items] = True
    parts = [r.subset(mask[r.target]) for r in (split.valid, split.test)]
    return Requests(
        *[np.concatenate([getattr(p, f) for p in parts]) for f in ("user", "pos", "target", "cold")]
    )


def warm_sample(split, n: int = 300) -> Requests:
    idx = np.flatnonzero(~split.test.cold)
    return split.test.subset(np.sort(np.random.default_rng(1).choice(idx, n, replace=False)))


def recall(ranker: GRRanker, split, req: Requests, ks=(10, 20, 50)) -> dict[int, float]:
    top = ranker.rank(split, req, top_k=max(ks))
    hit = top == np.asarray(req.target)[:, None]
    return {k: float(hit[:, :k].any(axis=1).mean()) for k in ks}


def target_log_prob(model, split, req: Requests, table) -> float:
    """Mean teacher-forced log-prob of the requests' target SIDs (sum over positions)."""
    hist, tgt = request_tokens(model, split, req, table.tokens(model.vocab))
    with torch.no_grad():
        return float(model.sid_log_probs(hist, tgt).sum(1).mean())


@pytest.mark.parametrize("arch", ["tiger", "causal"])
def test_edit_raises_cold_recall(
    arch, load_model, ckpt_dirs, ml_split, ml_emb, ml_sids, shared_work, tmp_path
) -> None:
    model = load_model(arch)
    _, table = ml_sids
    items = edited_sample(ml_split, 150)
    cfg = EditConfig(lam=LAM[arch], cov_samples=3000, reliability_beam=10, seed=0)
    editor = GenRecEditor(model, ckpt_dirs[arch], ml_split, table, ml_emb, cfg, shared_work)
    pack = editor.edit(items, seed=0)
    assert active_hooks(model) == []  # the editor leaves the model as it was
    m, t = pack.metrics, pack.timings
    assert m["n_items"] == 150
    assert m["n_requests"] == len(pack.requests["user"]) > 1400
    assert set(t) >= {"pseudo", "locate", "keys", "targets", "solve", "covariance", "edit_total"}
    assert pack.sites == [(p, min(p, 1)) for p in range(4)]
    assert m["reliability"]["top10"] > m["reliability"]["before"]["top10"]

    full = GRRanker(
        model,
        Catalog.from_split(ml_split, table, model.vocab),
        scope="full",
        name="C",
        beam_size=50,
        batch_size=256,
    )
    cold, warm = heldout(ml_split, items), warm_sample(ml_split)
    before_c, before_w = recall(full, ml_split, cold), recall(full, ml_split, warm)
    lp_before = target_log_prob(model, ml_split, cold, table)
    with EditStack(model, ckpt_dirs[arch]) as stack:
        stack.push(pack)
        after_c, after_w = recall(full, ml_split, cold), recall(full, ml_split, warm)
        lp_after = target_log_prob(model, ml_split, cold, table)
        assert editor.evaluate_reliability(pack) == {
            k: v for k, v in m["reliability"].items() if k != "before"
        }
    assert active_hooks(model) == []
    report = {
        "arch": arch,
        "n_cold_requests": len(cold),
        "cold_before": before_c,
        "cold_after": after_c,
        "warm_before": before_w,
        "warm_after": after_w,
        "cold_target_logp_before": lp_before,
        "cold_target_logp_after": lp_after,
        "reliability": m["reliability"],
        "timings": t,
    }
    print(json.dumps(report, indent=1))
    (tmp_path / f"e2e-{arch}.json").write_text(json.dumps(report))
    assert len(cold) > 400
    # generalisation: held-out requests for the edited items now rank them (full SID, top-50
    # of the whole catalog) where the unedited model (almost) never does ...
    assert after_c[50] * len(cold) >= before_c[50] * len(cold) + 8
    assert after_c[20] > before_c[20]
    # ... because their SIDs became much more likely under the edited model (robust signal)
    assert lp_after >= lp_before + 1.0
    assert after_w[50] >= 0.5 * before_w[50]  # locality: warm quality is not destroyed

    # the saved pack reloads and still applies
    loaded = EditPack.load(pack.save(tmp_path / "pack"))
    assert loaded.manifest["metrics"]["reliability"] == m["reliability"]
    assert editor.evaluate_reliability(loaded)["top10"] == m["reliability"]["top10"]


def test_failures_reported_and_optionally_dropped(
    load_model, ckpt_dirs, ml_split, ml_emb, ml_sids, shared_work
) -> None:
    model = load_model("tiger")
    items = edited_sample(ml_split, 20, seed=3)
    kw = {"target_steps": 0, "cov_samples": 3000, "measure_reliability": False, "lam": 100.0}
    for drop in (False, True):
        cfg = EditConfig(drop_failures=drop, **kw)
        editor = GenRecEditor(
            model, ckpt_dirs["tiger"], ml_split, ml_sids[1], ml_emb, cfg, shared_work
        )
        pack = editor.edit(items, seed=0)
        n = pack.metrics["n_requests"]
        fails = pack.metrics["failures"]
        all_failed = set()
        for p, d in pack.metrics["positions"].items():
            # no optimisation steps: every request not already met (top-1) fails, and is listed
            assert d["n_success"] == d["already_met"]
            assert d["n_failed"] == n - d["n_success"] == len(d["failed_requests"])
            assert d["n_used_in_solve"] == (d["n_success"] if drop else n)
            all_failed |= set(d["failed_requests"])
            assert int(p) in range(4)
        assert fails["n_requests"] == len(all_failed) > 0
        assert fails["requests"] == sorted(all_failed)
        assert fails["in_solve"] is (not drop)
        failed_items = set(pack.requests["item"][sorted(all_failed)].tolist())
        assert set(fails["items"]) == failed_items
    # a margin wider than any logit gap makes every request a success without a step
    cfg = EditConfig(target_margin=1e6, **kw)
    editor = GenRecEditor(model, ckpt_dirs["tiger"], ml_split, ml_sids[1], ml_emb, cfg, shared_work)
    pack = editor.edit(items, seed=0)
    assert pack.metrics["failures"]["n_requests"] == 0
    for d in pack.metrics["positions"].values():
        assert d["n_success"] == d["already_met"] == pack.metrics["n_requests"]


def test_sequential_alphaedit_keeps_previous_keys(
    load_model, ckpt_dirs, ml_split, ml_emb, ml_sids, shared_work
) -> None:
    model = load_model("tiger")
    ckpt = ckpt_dirs["tiger"]
    items = edited_sample(ml_split, 40, seed=4)
    cfg = EditConfig(
        method="alphaedit",
        null_threshold=0.05,
        alpha=0.01,
        cov_samples=3000,
        target_steps=10,
        measure_reliability=False,
    )
    editor = GenRecEditor(model, ckpt, ml_split, ml_sids[1], ml_emb, cfg, shared_work)
    first = editor.edit(items[:20], seed=0)
    alone = editor.edit(items[20:], seed=0)  # the second batch as if it were the first
    # previous packs are applied while editing: from an EditStack or temporarily
    with EditStack(model, ckpt) as stack:
        stack.push(first)
        second = editor.edit(items[20:], seed=0, previous=[first])
        with pytest.raises(ConfigError, match="applied"):
            editor.edit(items[20:], seed=0, previous=[])
    second_tmp = editor.edit(items[20:], seed=0, previous=[first])
    assert active_hooks(model) == []
    assert second.manifest["previous_packs"] == [first.pack_id]
    for s in second.sites:
        torch.testing.assert_close(second.deltas[s], second_tmp.deltas[s])
    for s in second.sites:
        d_prev = second.metrics["positions"][str(s[0])]["null_dim"]
        d_alone = alone.metrics["positions"][str(s[0])]["null_dim"]
        assert d_prev <= d_alone
        # the rows of DeltaW lie where the first pack's keys have little energy:
        # tr(DeltaW G1 DeltaW^T) <= thr lmax(G1) ||DeltaW||_F^2 (solve.py), and a smaller
        # share of DeltaW acts on them than when the first pack is unknown
        G = first.grams[s]
        lmax = torch.linalg.eigvalsh(G).max()

        def share(dw: torch.Tensor, G=G) -> float:
            dw = dw.double()
            return float(torch.einsum("ij,jk,ik->", dw, G, dw) / dw.pow(2).sum())

        assert share(second.deltas[s]) <= 0.05 * lmax * (1 + 1e-6)
        assert share(second.deltas[s]) < share(alone.deltas[s])


def test_ablation_options(load_model, ckpt_dirs, ml_split, ml_emb, ml_sids, shared_work) -> None:
    model = load_model("causal")
    items = edited_sample(ml_split, 15, seed=5)
    cfg = EditConfig(
        positions=(1,),
        trigger=False,
        contexts="random",
        locate="probe",
        probe_samples=400,
        cov_samples=3000,
        target_steps=5,
        measure_reliability=False,
    )
    editor = GenRecEditor(
        model, ckpt_dirs["causal"], ml_split, ml_sids[1], ml_emb, cfg, shared_work
    )
    pack = editor.edit(items, seed=0)
    loc = pack.manifest["localisation"]
    assert loc["method"] == "probe"
    assert pack.sites == [(1, loc["layers"][1])]
    assert pack.manifest["trigger"] is False
    assert pack.metrics["mean_neighbor_sim"] is None  # random contexts have no neighbour
    # a second editor finds the probe result in the cache
    again = GenRecEditor(model, ckpt_dirs["causal"], ml_split, ml_sids[1], ml_emb, cfg, shared_work)
    assert again.localise().cached
    assert again.localise().layers == loc["layers"]
    # ungated: the delta fires at every token of every forward, not only at position 1
    with EditStack(model, ckpt_dirs["causal"]) as stack:
        stack.record = True
        stack.push(pack)
        hooks = stack.hooks
        assert isinstance(hooks, EditHooks)
        model.sid_log_probs(
            *[torch.ones(2, 4, dtype=torch.long) * 2, torch.tensor([[2, 66, 130, 194]] * 2)]
        )
        assert hooks.fired == [(-1, loc["layers"][1])]
    with pytest.raises(ConfigError, match="out of range"):
        EditConfig(positions=(7,)).resolved_positions(4)
