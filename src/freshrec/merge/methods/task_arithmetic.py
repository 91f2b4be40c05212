"""`task_arithmetic`: `base + lam * sum_i w_i tau_i` with task vectors `tau_i = theta_i - base`.

`TaskArithmetic` is also the skeleton of the sparse methods (`ties.py`): task vectors ->
`sparsify_` (here: nothing) -> `combine` (here: weighted sum) -> `base + lam * delta`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from freshrec.merge import kernels
from freshrec.merge.methods.base import MERGE_METHODS, MergeArgs, MergeMethod


class TaskArithmetic(MergeMethod):
    """Task arithmetic; `normalize` divides the weighted sum by `sum_i w_i` (default off)."""

    needs_base = True
    default_normalize = False

    def sparsify_(self, tau: Tensor, args: MergeArgs) -> Tensor:
        """Drop entries of the task vectors `tau: [N, *S]` in place (here: keep all)."""
        return tau

    def combine(self, tau: Tensor, w: Tensor, normalize: bool) -> Tensor:
        """Merged task vector `[*S]` from `tau: [N, *S]` and weights `w: [N, 1, ...]`."""
        return kernels.weighted_sum_(tau, w, normalize)

    def merge(self, base: Tensor | None, tensors: Sequence[Tensor], args: MergeArgs) -> Tensor:
        if base is None:
            raise ValueError("task-vector merges need a base tensor")
        tau = self.sparsify_(kernels.task_vectors(base, tensors), args)
        w = kernels.weight_column(args.weights, len(tensors), tau.dtype, tau.ndim)
        return base.to(tau.dtype) + args.lam * self.combine(tau, w, args.normalize)


MERGE_METHODS.add("task_arithmetic", TaskArithmetic())
