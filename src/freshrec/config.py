"""Run recipes: one resolved configuration per run, layered as
built-in defaults <- recipe YAML <- command-line `--set section.key=value` overrides.

A recipe has one section per stage (`data`, `semid`, `model`, `train`, `eval`). The `model`
section may name a model recipe from `freshrec.model.config.RECIPES` (`recipe: tiger_cpu`)
and override any of its fields. The resolved recipe is saved beside every run's outputs.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from freshrec.data.loaders import DATASET_LOADERS, loader_for
from freshrec.errors import ConfigError, validation_problems
from freshrec.model.config import RECIPES as MODEL_RECIPES
from freshrec.model.config import ModelConfig
from freshrec.semid.config import SemIdConfig
from freshrec.train.config import TrainConfig

BUILTIN = ("cpu", "tiger-cpu", "tiger-paper")


class DataConfig(BaseModel):
    """The `data` section. `kind` names a loader registered in `DATASET_LOADERS`; every key
    beside the fields below is an option of that loader, validated by its own class (e.g.
    `category` for amazon, `keep_unused_items` for custom)."""

    model_config = ConfigDict(extra="allow")

    kind: str = "movielens"
    path: str = "data/ml-latest-small"
    name: str | None = Field(None, description="work-folder name (default: the folder's name)")
    split: Literal["time", "loo", "official"] = "time"
    train_frac: float = Field(0.8, gt=0, lt=1)
    valid_frac: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _null_options_unset(cls, data: Any) -> Any:
        """A loader option given as null means "not set" (old snapshots hold `category: null`)."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k in cls.model_fields or v is not None}
        return data

    @field_validator("kind")
    @classmethod
    def _registered(cls, value: str) -> str:
        if value not in DATASET_LOADERS:
            raise ValueError(DATASET_LOADERS.unknown_message(value))
        return value

    @model_validator(mode="after")
    def _loader_options(self) -> DataConfig:
        try:
            loader_for(self.kind, self.loader_options())
        except ConfigError as exc:
            own = ", ".join(type(self).model_fields)
            raise ValueError(f"{exc}; the data section's own keys: {own}") from None
        return self

    def loader_options(self) -> dict[str, Any]:
        """Options of the `kind` loader: those `split` implies, overridden by the extra keys."""
        implied = DATASET_LOADERS.get(self.kind).split_options(self.split)
        return {**implied, **(self.model_extra or {})}

    @property
    def dataset_name(self) -> str:
        return self.name or Path(self.path).name


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(50, ge=1)
    beam_size: int = Field(50, ge=1)
    max_requests: int | None = Field(None, description="seeded sample of test requests")
    seed: int = 0
    batch_size: int = Field(256, ge=1)
    prompt_new_items: bool = Field(
        True,
        description="feed items the model was not trained on (the catalog's new items) to the "
        "GR model's prompt; False drops them, as SASRec must (the history exclusion is "
        "unchanged)",
    )
    baselines: list[Literal["popularity", "textknn", "sasrec"]] = [
        "popularity",
        "textknn",
        "sasrec",
    ]


class FreshConfig(BaseModel):
    """Calibration of the fused fresh-item ranker (docs/FRESH.md), run after training."""

    model_config = ConfigDict(extra="forbid")

    calibrate: bool = Field(True, description="fit fresh.json into the best checkpoint")
    budget: float = Field(
        0.015,
        ge=0,
        lt=1,
        description="largest warm R@20 / N@10 loss vs the plain GR model allowed on validation",
    )
    objective: Literal["overall", "cold"] = Field(
        "overall",
        description="what the mixture maximises within the budget: overall R@20 (every "
        "request once, warm or new) or cold R@20",
    )
    valid_requests: int | None = Field(
        4000, description="seeded sample of validation requests (None = all)"
    )
    seed: int = 0


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: DataConfig = DataConfig()
    semid: SemIdConfig = SemIdConfig()
    model: ModelConfig = MODEL_RECIPES["causal_cpu"]()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    fresh: FreshConfig = FreshConfig()
    work_dir: str = ".freshrec"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def parse_value(text: str) -> Any:
    """A command-line override value: YAML scalars/lists (`5`, `true`, `[a,b]`), else text."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _apply_override(tree: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.key=value")
    key, value = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {assignment!r} has an empty key")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {assignment!r}: {part!r} is not a section")
    node[parts[-1]] = parse_value(value)


def _resolve_model(section: dict[str, Any] | str | None) -> dict[str, Any] | None:
    if section is None:
        return None
    if isinstance(section, str):
        section = {"recipe": section}
    section = dict(section)
    name = section.pop("recipe", None)
    if name is None:
        return section
    if name not in MODEL_RECIPES:
        raise ConfigError(f"unknown model recipe {name!r}; known: {', '.join(MODEL_RECIPES)}")
    return {**MODEL_RECIPES[name]().model_dump(), **section}


def read_recipe_tree(recipe: str | Path | None) -> dict[str, Any]:
    """The raw YAML tree of a built-in recipe name or a recipe file (None = `cpu`)."""
    if recipe is None:
        recipe = "cpu"
    if str(recipe) in BUILTIN:
        text = resources.files("freshrec.recipes").joinpath(f"{recipe}.yaml").read_text()
        source = f"built-in recipe {recipe}"
    else:
        path = Path(recipe)
        if not path.is_file():
            raise ConfigError(
                f"recipe {str(recipe)!r} is neither a file nor a built-in recipe "
                f"({', '.join(BUILTIN)})"
            )
        text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: malformed YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: a recipe is a mapping of sections")
    return tree


def load_recipe(recipe: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Resolve a recipe (built-in name or YAML path) with `section.key=value` overrides."""
    tree = read_recipe_tree(recipe)
    for assignment in overrides or []:
        _apply_override(tree, assignment)
    if "model" in tree:
        tree["model"] = _resolve_model(tree["model"])
    try:
        return Recipe.model_validate(tree)
    except ValidationError as exc:
        problems = validation_problems(exc)
        raise ConfigError(f"invalid recipe: {problems}") from None
