"""MMGRid-style checkpoint merging: recipes, merge methods registered by name in
`MERGE_METHODS` (linear, task arithmetic, TIES/DARE), base replacement, weighted contextual
merging, a streaming merge of checkpoint folders, and the checkpoint grid (time phase x
domain, trained incrementally with one shared tokenizer).

```python
from freshrec.merge import load_recipe, merge_checkpoints
report = merge_checkpoints(load_recipe("examples/merge/ties.yaml"), "ckpt/merged")

from freshrec.config import load_recipe as run_recipe
from freshrec.merge import GridConfig, build_grid
grid = build_grid(run_recipe("cpu", ["model.recipe=causal_cpu"]), "runs/grid", GridConfig())
grid.path("phase2-action")   # an ordinary checkpoint folder
```
"""

from freshrec.merge.contextual import (
    choose_weight,
    contextual_merge,
    contextual_recipe,
    first_seen_times,
    recency_share,
)
from freshrec.merge.grid import (
    ALL,
    Grid,
    GridConfig,
    GridEntry,
    assign_domains,
    auto_domains,
    build_grid,
    context_split,
    item_labels,
    label_counts,
    load_grid,
    phase_bounds,
    window_examples,
    window_positions,
)
from freshrec.merge.kernels import dare, linear, task_arithmetic, task_vectors, ties
from freshrec.merge.methods import MERGE_METHODS, MergeArgs, MergeMethod
from freshrec.merge.recipe import MergeRecipe, load_recipe, parse_recipe
from freshrec.merge.streaming import MergeReport, merge_checkpoints, merge_in_memory, merge_tensor

__all__ = [
    "ALL",
    "MERGE_METHODS",
    "Grid",
    "GridConfig",
    "GridEntry",
    "MergeArgs",
    "MergeMethod",
    "MergeRecipe",
    "MergeReport",
    "assign_domains",
    "auto_domains",
    "build_grid",
    "choose_weight",
    "context_split",
    "contextual_merge",
    "contextual_recipe",
    "dare",
    "first_seen_times",
    "item_labels",
    "label_counts",
    "linear",
    "load_grid",
    "load_recipe",
    "merge_checkpoints",
    "merge_in_memory",
    "merge_tensor",
    "parse_recipe",
    "phase_bounds",
    "recency_share",
    "task_arithmetic",
    "task_vectors",
    "ties",
    "window_examples",
    "window_positions",
]
