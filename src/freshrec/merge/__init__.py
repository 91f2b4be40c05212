"""MMGRid-style checkpoint merging: recipes, linear/TA/TIES/DARE, base replacement,
weighted contextual merging, and a streaming merge of checkpoint folders.

```python
from freshrec.merge import load_recipe, merge_checkpoints
report = merge_checkpoints(load_recipe("examples/merge/ties.yaml"), "ckpt/merged")
```
"""

from freshrec.merge.contextual import (
    choose_weight,
    contextual_merge,
    contextual_recipe,
    first_seen_times,
    recency_share,
)
from freshrec.merge.methods import dare, linear, task_arithmetic, task_vectors, ties
from freshrec.merge.recipe import METHODS, MergeRecipe, load_recipe, parse_recipe
from freshrec.merge.streaming import MergeReport, merge_checkpoints, merge_in_memory, merge_tensor

__all__ = [
    "METHODS",
    "MergeRecipe",
    "MergeReport",
    "choose_weight",
    "contextual_merge",
    "contextual_recipe",
    "dare",
    "first_seen_times",
    "linear",
    "load_recipe",
    "merge_checkpoints",
    "merge_in_memory",
    "merge_tensor",
    "parse_recipe",
    "recency_share",
    "task_arithmetic",
    "task_vectors",
    "ties",
]
