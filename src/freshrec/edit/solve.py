"""Closed-form weight deltas, in float64 (shapes follow nn.Linear: W float[d_out, d_in]).

K float[d_in, n]: the edited keys (columns); R float[d_out, n]: their residual targets (the
wanted change of the projection's output); C float[d_in, d_in] = E[k k^T] over preserved keys.

MEMIT (`memit_solve`): minimise ||DeltaW K - R||^2 + lam * E||DeltaW k||^2, i.e.

    DeltaW = R K^T (K K^T + lam C + r I)^-1,   r = ridge * mean(diag(K K^T + lam C)).

Scaling: K K^T is a **sum** over the n edit keys and C a **mean** over preserved keys, so
`lam` counts preserved keys in units of edit keys: lam = 3000 weighs the preservation term like
3000 typical training keys against each edit key. The tiny ridge only matters when both K K^T
and C are rank-deficient (dead FFN units); it is relative so that it does not depend on the
keys' scale. Solved with `torch.linalg.solve` on the symmetric system, no explicit inverse.

AlphaEdit (`null_space_projector` + `alphaedit_solve`): restrict DeltaW to the (approximate)
null space of the preserved keys. With M = C / lmax(C) + G / lmax(G), G = sum of K_prev K_prev^T
of earlier packs' keys at this site (both normalised so neither dominates by scale), P projects
onto the eigenvectors of M with eigenvalue < `threshold * lmax(M)`, and

    DeltaW = R K^T P (P K K^T P + a I)^-1,   a = alpha * mean(diag(P K K^T P)),

the minimiser of ||DeltaW K - R||^2 + a ||DeltaW||^2 over DeltaW = DeltaW P (equal to the
AlphaEdit form R K^T P (K K^T P + a I)^-1, solved here as a symmetric system). Since
DeltaW = DeltaW P, every key k moves the output by ||DeltaW k|| = ||DeltaW P k|| <=
||DeltaW||_2 ||P k||, and over preserved keys E||DeltaW k||^2 <= ||DeltaW||_2^2 tr(P C) with
tr(P C) <= lmax(C) tr(P M) < lmax(C) * d_null * threshold * lmax(M)   (C / lmax(C) <= M): they
move at most by the little energy they have in the discarded directions (exactly 0 when the
preserved keys span a subspace, e.g. fewer keys than dimensions).
"""

from __future__ import annotations

import torch

from freshrec.errors import ConfigError


def _sym(a: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a + a.T)


def _check(K: torch.Tensor, R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if K.ndim != 2 or R.ndim != 2 or K.shape[1] != R.shape[1]:
        raise ConfigError(
            f"K [d_in, n] and R [d_out, n] disagree: {tuple(K.shape)}, {tuple(R.shape)}"
        )
    return K.double(), R.double()


def memit_solve(
    K: torch.Tensor, R: torch.Tensor, C: torch.Tensor, lam: float, ridge: float = 1e-6
) -> torch.Tensor:
    """DeltaW float64[d_out, d_in] = R K^T (K K^T + lam C + r I)^-1 (see module doc)."""
    K, R = _check(K, R)
    C = C.to(K.device, torch.float64)
    A = _sym(K @ K.T + lam * C)
    if ridge > 0:
        scale = A.diagonal().mean().clamp_min(1e-30)
        A = A + ridge * scale * torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    B = R @ K.T  # [d_out, d_in]
    return torch.linalg.solve(A, B.T).T


def null_space_projector(
    C: torch.Tensor, prev_gram: torch.Tensor | None = None, threshold: float = 1e-2
) -> tuple[torch.Tensor, int]:
    """(P float64[d, d], null dimension): projector onto the eigenvectors of
    C / lmax(C) (+ G / lmax(G)) with eigenvalue < threshold * lmax."""
    C = C.double()
    M = C / torch.linalg.eigvalsh(_sym(C)).max().clamp_min(1e-300)
    if prev_gram is not None and prev_gram.abs().sum() > 0:
        G = prev_gram.to(M.device, torch.float64)
        M = M + G / torch.linalg.eigvalsh(_sym(G)).max().clamp_min(1e-300)
    evals, evecs = torch.linalg.eigh(_sym(M))
    null = evals < threshold * evals.max()
    U = evecs[:, null]
    return U @ U.T, int(null.sum())


def alphaedit_solve(
    K: torch.Tensor, R: torch.Tensor, P: torch.Tensor, alpha: float = 1.0
) -> torch.Tensor:
    """DeltaW float64[d_out, d_in] = R K^T P (P K K^T P + a I)^-1 (see module doc)."""
    K, R = _check(K, R)
    P = P.to(K.device, torch.float64)
    PK = P @ K
    A = _sym(PK @ PK.T)
    scale = A.diagonal().mean().clamp_min(1e-30)
    A = A + alpha * scale * torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    B = R @ PK.T
    return torch.linalg.solve(A, B.T).T


def preserved_change(delta_w: torch.Tensor, W: torch.Tensor, C: torch.Tensor) -> float:
    """sqrt(E||DeltaW k||^2 / E||W k||^2) over preserved keys (= tr(D C D^T) / tr(W C W^T)):
    the relative change of the projection's output on ordinary requests."""
    D, W64, C64 = delta_w.double(), W.double().to(delta_w.device), C.double().to(delta_w.device)
    num = torch.einsum("ij,jk,ik->", D, C64, D)
    den = torch.einsum("ij,jk,ik->", W64, C64, W64).clamp_min(1e-300)
    return float((num / den).clamp_min(0).sqrt())
