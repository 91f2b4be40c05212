"""Target residuals: for each edit request i, a vector delta_i float[d_out] that, added to the
edited projection's output at the position-p decoder token, makes the new item's SID token p
the model's choice.

All requests of a batch are optimised together with Adam (cosine schedule) on

    loss_i = -log p(t_p | history, t_<p)  +  norm_reg * ||delta_i|| / ||v_i||

(block-restricted log-softmax, as the beam search scores; v_i = the projection's original
output at that token), summed over requests -- Adam is elementwise, so a request's trajectory
does not depend on which other requests share its batch and batching is exact. After each step
||delta_i|| is clamped to `clamp * ||v_i||`. A request stops (its delta is frozen) as soon as
its target token's logit is within `margin` nats of the best token the trie allows after its
prefix (margin 0: the target is the argmax; margin m > 0: it is at most m below the best, a
softer target that leaves the warm sibling it competes with in front); requests that never
get there are reported as failures (`success == False`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from freshrec.edit.keys import PositionScorer


@dataclass
class TargetResult:
    """Per request (n rows): keys float32[n, d_in] (projection inputs), values float32[n, d_out]
    (original projection outputs v), delta float32[n, d_out] (the residual targets), success
    bool[n], steps int64[n] (Adam steps taken before success or the end), logp_before /
    logp_after float32[n] (block log-prob of the target token)."""

    keys: torch.Tensor
    values: torch.Tensor
    delta: torch.Tensor
    success: torch.Tensor
    steps: torch.Tensor
    logp_before: torch.Tensor
    logp_after: torch.Tensor

    @staticmethod
    def cat(parts: list[TargetResult]) -> TargetResult:
        return TargetResult(
            *[torch.cat([getattr(r, f) for r in parts]) for f in TargetResult.__dataclass_fields__]
        )


class _Injector:
    """Forward hook on the edited projection: captures input k and output v at decode position p on
    the first call, and adds `delta[rows]` there on every call."""

    def __init__(self, model: nn.Module, position: int) -> None:
        self.model = model
        self.p = position
        self.delta: torch.Tensor | None = None  # [b, d_out] for the current rows
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        trig = self.model.decode_context.positions
        m = trig == self.p
        if self.k is None:
            self.k = args[0][m].detach().float()
            self.v = output[m].detach().float()
        if self.delta is None:
            return output
        add = torch.zeros_like(output)
        add[m] = self.delta.to(output.dtype)
        return output + add


def optimise_targets(
    scorer: PositionScorer,
    proj: nn.Linear,
    target: torch.Tensor,
    allowed: torch.Tensor,
    *,
    steps: int = 30,
    lr: float = 0.5,
    norm_reg: float = 0.2,
    clamp: float = 4.0,
    margin: float = 0.0,
) -> TargetResult:
    """Optimise delta_i for the n requests of `scorer` (position p = scorer.p).

    proj: the edited projection (`ffn_out_projs()[L_p]`); target: Long[n] index of the target
    token within block p; allowed: Bool[n, sizes[p]] trie-valid tokens after each prefix;
    margin: success once the target's logit is at most this many nats below the best allowed.
    """
    with _injected(scorer.model, proj, scorer.p) as inj:
        search = _TargetSearch(scorer, inj, proj.out_features, target, allowed, margin)
        search.run(steps, lr=lr, norm_reg=norm_reg, clamp=clamp)
        if steps > 0:
            search.check_unfinished()
        return search.result()


@contextlib.contextmanager
def _injected(model: nn.Module, proj: nn.Linear, position: int) -> Iterator[_Injector]:
    """An `_Injector` of decode position `position` hooked on `proj` for the duration, with the
    model's parameters frozen (gradients flow to the deltas only)."""
    inj = _Injector(model, position)
    handle = proj.register_forward_hook(inj)
    frozen_params = [q for q in model.parameters() if q.requires_grad]
    for q in frozen_params:
        q.requires_grad_(False)
    try:
        yield inj
    finally:
        handle.remove()
        for q in frozen_params:
            q.requires_grad_(True)


def _target_logp(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """float32[b]: block log-prob of each row's target token (logits float[b, sizes[p]],
    target Long[b])."""
    return torch.log_softmax(logits.float(), -1).gather(1, target[:, None])[:, 0]


class _TargetSearch:
    """The batched search for the residuals of the n requests of `scorer`. The first, unedited
    forward captures keys float[n, d_in] and values float[n, d_out] (the projection's input and
    output); then per request: delta float[n, d_out] (Adam's leaf), done Bool[n] (target met:
    delta frozen), steps Long[n] (Adam steps taken), logp_before / logp_after float[n]."""

    def __init__(
        self,
        scorer: PositionScorer,
        inj: _Injector,
        d_out: int,
        target: torch.Tensor,
        allowed: torch.Tensor,
        margin: float,
    ) -> None:
        dev = scorer.model.device
        n = scorer.n
        self.scorer, self.inj, self.margin = scorer, inj, margin
        self.target, self.allowed = target.to(dev), allowed.to(dev)
        with torch.no_grad():
            logits0 = scorer.block_logits(torch.arange(n, device=dev))
        keys, values = inj.k, inj.v
        if keys is None or values is None or keys.shape[0] != n:
            raise RuntimeError(f"expected {n} keys at position {scorer.p}")
        self.keys, self.values = keys, values
        self.v_norm = values.norm(dim=1).clamp_min(1e-6)
        self.logp_before = _target_logp(logits0, self.target)
        self.delta = torch.zeros(n, d_out, device=dev, requires_grad=True)
        self.done = _success(logits0, self.target, self.allowed, margin)
        self.steps = torch.zeros(n, dtype=torch.long, device=dev)
        self.logp_after = self.logp_before.clone()

    def run(self, steps: int, *, lr: float, norm_reg: float, clamp: float) -> None:
        """Up to `steps` Adam steps (cosine schedule from lr to 0). One forward per step: it
        checks the current deltas (rows that succeed are frozen) and gives the gradient for
        the others."""
        opt = torch.optim.Adam([self.delta], lr=lr)
        for step in range(steps):
            rows = torch.nonzero(~self.done).squeeze(1)
            if rows.numel() == 0:
                break
            self.inj.delta = self.delta[rows]
            logits = self.scorer.block_logits(rows)
            logp = _target_logp(logits, self.target[rows])
            ok = torch.zeros_like(rows, dtype=torch.bool)
            if step > 0:  # step 0's deltas are zero: already checked on the unedited logits
                ok = _success(logits.detach(), self.target[rows], self.allowed[rows], self.margin)
                self.logp_after[rows] = logp.detach()
                self.done[rows[ok]] = True
            act = rows[~ok]
            if act.numel() == 0:
                break
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
            d_norm = (self.inj.delta.pow(2).sum(1) + 1e-12).sqrt()
            loss_rows = -logp + norm_reg * d_norm / self.v_norm[rows]
            opt.zero_grad(set_to_none=False)
            loss_rows[~ok].sum().backward()
            self._apply_step(opt, act, clamp)

    @torch.no_grad()
    def _apply_step(self, opt: torch.optim.Optimizer, act: torch.Tensor, clamp: float) -> None:
        """Adam's step on the rows still being optimised (`act`, Long[a]; finished rows keep
        their delta), then ||delta_i|| clamped to clamp * ||v_i|| on those rows."""
        frozen = self.delta[self.done].clone()
        opt.step()
        self.delta[self.done] = frozen
        self.steps[act] += 1
        d = self.delta[act]
        scale = (clamp * self.v_norm[act] / d.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
        self.delta[act] = d * scale[:, None]

    @torch.no_grad()
    def check_unfinished(self) -> None:
        """A last forward checks the final deltas of the rows not done yet."""
        rows = torch.nonzero(~self.done).squeeze(1)
        if rows.numel():
            self.inj.delta = self.delta[rows]
            logits = self.scorer.block_logits(rows)
            self.logp_after[rows] = _target_logp(logits, self.target[rows])
            self.done[rows] |= _success(logits, self.target[rows], self.allowed[rows], self.margin)

    def result(self) -> TargetResult:
        return TargetResult(
            keys=self.keys.cpu(),
            values=self.values.cpu(),
            delta=self.delta.detach().cpu(),
            success=self.done.cpu(),
            steps=self.steps.cpu(),
            logp_before=self.logp_before.detach().cpu(),
            logp_after=self.logp_after.detach().cpu(),
        )


def _success(
    logits: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor, margin: float = 0.0
) -> torch.Tensor:
    """Bool[b]: the target token is the argmax among the allowed tokens (margin 0), or its
    logit is at most `margin` below the best allowed logit (margin > 0)."""
    masked = logits.float().masked_fill(~allowed, float("-inf"))
    if margin <= 0:
        return masked.argmax(dim=1) == target
    best = masked.max(dim=1).values
    return masked.gather(1, target[:, None])[:, 0] >= best - margin
