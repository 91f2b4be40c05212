"""Merge kernels against hand-computed results on tiny tensors (float64 for exact numbers)."""

from __future__ import annotations

import pytest
import torch

from freshrec.merge import kernels
from freshrec.merge.kernels import dare, linear, task_arithmetic, ties, trim_topk

F64 = torch.float64


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- linear -------------------------------------------------------------------------------------


def test_linear_weighted_average_by_hand() -> None:
    a, b = t(1, 2, 3), t(3, 6, -3)
    # (1*a + 3*b) / 4 = [(1+9)/4, (2+18)/4, (3-9)/4]
    expected = t(2.5, 5.0, -1.5)
    assert torch.equal(linear([a, b], [1, 3]), expected)
    assert torch.equal(linear([a, b], [0.25, 0.75], normalize=False), expected)
    # normalize=False keeps the raw weighted sum: 1*a + 3*b
    assert torch.equal(linear([a, b], [1, 3], normalize=False), t(10, 20, -6))


def test_linear_keeps_shape_and_promotes_half_precision() -> None:
    a = torch.ones(2, 3, dtype=torch.float16)
    out = linear([a, 3 * a], [1, 1])
    assert out.shape == (2, 3)
    assert out.dtype == torch.float32  # computed in float32; the caller casts back
    assert torch.equal(out, torch.full((2, 3), 2.0))


# --- task arithmetic ----------------------------------------------------------------------------


def test_task_arithmetic_by_hand() -> None:
    base = t(1, 1, 1)
    th1, th2 = t(2, 0, 1), t(1, 3, 3)  # tau1 = [1, -1, 0], tau2 = [0, 2, 2]
    # 1*tau1 + 0.5*tau2 = [1, 0, 1]; lambda 0.5 -> [0.5, 0, 0.5]; + base
    assert torch.equal(task_arithmetic(base, [th1, th2], [1, 0.5], lam=0.5), t(1.5, 1, 1.5))
    # normalize divides the weighted sum by sum(w) = 1.5: [2/3, 0, 2/3]
    out = task_arithmetic(base, [th1, th2], [1, 0.5], lam=1.0, normalize=True)
    assert torch.allclose(out, t(1 + 2 / 3, 1, 1 + 2 / 3))


# --- TIES ---------------------------------------------------------------------------------------

BASE6 = t(0.5, 0.5, 0.5, 0.5, 0.5, 0.5)
TAU1 = t(3.0, -1.0, 0.5, 2.0, -4.0, 0.1)  # top-3 |.|: idx 4, 0, 3 -> [3, 0, 0, 2, -4, 0]
TAU2 = t(1.0, 2.0, -0.2, -3.0, -1.5, 0.3)  # top-3: idx 3, 1, 4    -> [0, 2, 0, -3, -1.5, 0]
TAU3 = t(-0.5, 0.4, 0.6, 1.5, 2.0, -0.1)  # top-3: idx 4, 3, 2    -> [0, 0, 0.6, 1.5, 2, 0]


def test_trim_keeps_top_density_fraction_per_model() -> None:
    trimmed = trim_topk(torch.stack([TAU1, TAU2, TAU3]), 0.5)
    assert torch.equal(trimmed[0], t(3, 0, 0, 2, -4, 0))
    assert torch.equal(trimmed[1], t(0, 2, 0, -3, -1.5, 0))
    assert torch.equal(trimmed[2], t(0, 0, 0.6, 1.5, 2, 0))
    # per-model densities: model 0 keeps 1 of 6 (floor(0.2*6)=1), model 1 keeps all
    trimmed = trim_topk(torch.stack([TAU1, TAU2]), [0.2, 1.0])
    assert torch.equal(trimmed[0], t(0, 0, 0, 0, -4, 0))
    assert torch.equal(trimmed[1], TAU2)


def test_ties_sign_election_drops_disagreeing_entries() -> None:
    thetas = [BASE6 + TAU1, BASE6 + TAU2, BASE6 + TAU3]
    # Trimmed sum per entry: [3, 2, 0.6, 2-3+1.5=0.5, -4-1.5+2=-3.5, 0] -> signs [+,+,+,+,-,+].
    # idx 3: elected +, tau2's -3 disagrees and is dropped -> mean(2, 1.5) = 1.75
    # idx 4: elected -, tau3's +2 disagrees and is dropped -> mean(-4, -1.5) = -2.75
    # idx 5: nothing survived trimming -> 0
    delta = t(3.0, 2.0, 0.6, 1.75, -2.75, 0.0)
    out = ties(BASE6, thetas, [1, 1, 1], density=0.5, lam=1.0)
    assert torch.allclose(out, BASE6 + delta, atol=1e-12)
    out = ties(BASE6, thetas, [1, 1, 1], density=0.5, lam=0.5)
    assert torch.allclose(out, BASE6 + 0.5 * delta, atol=1e-12)


def test_ties_weighted_disjoint_mean_and_sum() -> None:
    thetas = [BASE6 + TAU1, BASE6 + TAU2, BASE6 + TAU3]
    w = [2, 1, 1]
    # Weighted trimmed sum: idx3 = 2*2 - 3 + 1.5 = 2.5 (+), idx4 = -8 - 1.5 + 2 = -7.5 (-).
    # Disjoint mean divides by the summed weight of the agreeing models only:
    # idx0: 2*3/2 = 3; idx1: 1*2/1 = 2; idx2: 0.6; idx3: (2*2 + 1*1.5)/3; idx4: (2*-4 + -1.5)/3
    mean = t(3.0, 2.0, 0.6, 5.5 / 3, -9.5 / 3, 0.0)
    assert torch.allclose(ties(BASE6, thetas, w, density=0.5), BASE6 + mean, atol=1e-12)
    # normalize=False: disjoint *sum* of the weighted agreeing entries
    total = t(6.0, 2.0, 0.6, 5.5, -9.5, 0.0)
    out = ties(BASE6, thetas, w, density=0.5, normalize=False)
    assert torch.allclose(out, BASE6 + total, atol=1e-12)


def test_ties_zero_sum_elects_plus() -> None:
    base = t(0, 0)
    # idx0: +1 and -1 cancel -> elected + (sum >= 0), only the +1 agrees
    out = ties(base, [t(1, 2), t(-1, 2)], [1, 1], density=1.0)
    assert torch.equal(out, t(1, 2))


def test_ties_trims_over_the_whole_tensor_not_per_row() -> None:
    base = torch.zeros(2, 2, dtype=F64)
    theta = torch.tensor([[5.0, 4.0], [1.0, -3.0]], dtype=F64)
    out = ties(base, [theta], [1], density=0.5)  # keeps 2 of 4 entries: 5 and 4
    assert torch.equal(out, torch.tensor([[5.0, 4.0], [0.0, 0.0]], dtype=F64))


# --- DARE ---------------------------------------------------------------------------------------


def test_dare_survivors_rescaled_and_dropped_zero() -> None:
    base = t(1, 1, 1, 1, 1, 1, 1, 1)
    tau = t(2, -4, 6, 8, -1, 3, 5, -7)
    out = dare(base, [base + tau], [1], density=0.5, generator=gen(3))
    keep = kernels.dare_mask((1, 8), 0.5, gen(3))[0]
    # survivors: tau / density = 2 * tau; dropped: 0 (i.e. the base value)
    assert torch.equal(out, base + torch.where(keep, 2 * tau, torch.zeros_like(tau)))
    assert 0 < keep.sum() < 8
    # rescale=False keeps survivors as they are
    out = dare(base, [base + tau], [1], density=0.5, generator=gen(3), rescale=False)
    assert torch.equal(out, base + torch.where(keep, tau, torch.zeros_like(tau)))


def test_dare_drop_rate_matches_density() -> None:
    base = torch.zeros(100_000, dtype=F64)
    out = dare(base, [base + 1.0], [1], density=0.3, generator=gen(0))
    kept = (out != 0).double().mean().item()
    assert abs(kept - 0.3) < 0.01
    assert torch.all((out == 0) | torch.isclose(out, torch.tensor(1 / 0.3, dtype=F64)))


def test_dare_mean_over_seeds_approaches_task_vector() -> None:
    base = t(0.5, -0.5, 1.0, 0.0)
    tau = t(1.0, -2.0, 3.0, 0.5)
    n = 2000
    mean = sum(dare(base, [base + tau], [1], density=0.3, generator=gen(s)) for s in range(n)) / n
    # E[mask / density] = 1, so E[merged] = base + tau. Per draw std = |tau| sqrt(1/0.3 - 1)
    # ~ 1.53 |tau|; over 2000 seeds ~ 0.034 |tau|: 0.15 |tau| is > 4 sigma.
    assert torch.all((mean - (base + tau)).abs() <= 0.15 * tau.abs())


def test_dare_linear_and_ties_by_hand_at_density_one() -> None:
    base = t(0, 0)
    th1, th2 = t(1, -2), t(3, 1)
    # density 1 drops nothing: dare_linear == task arithmetic = 0.5*[1,-2] + 0.5*[3,1]
    assert torch.equal(dare(base, [th1, th2], [0.5, 0.5], 1.0, generator=gen(0)), t(2, -0.5))
    # dare_ties: sum [4, -1] -> signs [+, -]; idx0 mean(1,3)=2, idx1 only -2 agrees
    out = dare(base, [th1, th2], [1, 1], 1.0, generator=gen(0), sign_election=True, normalize=True)
    assert torch.equal(out, t(2, -2))


def test_dare_is_seeded() -> None:
    base = torch.zeros(64, dtype=F64)
    th = [torch.randn(64, dtype=F64), torch.randn(64, dtype=F64)]
    a = dare(base, th, [1, 1], 0.5, generator=gen(7), sign_election=True)
    b = dare(base, th, [1, 1], 0.5, generator=gen(7), sign_election=True)
    c = dare(base, th, [1, 1], 0.5, generator=gen(8), sign_election=True)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# --- properties ---------------------------------------------------------------------------------

METHOD_CALLS = {
    # What holds: merging N copies of theta gives theta back (up to float rounding) when the
    # task-vector sum is not rescaled: linear with normalize; TA / dare_linear with weights
    # summing to 1 and lambda 1; ties / dare_ties at density 1 with lambda 1 (disjoint mean,
    # any positive weights). DARE at density < 1 only returns theta in expectation.
    "linear": lambda base, ths, w: linear(ths, w, normalize=True),
    "task_arithmetic": lambda base, ths, w: task_arithmetic(base, ths, w, lam=1.0),
    "ties": lambda base, ths, w: ties(base, ths, w, density=1.0, lam=1.0),
    "dare_linear": lambda base, ths, w: dare(base, ths, w, 1.0, 1.0, gen(0)),
    "dare_ties": lambda base, ths, w: dare(
        base, ths, w, 1.0, 1.0, gen(0), sign_election=True, normalize=True
    ),
}


@pytest.mark.parametrize("method", sorted(METHOD_CALLS))
@pytest.mark.parametrize("n", [1, 2, 5])
def test_n_copies_of_one_model_return_it(method: str, n: int) -> None:
    torch.manual_seed(n)
    theta = torch.randn(4, 6, dtype=F64)
    base = torch.randn(4, 6, dtype=F64)  # a different model
    w = [1.0 / n] * n
    out = METHOD_CALLS[method](base, [theta] * n, w)
    assert torch.allclose(out, theta, atol=1e-12, rtol=0)


def test_ties_n_copies_unnormalised_weights() -> None:
    theta, base = torch.randn(10, dtype=F64), torch.randn(10, dtype=F64)
    out = ties(base, [theta] * 3, [0.2, 5.0, 1.0], density=1.0)
    assert torch.allclose(out, theta, atol=1e-12, rtol=0)


def test_task_vectors_against_replaced_base() -> None:
    # Base replacement: tau_i taken against B (e.g. the pretrain checkpoint) is theta_i - B.
    A, B = t(0, 0, 0), t(1, 2, 3)
    th1, th2 = t(2, 2, 2), t(4, 0, 1)
    assert torch.equal(kernels.task_vectors(B, [th1, th2]), torch.stack([th1 - B, th2 - B]))
    # For TA the result moves with the base by (1 - lam * sum(w)) * (B - A).
    w, lam = [0.5, 1.0], 0.8
    diff = task_arithmetic(B, [th1, th2], w, lam) - task_arithmetic(A, [th1, th2], w, lam)
    assert torch.allclose(diff, (1 - lam * sum(w)) * (B - A))


def test_mismatched_inputs_raise() -> None:
    with pytest.raises(ValueError, match="shape"):
        linear([torch.zeros(2), torch.zeros(3)], [1, 1])
    with pytest.raises(ValueError, match="2 weights for 3 tensors"):
        linear([torch.zeros(2)] * 3, [1, 1])
    with pytest.raises(TypeError, match="floating-point"):
        linear([torch.zeros(2, dtype=torch.int64)], [1])


def test_trim_matches_stable_sort_definition_with_ties() -> None:
    # Many equal magnitudes: the kept set is the first k of a stable descending sort by |tau|.
    g = gen(0)
    for _ in range(100):
        n, numel = (
            int(torch.randint(1, 5, (), generator=g)),
            int(torch.randint(1, 60, (), generator=g)),
        )
        tau = torch.randint(-3, 4, (n, numel), generator=g).to(F64)
        dens = torch.rand(n, generator=g).clamp(0.01, 1.0).tolist()
        order = torch.sort(tau.abs(), dim=1, descending=True, stable=True).indices
        k = torch.tensor([numel if d >= 1 else max(1, int(d * numel + 1e-9)) for d in dens])
        ranks_kept = torch.arange(numel).unsqueeze(0) < k.unsqueeze(1)
        keep = torch.zeros(n, numel, dtype=torch.bool).scatter_(1, order, ranks_kept)
        assert torch.equal(trim_topk(tau, dens), torch.where(keep, tau, 0.0))


def test_trim_count_is_robust_to_float_rounding() -> None:
    tau = torch.arange(1, 101, dtype=F64).unsqueeze(0)  # 0.29 * 100 = 28.999999999999996
    assert int((trim_topk(tau, 0.29) != 0).sum()) == 29


@pytest.mark.parametrize("method", sorted(METHOD_CALLS))
def test_inputs_are_not_modified(method: str) -> None:
    torch.manual_seed(0)
    ths = [torch.randn(3, 5) for _ in range(3)]
    base = torch.randn(3, 5)
    before = [t.clone() for t in [*ths, base]]
    METHOD_CALLS[method](base, ths, [0.2, 0.3, 0.5])
    trim_topk(torch.stack(ths), 0.5)
    assert all(torch.equal(a, b) for a, b in zip([*ths, base], before, strict=True))
