"""Fresh items at inference: the GR beam fused with a content-based new-item channel under a
per-request freshness gate (docs/FRESH.md). Calibrated on validation by
`freshrec.evaluate.fresh_fit.fit_fresh`; parameters in the checkpoint's `fresh.json`."""

from freshrec.recommend.fresh.audience import AudienceParams
from freshrec.recommend.fresh.content import ContentParams, ContentScorer
from freshrec.recommend.fresh.fusion import Fused, mix, quota, warm_expert
from freshrec.recommend.fresh.gate import (
    DEFAULT_FEATURES,
    FEATURES,
    LogisticGate,
    gate_features,
)
from freshrec.recommend.fresh.params import FreshParams, GateParams
from freshrec.recommend.fresh.ranker import Channels, FreshRanker
from freshrec.recommend.fresh.scope import ScopeParams, scope_mix

__all__ = [
    "DEFAULT_FEATURES",
    "FEATURES",
    "AudienceParams",
    "Channels",
    "ContentParams",
    "ContentScorer",
    "FreshParams",
    "FreshRanker",
    "Fused",
    "GateParams",
    "LogisticGate",
    "ScopeParams",
    "gate_features",
    "mix",
    "quota",
    "scope_mix",
    "warm_expert",
]
