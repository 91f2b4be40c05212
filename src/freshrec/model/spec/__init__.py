"""Speculative inductive recommendation (SpecGR / SpecGR++, docs/SPEC.md).

A drafter that can score any item (text retrieval, or the GR model's own encoder with SID-based
item embeddings) proposes candidates; the GR model verifies them by their SID likelihood,
guided by its constrained beam search, which also fills the remaining slots.

```python
from freshrec.model.spec import SpecRanker, TextDrafter, tune_gamma
ranker = SpecRanker(model, TextDrafter(emb), table)
tune_gamma(ranker, split, "valid")          # sets ranker.gamma
items = ranker.rank(split, split.test)      # int64[n, 50], history excluded
```
"""

from freshrec.model.spec.bench import spec_benchmark_rows
from freshrec.model.spec.drafters import Drafter, TextDrafter
from freshrec.model.spec.ranker import (
    DEFAULT_GAMMA,
    DEFAULT_GRID,
    GammaTuning,
    SpecOutput,
    SpecRanker,
    SpecTrace,
    finalize,
    metric_value,
    spec_stats,
    tune_gamma,
)
from freshrec.model.spec.selfdraft import (
    SelfDrafter,
    SelfDraftHeads,
    item_features,
    train_self_drafter,
)
from freshrec.model.spec.verify import (
    BeamStepper,
    item_prefix_nodes,
    mean_log_probs,
    prefix_mask,
    score_lengths,
    verify_scores,
    verify_token_log_probs,
)

__all__ = [
    "DEFAULT_GAMMA",
    "DEFAULT_GRID",
    "BeamStepper",
    "Drafter",
    "GammaTuning",
    "SelfDraftHeads",
    "SelfDrafter",
    "SpecOutput",
    "SpecRanker",
    "SpecTrace",
    "TextDrafter",
    "finalize",
    "item_features",
    "item_prefix_nodes",
    "mean_log_probs",
    "metric_value",
    "prefix_mask",
    "score_lengths",
    "spec_benchmark_rows",
    "spec_stats",
    "train_self_drafter",
    "tune_gamma",
    "verify_scores",
    "verify_token_log_probs",
]
