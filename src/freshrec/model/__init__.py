"""Generative recommenders over semantic IDs: tiger (T5) and causal (Llama), the per-step
decode context, edit hooks and packs applied to a live model, checkpoints and training batches.
Decoding (beam search, rankers) lives in `freshrec.recommend`."""

from freshrec.model.base import DecodeState, GenerativeRecommender, build_model
from freshrec.model.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from freshrec.model.config import ModelConfig, causal_cpu, recipe, tiger_cpu, tiger_paper
from freshrec.model.decode_context import NO_CONTEXT, DecodeContext

__all__ = [
    "NO_CONTEXT",
    "DecodeContext",
    "DecodeState",
    "GenerativeRecommender",
    "ModelConfig",
    "build_model",
    "causal_cpu",
    "load_checkpoint",
    "read_checkpoint_config",
    "recipe",
    "save_checkpoint",
    "tiger_cpu",
    "tiger_paper",
]
