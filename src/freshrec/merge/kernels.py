"""Tensor kernels of the merge methods (MMGRid: linear, task arithmetic, TIES, DARE), on one
tensor key at a time. The registered methods (`freshrec.merge.methods`) are built from them.

Every function takes the same key's tensor from N models (all of one shape `S`), plus the base
model's tensor for the task-vector methods, and returns the merged tensor of shape `S`. Work is
vectorised over the stacked `[N, *S]` task vectors; nothing loops over entries.

Task vectors: `tau_i = theta_i - base`. Computation runs in `float32` (or `float64` when an input
is `float64`); the caller casts the result to the output dtype.

`normalize` follows mergekit: for `linear`, `task_arithmetic` and `dare(sign_election=False)` it
divides by `sum(weights)`; for `ties` and `dare(sign_election=True)` it divides each entry by the
summed weight of the models that agree with the elected sign there (disjoint mean), and without
it that entry is the disjoint sum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "dare",
    "dare_drop_",
    "dare_mask",
    "disjoint_merge_",
    "elect_sign",
    "linear",
    "task_arithmetic",
    "task_vectors",
    "ties",
    "trim_",
    "trim_topk",
    "weight_column",
    "weighted_sum_",
]


def _compute_dtype(tensors: Sequence[Tensor]) -> torch.dtype:
    dtype = torch.float32
    for t in tensors:
        if not t.is_floating_point():
            raise TypeError(f"can only merge floating-point tensors, got {t.dtype}")
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _stack(tensors: Sequence[Tensor], dtype: torch.dtype) -> Tensor:
    """Stack N same-shape tensors into `[N, *S]` in `dtype`."""
    if len(tensors) == 0:
        raise ValueError("need at least one tensor to merge")
    shape = tensors[0].shape
    for i, t in enumerate(tensors):
        if t.shape != shape:
            raise ValueError(f"tensor {i} has shape {tuple(t.shape)}, tensor 0 has {tuple(shape)}")
    return torch.stack([t.to(dtype) for t in tensors])


def weight_column(weights: Sequence[float], n: int, dtype: torch.dtype, ndim: int) -> Tensor:
    """Weights as a `[N, 1, ..., 1]` tensor broadcastable against `[N, *S]`."""
    if len(weights) != n:
        raise ValueError(f"got {len(weights)} weights for {n} tensors")
    return torch.as_tensor(list(weights), dtype=dtype).reshape((n,) + (1,) * (ndim - 1))


def _per_model(value: float | Sequence[float], n: int, name: str) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * n
    values = [float(v) for v in value]
    if len(values) != n:
        raise ValueError(f"got {len(values)} {name} values for {n} tensors")
    return values


def _safe_divide(num: Tensor, den: Tensor) -> Tensor:
    """`num / den` with zero (or ~zero) denominators treated as 1, as mergekit does."""
    return num / torch.where(den.abs() < 1e-8, torch.ones_like(den), den)


def task_vectors(base: Tensor, tensors: Sequence[Tensor]) -> Tensor:
    """`[N, *S]` stack of `tensors[i] - base` in the compute dtype (a new tensor)."""
    dtype = _compute_dtype([base, *tensors])
    stacked = _stack(tensors, dtype)  # torch.stack copies: safe to modify in place
    if base.shape != stacked.shape[1:]:
        raise ValueError(
            f"base has shape {tuple(base.shape)}, tensors have {tuple(stacked.shape[1:])}"
        )
    return stacked.sub_(base.to(dtype))


def weighted_sum_(stacked: Tensor, w: Tensor, normalize: bool) -> Tensor:
    """`sum_i w_i x_i` (over `sum_i w_i` if `normalize`); scales `stacked` in place."""
    out = stacked.mul_(w).sum(0)
    return _safe_divide(out, w.sum()) if normalize else out


def linear(tensors: Sequence[Tensor], weights: Sequence[float], normalize: bool = True) -> Tensor:
    """Weighted average `sum_i w_i theta_i` (divided by `sum_i w_i` if `normalize`). Shape `S`."""
    dtype = _compute_dtype(tensors)
    stacked = _stack(tensors, dtype)
    return weighted_sum_(
        stacked, weight_column(weights, len(tensors), dtype, stacked.ndim), normalize
    )


def task_arithmetic(
    base: Tensor,
    tensors: Sequence[Tensor],
    weights: Sequence[float],
    lam: float = 1.0,
    normalize: bool = False,
) -> Tensor:
    """`base + lam * sum_i w_i tau_i` (the sum divided by `sum_i w_i` if `normalize`)."""
    tau = task_vectors(base, tensors)
    delta = weighted_sum_(tau, weight_column(weights, len(tensors), tau.dtype, tau.ndim), normalize)
    return base.to(tau.dtype) + lam * delta


def trim_(tau: Tensor, density: float | Sequence[float]) -> Tensor:
    """In-place `trim_topk` of a contiguous `tau: [N, *S]`; temporaries are one model's size."""
    n = tau.shape[0]
    dens = _per_model(density, n, "density")
    flat = tau.view(n, -1)
    numel = flat.shape[1]
    for i, d in enumerate(dens):
        if d >= 1 or numel == 0:
            continue
        # floor with a tiny tolerance so that e.g. 0.29 * 100 gives 29, not 28
        k = max(1, math.floor(d * numel + 1e-9))
        mag = flat[i].abs()
        cut = torch.kthvalue(mag, numel - k + 1).values  # k-th largest magnitude
        above, at_cut = mag > cut, mag == cut
        n_from_cut = k - int(above.sum())
        keep = above | (at_cut & (at_cut.cumsum(0) <= n_from_cut))
        flat[i].masked_fill_(~keep, 0)
    return tau


def trim_topk(tau: Tensor, density: float | Sequence[float]) -> Tensor:
    """Keep the top `density_i` fraction of row i of `tau: [N, *S]` by magnitude, zero the rest.

    Exactly `k_i = max(1, floor(density_i * numel(S)))` entries survive per model (`density >= 1`
    keeps everything); equal magnitudes at the cut go to the lowest flat indices. One
    `kthvalue` per model finds the cut (a loop over models, never over entries).
    """
    return trim_(tau.clone().contiguous(), density)


def elect_sign(weighted: Tensor) -> Tensor:
    """Sign per entry of `sum_i weighted[i]` (`[N, *S]` -> `[*S]`), +1 where the sum is >= 0."""
    total = weighted.sum(0)
    return torch.where(total >= 0, torch.ones_like(total), -torch.ones_like(total))


def disjoint_merge_(tau: Tensor, w: Tensor, normalize: bool) -> Tensor:
    """TIES sign election + disjoint mean/sum of `tau: [N, *S]` (modified in place) with
    weights `w: [N, 1, ...]`. As in mergekit, agreement is judged on `w_i * tau_i`, so zero
    entries (trimmed or dropped) and zero-weight models never count."""
    weighted = tau.mul_(w)
    sign = elect_sign(weighted)
    den = torch.zeros_like(sign) if normalize else None
    for i in range(weighted.shape[0]):  # per model: temporaries of one model's size
        agree = torch.sign(weighted[i]) == sign
        weighted[i].masked_fill_(~agree, 0)
        if den is not None:
            den.add_(agree.to(den.dtype), alpha=float(w[i]))
    delta = weighted.sum(0)
    return _safe_divide(delta, den) if den is not None else delta


def ties(
    base: Tensor,
    tensors: Sequence[Tensor],
    weights: Sequence[float],
    density: float | Sequence[float],
    lam: float = 1.0,
    normalize: bool = True,
) -> Tensor:
    """TIES-merging: trim each tau_i to its top-`density` entries (`trim_topk`), elect a sign
    per entry from the summed weighted trimmed mass, keep only entries agreeing with it and
    take their weighted mean (`normalize`) or sum; result `base + lam * delta`, shape `S`."""
    tau = trim_(task_vectors(base, tensors), density)
    w = weight_column(weights, len(tensors), tau.dtype, tau.ndim)
    return base.to(tau.dtype) + lam * disjoint_merge_(tau, w, normalize)


def dare_mask(
    shape: Sequence[int], density: float | Sequence[float], generator: torch.Generator | None
) -> Tensor:
    """Boolean keep-mask `[N, *S]` (N = shape[0]): entry kept with probability `density_i`.

    Drawn model by model (`torch.rand(S)` each, in order), exactly as `dare` draws it.
    """
    n, inner = shape[0], tuple(shape[1:])
    dens = _per_model(density, n, "density")
    masks = [torch.rand(inner, generator=generator) < d for d in dens]
    return torch.stack(masks) if masks else torch.zeros(tuple(shape), dtype=torch.bool)


def dare_drop_(
    tau: Tensor,
    density: float | Sequence[float],
    generator: torch.Generator | None,
    rescale: bool = True,
) -> Tensor:
    """In place on `tau: [N, *S]`: zero each entry of row i with probability `1 - density_i`
    (the `dare_mask` draws, in order), survivors divided by `density_i` if `rescale`."""
    dens = _per_model(density, tau.shape[0], "density")
    for i, d in enumerate(dens):  # same draws, in the same order, as dare_mask
        keep = torch.rand(tuple(tau.shape[1:]), generator=generator) < d
        tau[i].masked_fill_(~keep, 0)
        if rescale:
            tau[i].div_(d)
    return tau


def dare(
    base: Tensor,
    tensors: Sequence[Tensor],
    weights: Sequence[float],
    density: float | Sequence[float],
    lam: float = 1.0,
    generator: torch.Generator | None = None,
    sign_election: bool = False,
    normalize: bool = False,
    rescale: bool = True,
) -> Tensor:
    """DARE: drop each entry of tau_i with probability `p = 1 - density_i`, rescale survivors by
    `1 / density_i` (if `rescale`; keeps `E[tau~_i] = tau_i`), then combine linearly
    (`dare_linear`: `base + lam * sum_i w_i tau~_i`) or with TIES sign election and disjoint
    mean/sum (`dare_ties`, `sign_election=True`). Masks come from `generator` (`dare_mask`)."""
    tau = dare_drop_(task_vectors(base, tensors), density, generator, rescale)
    w = weight_column(weights, tau.shape[0], tau.dtype, tau.ndim)
    delta = (
        disjoint_merge_(tau, w, normalize) if sign_election else weighted_sum_(tau, w, normalize)
    )
    return base.to(tau.dtype) + lam * delta
