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

import math
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
    model = scorer.model
    dev = model.device
    n = scorer.n
    target, allowed = target.to(dev), allowed.to(dev)
    inj = _Injector(model, scorer.p)
    handle = proj.register_forward_hook(inj)
    frozen_params = [q for q in model.parameters() if q.requires_grad]
    for q in frozen_params:  # gradients flow to delta only
        q.requires_grad_(False)
    try:
        all_rows = torch.arange(n, device=dev)
        with torch.no_grad():
            logits0 = scorer.block_logits(all_rows)
        keys, values = inj.k, inj.v
        if keys is None or values is None or keys.shape[0] != n:
            raise RuntimeError(f"expected {n} keys at position {scorer.p}")
        v_norm = values.norm(dim=1).clamp_min(1e-6)
        logp_before = torch.log_softmax(logits0.float(), -1).gather(1, target[:, None])[:, 0]

        delta = torch.zeros(n, proj.out_features, device=dev, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=lr)
        done = _success(logits0, target, allowed, margin)
        n_steps = torch.zeros(n, dtype=torch.long, device=dev)
        logp_after = logp_before.clone()
        # one forward per step: it checks the current deltas (rows that succeed are frozen)
        # and gives the gradient for the others; a last forward checks the final deltas
        for step in range(steps):
            rows = torch.nonzero(~done).squeeze(1)
            if rows.numel() == 0:
                break
            inj.delta = delta[rows]
            logits = scorer.block_logits(rows)
            logp = torch.log_softmax(logits.float(), -1).gather(1, target[rows, None])[:, 0]
            ok = torch.zeros_like(rows, dtype=torch.bool)
            if step > 0:  # step 0's deltas are zero: already checked on logits0
                ok = _success(logits.detach(), target[rows], allowed[rows], margin)
                logp_after[rows] = logp.detach()
                done[rows[ok]] = True
            act = rows[~ok]
            if act.numel() == 0:
                break
            for group in opt.param_groups:  # cosine from lr to 0 over `steps`
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
            d_norm = (inj.delta.pow(2).sum(1) + 1e-12).sqrt()
            loss_rows = -logp + norm_reg * d_norm / v_norm[rows]
            opt.zero_grad(set_to_none=False)
            loss_rows[~ok].sum().backward()
            with torch.no_grad():
                frozen = delta[done].clone()
                opt.step()
                delta[done] = frozen
                n_steps[act] += 1
                # clamp ||delta_i|| <= clamp * ||v_i|| (rows still being optimised)
                d = delta[act]
                scale = (clamp * v_norm[act] / d.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
                delta[act] = d * scale[:, None]
        rows = torch.nonzero(~done).squeeze(1)
        if steps > 0 and rows.numel():
            with torch.no_grad():
                inj.delta = delta[rows]
                logits = scorer.block_logits(rows)
                logp_after[rows] = torch.log_softmax(logits.float(), -1).gather(
                    1, target[rows, None]
                )[:, 0]
                done[rows] |= _success(logits, target[rows], allowed[rows], margin)
        return TargetResult(
            keys=keys.cpu(),
            values=values.cpu(),
            delta=delta.detach().cpu(),
            success=done.cpu(),
            steps=n_steps.cpu(),
            logp_before=logp_before.detach().cpu(),
            logp_after=logp_after.detach().cpu(),
        )
    finally:
        handle.remove()
        for q in frozen_params:
            q.requires_grad_(True)


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
