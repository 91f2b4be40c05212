"""`linear`: weighted average of the models' weights (model soup)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import Tensor

from freshrec.merge import kernels
from freshrec.merge.methods.base import MERGE_METHODS, MergeArgs, MergeMethod

if TYPE_CHECKING:
    from freshrec.merge.recipe import MergeRecipe

LINEAR_SUM_TOLERANCE = 1e-3


class Linear(MergeMethod):
    """`sum_i w_i theta_i`, divided by `sum_i w_i` when `normalize` (the default). A base
    model is optional (checked for compatibility, source of non-float tensors)."""

    needs_base = False
    default_normalize = True

    def check(self, recipe: MergeRecipe) -> None:
        """Unnormalised weights must sum to 1: otherwise the average is scaled by the sum."""
        if recipe.normalize:
            return
        total = sum(recipe.weights())
        if abs(total - 1.0) > LINEAR_SUM_TOLERANCE:
            raise ValueError(
                f"models: weights sum to {total:g} with normalize: false for linear, so the "
                f"merged weights would be scaled by {total:g}; set normalize: true or make "
                "the weights sum to 1"
            )

    def merge(self, base: Tensor | None, tensors: Sequence[Tensor], args: MergeArgs) -> Tensor:
        return kernels.linear(tensors, args.weights, normalize=args.normalize)


MERGE_METHODS.add("linear", Linear())
