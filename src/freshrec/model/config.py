"""Model hyper-parameters (`ModelConfig`) and the named recipes.

One config describes both architectures: `tiger` (T5 encoder-decoder) and `causal`
(decoder-only Llama). Fields that only one architecture reads say so.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from freshrec.errors import ConfigError

TIGER_ACTIVATIONS = ("relu", "gelu", "gated-gelu", "gated-silu", "gated-relu")
CAUSAL_ACTIVATIONS = ("silu", "gelu", "relu")


class ModelConfig(BaseModel):
    """Architecture and size of a `GenerativeRecommender`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Literal["tiger", "causal"] = "tiger"
    d_model: int = Field(64, ge=8, description="hidden size")
    d_ff: int = Field(256, ge=8, description="FFN inner size")
    num_layers: int = Field(2, ge=1, description="tiger: encoder layers; causal: layers")
    num_decoder_layers: int | None = Field(
        None, ge=1, description="tiger only: decoder layers (None = num_layers)"
    )
    num_heads: int = Field(4, ge=1)
    d_kv: int = Field(16, ge=4, description="per-head key/value size")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    attention_dropout: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="dropout on attention probabilities (None = dropout); on CPU it is about "
        "half of a T5 training step, so the CPU recipes set 0",
    )
    max_history: int = Field(20, ge=1, description="history items fed to the model")
    activation: str = Field(
        "relu",
        description="tiger: T5 feed_forward_proj (relu | gated-gelu | ...); "
        "causal: the gated MLP's activation (silu | gelu | relu)",
    )
    relative_attention_num_buckets: int = Field(32, ge=2, description="tiger only")
    relative_attention_max_distance: int = Field(128, ge=2, description="tiger only")
    rope_theta: float = Field(10000.0, gt=0, description="causal only")
    window_min_context: int | None = Field(
        None,
        ge=0,
        description="causal only: min context items of a target outside the first window "
        "(None = max_history // 2); sets the window stride, see batches.causal_windows",
    )

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.arch == "tiger" and self.activation not in TIGER_ACTIVATIONS:
            raise ValueError(f"tiger activation must be one of {TIGER_ACTIVATIONS}")
        if self.arch == "causal":
            if self.activation not in CAUSAL_ACTIVATIONS:
                raise ValueError(f"causal activation must be one of {CAUSAL_ACTIVATIONS}")
            if self.d_model % self.num_heads:
                raise ValueError("causal: d_model must be a multiple of num_heads")
            if self.window_min_context is not None and self.window_min_context > self.max_history:
                raise ValueError("window_min_context must be <= max_history")
        return self

    @property
    def example_layout(self) -> Literal["targets", "windows"]:
        """Training examples of the arch (`model.batches`): "targets" = one row per target
        (tiger, `tiger_examples`), "windows" = sequence windows training every target of a
        window in one forward (causal, `causal_windows`)."""
        return "targets" if self.arch == "tiger" else "windows"

    @property
    def attn_dropout(self) -> float:
        return self.dropout if self.attention_dropout is None else self.attention_dropout

    @property
    def decoder_layers(self) -> int:
        return self.num_decoder_layers or self.num_layers

    @property
    def min_context(self) -> int:
        """Causal training: min context items of targets outside a user's first window."""
        if self.window_min_context is not None:
            return self.window_min_context
        return self.max_history // 2

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Validate a dict (e.g. a recipe file); raises ConfigError with pydantic's message."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"invalid model config: {exc}") from None


def tiger_paper() -> ModelConfig:
    """TIGER as published (Rajput et al., "Recommender Systems with Generative Retrieval",
    NeurIPS 2023, arXiv:2305.05065, Sec. 4 "Implementation details"): 4 encoder + 4 decoder
    layers, 6 self-attention heads of size 64, ReLU, MLP size 1024, input (model) size 128,
    dropout 0.1, user histories truncated to the last 20 items. The paper reports ~13M
    parameters; this T5 build has ~4.5M non-embedding parameters (4.8M with a 3x256 codebook
    + 2000 user-bucket vocabulary), so the counts are not directly comparable (T5X vs HF T5
    layout, vocabulary); the hyper-parameters are the paper's."""
    return ModelConfig(
        arch="tiger",
        d_model=128,
        d_ff=1024,
        num_layers=4,
        num_decoder_layers=4,
        num_heads=6,
        d_kv=64,
        dropout=0.1,
        max_history=20,
        activation="relu",
    )


def tiger_cpu() -> ModelConfig:
    """CPU default for ml-latest-small (~72k training targets, 610 users) on 2 cores.

    Sized from step times of T5 at batch 256 x 82 encoder tokens (fwd + bwd + AdamW, 2 cores):
    d_model 64 / d_ff 256 / 3+3 layers ~1.15 s/step, d_model 128 / d_ff 512 / 4+4 ~2.8 s/step.
    2+2 layers of d_model 64 (4 heads x 16, ReLU as in TIGER), and no dropout on attention
    probabilities, which is about half of a CPU step (residual/FFN dropout stays 0.1).
    Measured on ml-latest-small (batch 256, 1 thread, on a shared and busy 2-core machine):
    1.0-1.2 s/step, 280 steps per epoch.
    """
    return ModelConfig(
        arch="tiger",
        d_model=64,
        d_ff=256,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        d_kv=16,
        dropout=0.1,
        attention_dropout=0.0,
        max_history=20,
        activation="relu",
    )


def causal_cpu() -> ModelConfig:
    """CPU default decoder-only model, comparable in size to `tiger_cpu` (~0.21M vs ~0.23M
    non-embedding parameters): 4 Llama layers of d_model 64, gated SiLU MLP of 192, 4 heads x
    16, no attention-probability dropout. One row trains every target of a window (~11 items),
    so an ml-latest-small epoch is ~6.3k windows = ~25 steps of 256 (~1/11 of tiger's tokens).
    Measured (batch 256 windows x 85 tokens, 1 thread, shared busy 2-core machine):
    1.0-1.4 s/step.
    """
    return ModelConfig(
        arch="causal",
        d_model=64,
        d_ff=192,
        num_layers=4,
        num_heads=4,
        d_kv=16,
        dropout=0.1,
        attention_dropout=0.0,
        max_history=20,
        activation="silu",
    )


RECIPES = {"tiger_paper": tiger_paper, "tiger_cpu": tiger_cpu, "causal_cpu": causal_cpu}


def recipe(name: str) -> ModelConfig:
    """A named recipe: one of RECIPES."""
    try:
        return RECIPES[name]()
    except KeyError:
        raise ConfigError(f"unknown model recipe {name!r}; known: {sorted(RECIPES)}") from None
