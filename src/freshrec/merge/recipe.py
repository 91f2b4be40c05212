"""Merge recipes in mergekit's YAML shape.

```yaml
merge_method: ties            # a name in MERGE_METHODS: linear | task_arithmetic | ties | dare_*
base_model: ckpt/pretrain     # task vectors are taken against it (any checkpoint: base replacement)
models:
  - model: ckpt/phase1
    parameters: {weight: 0.4, density: 0.5}
  - model: ckpt/phase2
    parameters: {weight: 0.6, density: 0.5}
parameters: {lambda: 1.0, normalize: true, seed: 0}   # `scale` is an alias of `lambda`
dtype: float32                # float32 | float16 | bfloat16; omitted: keep each tensor's dtype
```

Relative paths resolve against the recipe file's folder. Rules (each violation is a
`ConfigError` naming the file, the field and what was expected):

- `merge_method`: a name registered in `freshrec.merge.methods.MERGE_METHODS`; the method's
  class attributes drive the rules below (`needs_base`, `uses_density`, `default_normalize`)
  and its `check(recipe)` adds its own (linear: see below).
- `weight` >= 0 and not all 0; default 1.0. `density` in (0, 1], default 1.0, only meaningful
  for methods with `uses_density` (ties / dare_*). Both may be given globally under
  `parameters` as per-model defaults.
- `normalize` defaults as in mergekit: linear true, task_arithmetic false, ties true,
  dare_linear false, dare_ties false. For linear with `normalize: false` the weights must sum
  to 1 (within 1e-3); otherwise the merged model would be the average scaled by sum(weights),
  which is an error rather than a warning (use task_arithmetic + lambda to extrapolate).
- `base_model` is required for every method with `needs_base` (all but linear; for linear it
  is optional: checked for compatibility and the source of non-float tensors, averaged only if
  listed in `models`). An entry of `models` that is the base itself is dropped for those
  methods (its task vector is zero), as mergekit does, with a warning.
- `lambda` (alias `scale`) default 1.0; `seed` (DARE masks) default 0; `rescale` (DARE) default
  true; `int8_mask` is accepted for mergekit compatibility and has no effect.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from freshrec.errors import ConfigError
from freshrec.merge.methods import MERGE_METHODS, MergeArgs, MergeMethod

__all__ = [
    "MergeRecipe",
    "ModelEntry",
    "ModelParameters",
    "RecipeParameters",
    "load_recipe",
    "parse_recipe",
]

DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")


def _check_density(value: float | None) -> float | None:
    if value is not None and not (0.0 < value <= 1.0):
        raise ValueError(f"must be in (0, 1], got {value}")
    return value


def _check_weight(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"must be a finite number >= 0, got {value}")
    return value


def _resolve_dir(value: Any, info: ValidationInfo, what: str) -> Path:
    base_dir = Path((info.context or {}).get("base_dir", "."))
    path = Path(value).expanduser()
    resolved = (path if path.is_absolute() else base_dir / path).resolve()
    if not resolved.is_dir():
        rel = "" if path.is_absolute() else f" ('{value}' relative to {base_dir.resolve()})"
        raise ValueError(f"{what} folder not found: {resolved}{rel}")
    return resolved


class ModelParameters(BaseModel):
    """Per-model parameters; unset values fall back to the global `parameters`."""

    model_config = ConfigDict(extra="forbid")

    weight: float | None = None
    density: float | None = None

    @field_validator("weight")
    @classmethod
    def _weight(cls, value: float | None) -> float | None:
        return _check_weight(value)

    @field_validator("density")
    @classmethod
    def _density(cls, value: float | None) -> float | None:
        return _check_density(value)


class ModelEntry(BaseModel):
    """One input checkpoint folder and its parameters."""

    model_config = ConfigDict(extra="forbid")

    model: Path
    parameters: ModelParameters = Field(default_factory=ModelParameters)

    @field_validator("model", mode="before")
    @classmethod
    def _resolve(cls, value: Any, info: ValidationInfo) -> Path:
        return _resolve_dir(value, info, "checkpoint")

    @field_validator("parameters", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


class RecipeParameters(BaseModel):
    """Global parameters (`lambda`/`scale`, `normalize`, `seed`, ... and per-model defaults)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    lam: float = Field(1.0, validation_alias=AliasChoices("lambda", "scale", "lam"))
    normalize: bool | None = None
    seed: int = 0
    rescale: bool = True
    int8_mask: bool = False
    weight: float | None = None
    density: float | None = None

    @field_validator("weight")
    @classmethod
    def _weight(cls, value: float | None) -> float | None:
        return _check_weight(value)

    @field_validator("density")
    @classmethod
    def _density(cls, value: float | None) -> float | None:
        return _check_density(value)

    @model_validator(mode="before")
    @classmethod
    def _one_lambda(cls, data: Any) -> Any:
        if isinstance(data, dict) and len({"lambda", "scale", "lam"} & data.keys()) > 1:
            raise ValueError("give either 'lambda' or its alias 'scale', not both")
        return data

    @field_validator("lam")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"lambda must be finite, got {value}")
        return value


class MergeRecipe(BaseModel):
    """A validated merge recipe; model paths are absolute, existing folders.

    Build with `load_recipe(path)` / `parse_recipe(dict, base_dir)`; direct construction resolves
    relative paths against the current folder.
    """

    model_config = ConfigDict(extra="forbid")

    merge_method: str
    base_model: Path | None = None
    models: list[ModelEntry]
    parameters: RecipeParameters = Field(default_factory=RecipeParameters)
    dtype: Literal["float32", "float16", "bfloat16"] | None = None

    @field_validator("merge_method", mode="before")
    @classmethod
    def _known_method(cls, value: Any) -> Any:
        if value not in MERGE_METHODS:
            known = ", ".join(MERGE_METHODS.names())
            raise ValueError(f"unknown method {value!r}; expected one of: {known}")
        return value

    @field_validator("dtype", mode="before")
    @classmethod
    def _known_dtype(cls, value: Any) -> Any:
        if value is not None and value not in DTYPES:
            raise ValueError(f"unknown dtype {value!r}; expected one of: {', '.join(DTYPES)}")
        return value

    @field_validator("base_model", mode="before")
    @classmethod
    def _resolve_base(cls, value: Any, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve_dir(value, info, "base_model checkpoint")

    @field_validator("parameters", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("models", mode="before")
    @classmethod
    def _at_least_one(cls, value: Any) -> Any:
        if value is None or (isinstance(value, list) and len(value) == 0):
            raise ValueError("at least one model is required")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MergeRecipe:
        name, method = self.merge_method, self.method
        if method.needs_base:
            if self.base_model is None:
                raise ValueError(
                    f"base_model: required for merge_method '{name}' (task vectors are taken "
                    "against it; any checkpoint, e.g. the shared pretrain one, may be the base)"
                )
            kept = [m for m in self.models if m.model != self.base_model]
            if len(kept) < len(self.models):
                warnings.warn(
                    f"dropping models entries equal to base_model {self.base_model} "
                    "(their task vector is zero)",
                    stacklevel=2,
                )
            if not kept:
                raise ValueError("models: at least one model other than base_model is required")
            self.models = kept
        weights = self.weights()
        if all(w == 0 for w in weights):
            raise ValueError(f"models: all weights are 0 ({weights}); at least one must be > 0")
        if not method.uses_density:
            sparse = sorted(n for n in MERGE_METHODS if MERGE_METHODS.get(n).uses_density)
            for i, (m, d) in enumerate(zip(self.models, self.densities(), strict=True)):
                if d != 1.0:
                    own = m.parameters.density is not None
                    field = f"models[{i}].parameters.density" if own else "parameters.density"
                    raise ValueError(
                        f"{field}: density applies only to {', '.join(sparse)}; got {d} with "
                        f"'{name}'"
                    )
        method.check(self)
        return self

    @property
    def method(self) -> MergeMethod:
        """The registered `MergeMethod` of `merge_method`."""
        return MERGE_METHODS.get(self.merge_method)

    @property
    def normalize(self) -> bool:
        """`parameters.normalize`, or the method's mergekit default when unset."""
        if self.parameters.normalize is not None:
            return self.parameters.normalize
        return self.method.default_normalize

    @property
    def lam(self) -> float:
        return self.parameters.lam

    def weights(self) -> list[float]:
        """Weight of each model (per-model value, else global `parameters.weight`, else 1)."""
        default = 1.0 if self.parameters.weight is None else self.parameters.weight
        return [
            default if m.parameters.weight is None else m.parameters.weight for m in self.models
        ]

    def densities(self) -> list[float]:
        """Density of each model (per-model value, else global `parameters.density`, else 1)."""
        default = 1.0 if self.parameters.density is None else self.parameters.density
        return [
            default if m.parameters.density is None else m.parameters.density for m in self.models
        ]

    def merge_args(self, key: str) -> MergeArgs:
        """The settings `MergeMethod.merge` gets for tensor `key`."""
        return MergeArgs(
            key=key,
            weights=self.weights(),
            densities=self.densities(),
            lam=self.lam,
            normalize=self.normalize,
            rescale=self.parameters.rescale,
            seed=self.parameters.seed,
        )

    def model_paths(self) -> list[Path]:
        return [m.model for m in self.models]

    def summary(self) -> dict[str, Any]:
        """JSON-able resolved recipe (for `extra.merge` of the output checkpoint)."""
        return {
            "merge_method": self.merge_method,
            "base_model": str(self.base_model) if self.base_model else None,
            "models": [
                {"model": str(p), "parameters": {"weight": w, "density": d}}
                for p, w, d in zip(
                    self.model_paths(), self.weights(), self.densities(), strict=True
                )
            ],
            "parameters": {
                "lambda": self.lam,
                "normalize": self.normalize,
                "seed": self.parameters.seed,
                "rescale": self.parameters.rescale,
            },
            "dtype": self.dtype,
        }

    @classmethod
    def model_validate_with_dir(cls, data: Any, base_dir: str | Path) -> MergeRecipe:
        """`model_validate` with relative paths resolved against `base_dir`."""
        return cls.model_validate(data, context={"base_dir": str(base_dir)})


_ALLOWED: dict[str, list[str]] = {
    "": ["merge_method", "base_model", "models", "parameters", "dtype"],
    "parameters": [
        "lambda",
        "scale",
        "normalize",
        "seed",
        "rescale",
        "int8_mask",
        "weight",
        "density",
    ],
    "models": ["model", "parameters"],
    "models.parameters": ["weight", "density"],
}


def _loc(loc: tuple[int | str, ...]) -> str:
    """('models', 1, 'parameters', 'density') -> 'models[1].parameters.density'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + part
    return out


def _format_error(exc: ValidationError, source: str) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = _loc(tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parent = re.sub(r"\[\d+\]", "", _loc(tuple(err["loc"][:-1])))
            msg = f"unknown field; expected one of: {', '.join(_ALLOWED.get(parent, []))}"
        elif err["type"] == "missing":
            msg = "required field is missing"
            if loc == "models":
                msg += "; give at least one model"
            elif loc == "merge_method":
                msg += f"; expected one of: {', '.join(MERGE_METHODS.names())}"
        # Errors of the whole-recipe check carry no location; their message starts with it.
        lines.append(f"{source}: {loc}: {msg}" if loc else f"{source}: {msg}")
    return ConfigError("\n".join(lines))


def parse_recipe(data: Any, base_dir: str | Path = ".", source: str = "<recipe>") -> MergeRecipe:
    """Validate a recipe mapping; relative paths resolve against `base_dir`.

    Raises `ConfigError` with one line per problem, each `source: field: message`.
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a YAML mapping with merge_method, models, ...; "
            f"got {type(data).__name__}"
        )
    try:
        return MergeRecipe.model_validate_with_dir(data, base_dir)
    except ValidationError as exc:
        raise _format_error(exc, source) from None


def load_recipe(path: str | Path) -> MergeRecipe:
    """Read and validate a YAML recipe; relative model paths resolve against its folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc})") from None
    return parse_recipe(data, base_dir=path.parent, source=str(path))
