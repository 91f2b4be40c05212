"""Speculative inductive recommendation (SpecGR / SpecGR++, docs/SPEC.md).

A drafter that can score any item (text retrieval, or the GR model's own encoder with SID-based
item embeddings) proposes candidates; the GR model verifies them by their SID likelihood,
guided by its constrained beam search, which also fills the remaining slots.

```python
from freshrec.evaluate.spec_tuning import tune_gamma
from freshrec.recommend.spec import SpecRanker, TextDrafter
ranker = SpecRanker(model, TextDrafter(emb), table)
tune_gamma(ranker, split, "valid")          # sets ranker.gamma
items = ranker.rank(split, split.test)      # int64[n, 50], history excluded
```

`Session.recommend(..., mode="spec")` is the recommend path over it.
"""

from freshrec.recommend.spec.drafters import Drafter, TextDrafter
from freshrec.recommend.spec.ranker import (
    DEFAULT_GAMMA,
    SpecOutput,
    SpecRanker,
    SpecTrace,
    finalize,
    spec_stats,
)
from freshrec.recommend.spec.selfdraft import (
    SelfDrafter,
    SelfDraftHeads,
    item_features,
    train_self_drafter,
)
from freshrec.recommend.spec.verify import (
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
    "BeamStepper",
    "Drafter",
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
    "prefix_mask",
    "score_lengths",
    "spec_stats",
    "train_self_drafter",
    "verify_scores",
    "verify_token_log_probs",
]
