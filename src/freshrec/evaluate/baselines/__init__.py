"""Baselines that follow the `Ranker` protocol: most-popular, text-KNN, item-ID SASRec."""

from freshrec.evaluate.baselines.popularity import PopularityRanker, train_item_counts
from freshrec.evaluate.baselines.sasrec import SASRec, SASRecConfig, SASRecRanker
from freshrec.evaluate.baselines.textknn import TextKNNRanker

__all__ = [
    "PopularityRanker",
    "SASRec",
    "SASRecConfig",
    "SASRecRanker",
    "TextKNNRanker",
    "train_item_counts",
]
