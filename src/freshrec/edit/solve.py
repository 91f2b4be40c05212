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

AlphaEdit (`null_space_basis` + `alphaedit_solve`): restrict DeltaW to the (approximate)
null space of the preserved keys. With M = C / lmax(C) + G / lmax(G), G = sum of K_prev K_prev^T
of earlier packs' keys at this site (each scaled to top eigenvalue 1, so neither dominates by
scale and the threshold is relative), P projects onto the eigenvectors of M with eigenvalue
< `threshold` (adding G can only shrink that null space), and

    DeltaW = R K^T P (P K K^T P + a I)^-1,   a = alpha * mean(diag(U^T K K^T U)),

the minimiser of ||DeltaW K - R||^2 + a ||DeltaW||^2 over DeltaW = DeltaW P (equal to the
AlphaEdit form R K^T P (K K^T P + a I)^-1). It is solved in the null-space basis U (P = U U^T):
Z = U^T K, DeltaW = R Z^T (Z Z^T + a I)^-1 U^T -- a smaller symmetric system whose result lies
in range(P) exactly, where the d-dimensional form leaks round-off through (I - P) / a. Since
DeltaW = DeltaW P, every key k moves the output by ||DeltaW k|| = ||DeltaW P k|| <=
||DeltaW||_2 ||P k||, and over preserved keys E||DeltaW k||^2 <= ||DeltaW||_2^2 tr(P C) with
tr(P C) <= lmax(C) tr(P M) < lmax(C) * d_null * threshold   (C / lmax(C) <= M): they move at most
by the little energy they have in the discarded directions (exactly 0 when the preserved keys
span a subspace, e.g. fewer keys than dimensions). Likewise every row w of DeltaW has
w^T G w < threshold * lmax(G) ||w||^2 for the earlier packs' keys.
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


def null_space_basis(
    C: torch.Tensor, prev_gram: torch.Tensor | None = None, threshold: float = 1e-2
) -> torch.Tensor:
    """U float64[d, d_null]: orthonormal eigenvectors of M = C / lmax(C) (+ G / lmax(G)) with
    eigenvalue < threshold; P = U U^T is the null-space projector."""
    C = C.double()
    M = C / torch.linalg.eigvalsh(_sym(C)).max().clamp_min(1e-300)
    if prev_gram is not None and prev_gram.abs().sum() > 0:
        G = prev_gram.to(M.device, torch.float64)
        M = M + G / torch.linalg.eigvalsh(_sym(G)).max().clamp_min(1e-300)
    evals, evecs = torch.linalg.eigh(_sym(M))
    return evecs[:, evals < threshold]


def alphaedit_solve(
    K: torch.Tensor, R: torch.Tensor, U: torch.Tensor, alpha: float = 1.0
) -> torch.Tensor:
    """DeltaW float64[d_out, d_in] = R K^T P (P K K^T P + a I)^-1 with P = U U^T (module doc),
    computed in the null-space basis: Z = U^T K, DeltaW = R Z^T (Z Z^T + a I)^-1 U^T, so
    DeltaW = DeltaW P holds to machine precision."""
    K, R = _check(K, R)
    U = U.to(K.device, torch.float64)
    if U.shape[1] == 0:
        return torch.zeros(R.shape[0], K.shape[0], dtype=torch.float64, device=K.device)
    Z = U.T @ K  # [d_null, n]
    A = _sym(Z @ Z.T)
    scale = A.diagonal().mean().clamp_min(1e-30)
    A = A + alpha * scale * torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    return torch.linalg.solve(A, (R @ Z.T).T).T @ U.T


def preserved_change(delta_w: torch.Tensor, W: torch.Tensor, C: torch.Tensor) -> float:
    """sqrt(E||DeltaW k||^2 / E||W k||^2) over preserved keys (= tr(D C D^T) / tr(W C W^T)):
    the relative change of the projection's output on ordinary requests."""
    D, W64, C64 = delta_w.double(), W.double().to(delta_w.device), C.double().to(delta_w.device)
    num = torch.einsum("ij,jk,ik->", D, C64, D)
    den = torch.einsum("ij,jk,ik->", W64, C64, W64).clamp_min(1e-300)
    return float((num / den).clamp_min(0).sqrt())
