"""Item texts -> MiniLM embeddings (384-d, L2-normalised), cached by content hash."""

from freshrec.embed.encoder import (
    EMBED_DIM,
    MODEL_NAME,
    TextEmbedder,
    cache_key,
    cache_path,
    embed_texts,
    validate_embeddings,
)

__all__ = [
    "EMBED_DIM",
    "MODEL_NAME",
    "TextEmbedder",
    "cache_key",
    "cache_path",
    "embed_texts",
    "validate_embeddings",
]
