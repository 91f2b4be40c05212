"""The closed forms on random data: MEMIT normal equations and least squares, interpolation as
lambda -> 0, AlphaEdit's null-space bound on preserved keys."""

from __future__ import annotations

import pytest
import torch

from freshrec.edit.solve import (
    alphaedit_solve,
    memit_solve,
    null_space_basis,
)
from freshrec.errors import ConfigError

D_IN, D_OUT = 24, 8


def _data(n: int, n_pres: int = 200, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    K = torch.randn(D_IN, n, generator=g, dtype=torch.float64)
    R = torch.randn(D_OUT, n, generator=g, dtype=torch.float64)
    X = torch.randn(n_pres, D_IN, generator=g, dtype=torch.float64)  # preserved keys (rows)
    C = X.T @ X / n_pres
    return K, R, X, C


@pytest.mark.parametrize("n", [5, 40])
def test_memit_normal_equations_and_lstsq(n: int) -> None:
    K, R, X, C = _data(n)
    lam = 7.0
    dw = memit_solve(K, R, C, lam, ridge=0.0)
    assert dw.dtype == torch.float64
    assert dw.shape == (D_OUT, D_IN)
    # normal equations: DeltaW (K K^T + lam C) = R K^T
    lhs = dw @ (K @ K.T + lam * C)
    torch.testing.assert_close(lhs, R @ K.T, rtol=1e-9, atol=1e-9)
    # the same as least squares on the stacked system [K^T; sqrt(lam/N) X] DeltaW^T = [R^T; 0]
    A = torch.cat([K.T, (lam / X.shape[0]) ** 0.5 * X])
    B = torch.cat([R.T, torch.zeros(X.shape[0], D_OUT, dtype=torch.float64)])
    ref = torch.linalg.lstsq(A, B).solution.T
    torch.testing.assert_close(dw, ref, rtol=1e-8, atol=1e-9)


def test_memit_interpolates_as_lambda_vanishes() -> None:
    K, R, _, C = _data(n=10)  # n <= d_in: the edited keys can be mapped exactly
    dw = memit_solve(K, R, C, lam=1e-9, ridge=0.0)
    torch.testing.assert_close(dw @ K, R, rtol=1e-6, atol=1e-6)


def test_memit_ridge_handles_rank_deficient_statistics() -> None:
    K, R, _, _ = _data(n=3)
    C = torch.zeros(D_IN, D_IN, dtype=torch.float64)  # e.g. dead units: singular K K^T + lam C
    dw = memit_solve(K, R, C, lam=10.0, ridge=1e-8)
    assert torch.isfinite(dw).all()
    torch.testing.assert_close(dw @ K, R, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="disagree"):
        memit_solve(K, R[:, :2], C, lam=1.0)


def test_alphaedit_leaves_spanned_preserved_keys_unchanged() -> None:
    """Preserved keys spanning a 10-d subspace and 6 earlier edit keys: the projector keeps
    DeltaW off both, so ||DeltaW k|| <= 1e-9 ||DeltaW||_2 ||k|| for every such key, while the new
    keys still reach their targets up to the part of them inside the protected span."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(300, 10, generator=g, dtype=torch.float64) @ torch.randn(
        10, D_IN, generator=g, dtype=torch.float64
    )
    C = X.T @ X / X.shape[0]
    K_prev = torch.randn(D_IN, 6, generator=g, dtype=torch.float64)
    K = torch.randn(D_IN, 5, generator=g, dtype=torch.float64)
    R = torch.randn(D_OUT, 5, generator=g, dtype=torch.float64)
    U = null_space_basis(C, K_prev @ K_prev.T, threshold=1e-6)
    assert U.shape == (D_IN, D_IN - 10 - 6)
    P = U @ U.T
    torch.testing.assert_close(P @ P, P, rtol=0, atol=1e-10)
    dw = alphaedit_solve(K, R, U, alpha=1e-10)
    bound = 1e-9 * torch.linalg.matrix_norm(dw, 2)
    for keys in (X.T, K_prev):
        moved = (dw @ keys).norm(dim=0)
        assert (moved <= bound * keys.norm(dim=0)).all(), moved.max()
    # the new keys' null-space parts are mapped onto the targets (alpha -> 0, 5 <= null dim)
    torch.testing.assert_close(dw @ (P @ K), R, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dw @ K, R, rtol=1e-5, atol=1e-5)  # since DeltaW = DeltaW P


def test_alphaedit_bound_on_full_rank_statistics() -> None:
    """With full-rank C the null space is approximate; the stated bound
    E||DeltaW k||^2 <= ||DeltaW||_2^2 tr(P C) <= ||DeltaW||_2^2 d_null thr lmax(C) holds."""
    K, R, X, C = _data(n=8, n_pres=500, seed=3)
    X = X * torch.logspace(0, -2, D_IN, dtype=torch.float64)  # anisotropic preserved keys
    C = X.T @ X / X.shape[0]
    thr = 0.05
    U = null_space_basis(C, None, threshold=thr)
    P, null_dim = U @ U.T, U.shape[1]
    assert 0 < null_dim < D_IN
    dw = alphaedit_solve(K, R, U, alpha=1e-3)
    torch.testing.assert_close(dw @ P, dw, rtol=1e-9, atol=1e-9)  # DeltaW lives in range(P)
    moved = ((X @ dw.T) ** 2).sum(1).mean()
    spec = torch.linalg.matrix_norm(dw, 2) ** 2
    trace_pc = torch.trace(P @ C)
    lmax_c = torch.linalg.eigvalsh(C).max()
    assert moved <= spec * trace_pc * (1 + 1e-9)
    assert trace_pc <= lmax_c * null_dim * thr + 1e-12
