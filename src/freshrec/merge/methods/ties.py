"""TIES and DARE: task arithmetic on sparsified task vectors, as settings of one class.

- `sparsify="magnitude"` (TIES): keep the top-`density_i` entries of each tau_i by magnitude;
- `sparsify="random"` (DARE): keep each entry with probability `density_i`, survivors divided
  by `density_i` when the recipe's `rescale` is on (masks seeded by `MergeArgs.generator`);
- `sign_election=True`: elect a sign per entry from the summed weighted mass and combine only
  the agreeing entries (disjoint mean when `normalize`, else disjoint sum); False: weighted sum.

Registered: `ties` (magnitude + election), `dare_linear` (random), `dare_ties` (random +
election), with mergekit's `normalize` defaults.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from freshrec.merge import kernels
from freshrec.merge.methods.base import MERGE_METHODS, MergeArgs
from freshrec.merge.methods.task_arithmetic import TaskArithmetic


class Ties(TaskArithmetic):
    """Sparsified task arithmetic (TIES / DARE); see the module docstring for the settings."""

    uses_density = True

    def __init__(
        self,
        sparsify: Literal["magnitude", "random"],
        sign_election: bool,
        default_normalize: bool,
    ) -> None:
        if sparsify not in ("magnitude", "random"):
            raise ValueError(f"sparsify must be 'magnitude' or 'random', got {sparsify!r}")
        self.sparsify = sparsify
        self.sign_election = sign_election
        self.default_normalize = default_normalize

    def sparsify_(self, tau: Tensor, args: MergeArgs) -> Tensor:
        if self.sparsify == "magnitude":
            return kernels.trim_(tau, args.densities)
        return kernels.dare_drop_(tau, args.densities, args.generator(), args.rescale)

    def combine(self, tau: Tensor, w: Tensor, normalize: bool) -> Tensor:
        if self.sign_election:
            return kernels.disjoint_merge_(tau, w, normalize)
        return kernels.weighted_sum_(tau, w, normalize)

    def __repr__(self) -> str:
        return (
            f"Ties(sparsify={self.sparsify!r}, sign_election={self.sign_election}, "
            f"default_normalize={self.default_normalize})"
        )


MERGE_METHODS.add("ties", Ties("magnitude", sign_election=True, default_normalize=True))
MERGE_METHODS.add("dare_linear", Ties("random", sign_election=False, default_normalize=False))
MERGE_METHODS.add("dare_ties", Ties("random", sign_election=True, default_normalize=False))
