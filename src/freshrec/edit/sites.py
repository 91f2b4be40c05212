"""GenRecEdit's per-position loop: the edit sites (SID position p, layer L_p) are edited one
after another, in position order. For each: keys of every edit request (teacher-forced on the
new item's SID, with the deltas of the earlier positions already live, as they are when
decoding) -> target residuals (batched Adam, `targets.py`) -> the closed-form delta of the site
(MEMIT or AlphaEdit, float64, `solve.py`) -> the delta goes live for the next positions.

    edits = edit_sites(model, hist, tgt, codes, trie, sites, covs, config, previous, timings)
    edits.deltas, edits.grams, edits.per_position, edits.failed
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from freshrec.edit.config import EditConfig
from freshrec.edit.keys import TeacherForcedBatch
from freshrec.edit.solve import alphaedit_solve, memit_solve, null_space_basis, preserved_change
from freshrec.edit.targets import TargetResult, optimise_targets
from freshrec.model.base import GenerativeRecommender
from freshrec.model.edit_hooks import EditHooks, Site
from freshrec.model.edit_packs import EditPack
from freshrec.semid.trie import SidTrie

_IN_PROGRESS = "<in-progress>"
_KEEP_BYTES = 2 << 30  # prepared request states kept across positions up to this size


@dataclass
class SiteEdits:
    """What editing the sites produced. deltas[site]: float32[d_out, d_in] weight delta;
    grams[site]: float64[d_in, d_in] K K^T of the keys used in its solve (AlphaEdit's memory of
    this pack); per_position[str(p)]: the position's metrics (`position_metrics`); failed:
    bool[n] requests whose target failed at some position."""

    deltas: dict[Site, torch.Tensor]
    grams: dict[Site, torch.Tensor]
    per_position: dict[str, dict[str, Any]]
    failed: np.ndarray


@dataclass
class SiteSolve:
    """The closed-form solve of one site. delta_w: float64[d_out, d_in]; keys: float64[d_in,
    n_used] and residuals: float64[d_out, n_used] (the requests in the solve, columns); used:
    bool[n] which requests those are; null_dim: AlphaEdit's null-space dimension (None for
    MEMIT)."""

    delta_w: torch.Tensor
    keys: torch.Tensor
    residuals: torch.Tensor
    used: torch.Tensor
    null_dim: int | None


def trie_allowed(trie: SidTrie, codes: np.ndarray, p: int) -> torch.Tensor:
    """Bool[n, sizes[p]]: tokens `trie` allows at position p after each request's SID prefix
    codes[:, :p] (codes: int64[n, P] SID codes of the targets)."""
    node = torch.zeros(codes.shape[0], dtype=torch.long)
    c = torch.from_numpy(codes)
    for q in range(p):
        node = trie.children[q].cpu()[node, c[:, q]]
    return trie.children[p].cpu()[node] >= 0


class RequestBatches:
    """The n edit requests cut into `batch_size` chunks of teacher-forced batches
    (history: Long[n, T], targets: Long[n, P] SID tokens). Prepared batches are kept for the
    later positions while `keep` and their states fit in `_KEEP_BYTES`; otherwise rebuilt."""

    def __init__(
        self,
        model: GenerativeRecommender,
        history: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        keep: bool,
    ) -> None:
        self.model, self.history, self.targets, self.keep = model, history, targets, keep
        n = history.shape[0]
        self.chunks = [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
        self._prepared: dict[int, TeacherForcedBatch] = {}
        self._kept_bytes = 0

    def get(self, chunk: int) -> TeacherForcedBatch:
        """The teacher-forced batch of chunk number `chunk` (prepared now or kept)."""
        batch = self._prepared.get(chunk)
        if batch is None:
            rows = self.chunks[chunk]
            batch = TeacherForcedBatch(self.model, self.history[rows], self.targets[rows])
            if self.keep and self._kept_bytes + batch.nbytes <= _KEEP_BYTES:
                self._prepared[chunk] = batch
                self._kept_bytes += batch.nbytes
        return batch


def position_targets(
    batches: RequestBatches,
    proj: nn.Linear,
    p: int,
    codes: np.ndarray,
    allowed: torch.Tensor,
    config: EditConfig,
    timings: dict[str, float],
) -> TargetResult:
    """Target residuals of every request at SID position p, chunk by chunk (codes: int64[n, P]
    SID codes of the targets; allowed: Bool[n, sizes[p]] trie-valid tokens). Adds seconds spent
    preparing keys to timings["keys"] and optimising to timings["targets"]."""
    parts: list[TargetResult] = []
    for ci, rows in enumerate(batches.chunks):
        t0 = time.perf_counter()
        scorer = batches.get(ci).scorer(p)
        timings["keys"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        parts.append(
            optimise_targets(
                scorer,
                proj,
                torch.from_numpy(codes[rows, p]),
                allowed[rows],
                steps=config.target_steps,
                lr=config.target_lr,
                norm_reg=config.norm_reg,
                clamp=config.clamp,
                margin=config.target_margin,
            )
        )
        timings["targets"] += time.perf_counter() - t0
        del scorer
    return TargetResult.cat(parts)


def solve_site(
    res: TargetResult,
    cov: torch.Tensor,
    site: Site,
    config: EditConfig,
    previous: Sequence[EditPack],
) -> SiteSolve:
    """The site's weight delta from its requests' keys and residuals (failed requests left out
    when config.drop_failures): MEMIT against the preservation statistics `cov` (float[d_in,
    d_in]), or AlphaEdit in the null space of `cov` and the earlier packs' keys at this site."""
    n = res.keys.shape[0]
    use = res.success if config.drop_failures else torch.ones(n, dtype=torch.bool)
    K = res.keys[use].double().T  # [d_in, n_used]
    R = res.delta[use].double().T  # [d_out, n_used]
    null_dim = None
    if config.method == "memit":
        dw = memit_solve(K, R, cov, config.lam, config.ridge)
    else:
        prev = [pk.grams[site] for pk in previous if site in pk.grams]
        G = torch.stack(prev).sum(0) if prev else None
        U = null_space_basis(cov, G, config.null_threshold)
        null_dim = int(U.shape[1])
        dw = alphaedit_solve(K, R, U, config.alpha)
    return SiteSolve(dw, K, R, use, null_dim)


def position_metrics(
    res: TargetResult, sol: SiteSolve, layer: int, weight: torch.Tensor, cov: torch.Tensor
) -> dict[str, Any]:
    """The pack manifest's metrics of one position: target success and steps, block log-probs
    before / after, delta size relative to the original outputs, the solve's relative fit
    residual, ||DeltaW||, the preserved keys' change (weight: the projection's float[d_out,
    d_in] base weight on the CPU)."""
    dw, K, R = sol.delta_w, sol.keys, sol.residuals
    fit = (dw @ K - R).norm() / R.norm().clamp_min(1e-30)
    failed = np.flatnonzero(~res.success.numpy())
    ratio = res.delta.norm(dim=1) / res.values.norm(dim=1).clamp_min(1e-6)
    return {
        "layer": layer,
        "n_success": int(res.success.sum()),
        "n_failed": int(failed.size),
        "failed_requests": failed.tolist(),
        "success_rate": float(res.success.double().mean()),
        "already_met": int((res.steps == 0).logical_and(res.success).sum()),
        "mean_steps": float(res.steps.double().mean()),
        "logp_before": float(res.logp_before.mean()),
        "logp_after": float(res.logp_after.mean()),
        "delta_over_v": float(ratio.mean()),
        "fit_residual": float(fit),
        "delta_w_norm": float(dw.norm()),
        "preserved_change": preserved_change(dw, weight, cov),
        "null_dim": sol.null_dim,
        "n_used_in_solve": int(sol.used.sum()),
    }


def edit_sites(
    model: GenerativeRecommender,
    history: torch.Tensor,
    targets: torch.Tensor,
    codes: np.ndarray,
    trie: SidTrie,
    sites: Sequence[Site],
    covs: dict[Site, torch.Tensor],
    config: EditConfig,
    previous: Sequence[EditPack],
    timings: dict[str, float],
) -> SiteEdits:
    """Edit `sites` in order for the n edit requests (history: Long[n, T] tokens; targets:
    Long[n, P] SID tokens; codes: int64[n, P] their SID codes; trie: the catalog trie the
    targets compete in; covs: preservation statistics per site). Each site's delta is live
    (an in-progress hook) while the later positions are edited, and removed at the end; the
    model must already compute with `previous` applied. Accumulates timings["keys"],
    ["targets"] and ["solve"] (seconds)."""
    n = history.shape[0]
    out = SiteEdits({}, {}, {}, np.zeros(n, dtype=bool))
    projs = model.ffn_out_projs()
    # prompt states that see the edited FFNs change under ungated (no-trigger) edits:
    # rebuild them then
    keep = config.trigger or not model.prompt_states_see_ffn_edits
    batches = RequestBatches(model, history, targets, config.batch_size, keep)
    # teacher-forced rows carry no prefix keys: the gate is open for them, as the union gate
    # of the finished stack will be on the new items' own prefixes
    work = EditHooks(model, tags=[_IN_PROGRESS]).install()
    try:
        for site in sites:
            p, layer = site
            allowed = trie_allowed(trie, codes, p)
            res = position_targets(batches, projs[layer], p, codes, allowed, config, timings)
            t0 = time.perf_counter()
            sol = solve_site(res, covs[site], site, config, previous)
            timings["solve"] += time.perf_counter() - t0
            out.deltas[site] = sol.delta_w.float()
            out.grams[site] = sol.keys @ sol.keys.T
            work.add({site: out.deltas[site]}, trigger=config.trigger)
            out.failed[~res.success.numpy()] = True
            weight = projs[layer].weight.detach().cpu()
            out.per_position[str(p)] = position_metrics(res, sol, layer, weight, covs[site])
    finally:
        work.remove()
    return out
