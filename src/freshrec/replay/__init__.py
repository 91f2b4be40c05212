"""Deployment replay (docs/REPLAY.md): walk the validation and test periods step by step,
scoring each step's requests with the deployed model and then updating it with an update
policy (static, edit, finetune, merge, retrain, or a combination such as "merge+edit"),
recording quality and the CPU-seconds every update costs.

```python
ctx = ReplayContext(split, emb, tokenizer, warm_table, checkpoint, train_cfg, fresh, work, seen)
out = replay(ctx, make_policy("merge+edit"), ReplayConfig(step_days=7, max_steps=6))
out["parts"]["test"]["summary"]["mean_recall20"]
```
"""

from freshrec.replay.cost import Cost, CostMeter
from freshrec.replay.policies import (
    POLICIES,
    Combined,
    NoSettings,
    UpdatePolicy,
    make_policy,
    register_policy,
)
from freshrec.replay.runner import ReplayConfig, replay, replay_part, summarise
from freshrec.replay.state import ReplayContext, ReplayState

__all__ = [
    "POLICIES",
    "Combined",
    "Cost",
    "CostMeter",
    "NoSettings",
    "ReplayConfig",
    "ReplayContext",
    "ReplayState",
    "UpdatePolicy",
    "make_policy",
    "register_policy",
    "replay",
    "replay_part",
    "summarise",
]
