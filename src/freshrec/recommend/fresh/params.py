"""The fused fresh-item ranker's calibrated parameters, saved as `fresh.json` in the
checkpoint folder (fitted on validation requests by `freshrec.evaluate.fresh_fit`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from freshrec.atomic import write_text
from freshrec.errors import CheckpointError, validation_problems
from freshrec.recommend.fresh.audience import AudienceParams
from freshrec.recommend.fresh.content import ContentParams
from freshrec.recommend.fresh.gate import DEFAULT_FEATURES, LogisticGate

FILE = "fresh.json"
FORMAT = "freshrec-fresh/1"


class GateParams(BaseModel):
    """A `LogisticGate` as JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: list[str] = list(DEFAULT_FEATURES)
    mean: list[float] = [0.0] * len(DEFAULT_FEATURES)
    std: list[float] = [1.0] * len(DEFAULT_FEATURES)
    coef: list[float] = [0.0] * len(DEFAULT_FEATURES)
    bias: float = 0.0

    def build(self) -> LogisticGate:
        return LogisticGate(tuple(self.features), self.mean, self.std, self.coef, self.bias)

    @classmethod
    def of(cls, gate: LogisticGate) -> GateParams:
        return cls(
            features=list(gate.features),
            mean=list(gate.mean),
            std=list(gate.std),
            coef=list(gate.coef),
            bias=gate.bias,
        )


class FreshParams(BaseModel):
    """Everything the fused ranker needs besides the model and catalog.

    gate_scale a, gate_bias b: the new-item expert's log-odds are z = a * gate_logit + b.
    warm_weight: the content channel's weight in the warm expert (`fusion.warm_expert`; 0 =
    the GR beam as generated). audience: the audience slot (`audience`; slot 0 = off).
    head: beam items always ranked first. n_candidates: new items drawn from the content
    channel per request. max_reference: catalog items the content distribution (and the
    audience radii) are computed over (a seeded sample beyond this). fitted: how and on what
    the values were chosen (None = the built-in defaults).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = FORMAT
    content: ContentParams = ContentParams()
    gate: GateParams = GateParams()
    gate_scale: float = 1.0
    gate_bias: float = -2.0
    warm_weight: float = Field(0.0, ge=0)
    audience: AudienceParams = AudienceParams()
    head: int = Field(1, ge=0)
    n_candidates: int = Field(50, ge=1)
    max_reference: int = Field(16384, ge=1)
    fitted: dict[str, Any] | None = None

    def save(self, folder: str | Path) -> Path:
        """Write `folder/fresh.json` atomically; returns its path."""
        path = Path(folder) / FILE
        write_text(path, json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> FreshParams:
        """Read `folder/fresh.json`; a malformed or foreign file is a CheckpointError."""
        path = Path(folder) / FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no fresh-ranker calibration here") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: unreadable calibration ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a {FORMAT} calibration file")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise CheckpointError(f"{path}: {validation_problems(exc)}") from None

    @classmethod
    def load_or_default(cls, folder: str | Path) -> FreshParams:
        """The checkpoint's calibration, or the defaults when it has none."""
        if (Path(folder) / FILE).exists():
            return cls.load(folder)
        return cls()
