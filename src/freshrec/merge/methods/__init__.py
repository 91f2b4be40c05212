"""Merge methods, one small class each, registered by name in `MERGE_METHODS` (as mergekit).

| name | class | needs base | density |
|---|---|---|---|
| `linear` | `Linear` | no | no |
| `task_arithmetic` | `TaskArithmetic` | yes | no |
| `ties` / `dare_linear` / `dare_ties` | `Ties(sparsify, sign_election)` | yes | yes |

Add a method: a new module here with a `MergeMethod` subclass and
`MERGE_METHODS.add("name", MyMethod())`, plus its import line below; recipes then accept
`merge_method: name`.
"""

from freshrec.merge.methods import linear, task_arithmetic, ties  # noqa: F401 (registers)
from freshrec.merge.methods.base import MERGE_METHODS, MergeArgs, MergeMethod
from freshrec.merge.methods.linear import Linear
from freshrec.merge.methods.task_arithmetic import TaskArithmetic
from freshrec.merge.methods.ties import Ties

__all__ = ["MERGE_METHODS", "Linear", "MergeArgs", "MergeMethod", "TaskArithmetic", "Ties"]
