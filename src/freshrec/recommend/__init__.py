"""Recommending: trie-constrained beam search (and its exhaustive reference), the catalog a
recommender decodes over, the GR ranker, speculative recommendation, and `Session`, the one
object every caller (CLI, evaluation, benchmarks, service) recommends through."""

from freshrec.recommend.beam_search import BeamResult, beam_search
from freshrec.recommend.catalog import SCOPES, Catalog, Scope
from freshrec.recommend.gr import GRRanker

__all__ = ["SCOPES", "BeamResult", "Catalog", "GRRanker", "Scope", "beam_search"]
