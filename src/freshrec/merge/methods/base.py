"""`MergeMethod`: the interface of a merge method, and the `MERGE_METHODS` registry.

A method merges one tensor key at a time: `merge(base, tensors, args)` gets the key's tensor
from each of the recipe's N models (all of shape `S`), the base model's (or None) and the
recipe's resolved settings (`MergeArgs`), and returns the merged float tensor of shape `S`
(the caller casts it to the output dtype). Methods are registered as configured instances, as
in mergekit, so one class can back several names (`ties`, `dare_linear`, `dare_ties`).
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from freshrec.registry import Registry

if TYPE_CHECKING:
    from freshrec.merge.recipe import MergeRecipe

__all__ = ["MERGE_METHODS", "MergeArgs", "MergeMethod"]


@dataclass(frozen=True)
class MergeArgs:
    """A recipe's settings for merging tensor `key`: `weights`/`densities` one per model,
    `lam` the task-vector scale, `normalize` (already defaulted by the method), `rescale`
    (DARE) and `seed` (random masks; see `generator`)."""

    key: str
    weights: list[float]
    densities: list[float]
    lam: float = 1.0
    normalize: bool = False
    rescale: bool = True
    seed: int = 0

    def generator(self) -> torch.Generator:
        """A generator seeded with `seed + crc32(key)`: masks do not depend on key order."""
        seed = (self.seed + zlib.crc32(self.key.encode("utf-8"))) % (2**63)
        return torch.Generator().manual_seed(seed)


class MergeMethod(ABC):
    """A merge method. Class attributes say what a recipe using it must provide:

    - `needs_base`: task vectors are taken against `base_model` (required; model entries equal
      to the base are dropped);
    - `uses_density`: per-model `density` applies (other methods refuse a density != 1);
    - `default_normalize`: `normalize` when the recipe leaves it unset (mergekit's defaults).
    """

    needs_base: ClassVar[bool] = True
    uses_density: ClassVar[bool] = False
    default_normalize: bool = False

    def check(self, recipe: MergeRecipe) -> None:
        """Method-specific recipe rules; raise ValueError('field: problem') on a violation."""
        return None

    @abstractmethod
    def merge(self, base: Tensor | None, tensors: Sequence[Tensor], args: MergeArgs) -> Tensor:
        """Merged float tensor of shape `S` from `tensors[i]` (model i) and `base` (shape `S`,
        None only when `needs_base` is False and the recipe has no base)."""


MERGE_METHODS: Registry[MergeMethod] = Registry("merge method")
