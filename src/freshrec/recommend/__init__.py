"""Recommending: trie-constrained beam search (and its exhaustive reference), the catalog a
recommender decodes over, the GR ranker, speculative recommendation, and `Session`, the one
object every caller (CLI, evaluation, benchmarks, service) recommends through."""

from freshrec.recommend.beam_search import BeamResult, beam_search
from freshrec.recommend.catalog import SCOPES, Catalog, Scope
from freshrec.recommend.gr import GRRanker
from freshrec.recommend.modes import MODES, ModeRanker, register_mode
from freshrec.recommend.session import Recommendations, Session

__all__ = [
    "MODES",
    "SCOPES",
    "BeamResult",
    "Catalog",
    "GRRanker",
    "ModeRanker",
    "Recommendations",
    "Scope",
    "Session",
    "beam_search",
    "register_mode",
]
