"""`static`: the trained model as deployed (no weight updates, no edits); new items reach the
lists only through the fused ranker's new-item channel as they are listed."""

from __future__ import annotations

from typing import Any

from freshrec.replay.policies.base import NoSettings, UpdatePolicy, register_policy
from freshrec.replay.state import ReplayContext, ReplayState


@register_policy("static", settings=NoSettings)
class Static(UpdatePolicy):
    def update(self, state: ReplayState, ctx: ReplayContext, t0: int, t1: int) -> dict[str, Any]:
        return {}
