"""Generative recommenders over semantic IDs: tiger (T5) and causal (Llama), beam search,
exhaustive reference scoring, checkpoints and training batches."""

from freshrec.model.base import DecodeState, GenerativeRecommender, build_model
from freshrec.model.beam_search import BeamResult, beam_search
from freshrec.model.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from freshrec.model.config import ModelConfig, causal_cpu, recipe, tiger_cpu, tiger_paper

__all__ = [
    "BeamResult",
    "DecodeState",
    "GenerativeRecommender",
    "ModelConfig",
    "beam_search",
    "build_model",
    "causal_cpu",
    "load_checkpoint",
    "read_checkpoint_config",
    "recipe",
    "save_checkpoint",
    "tiger_cpu",
    "tiger_paper",
]
