"""Dataset loaders registered by kind (`DATASET_LOADERS`) and `load_dataset`.

A loader is a pydantic model whose fields are its options (unknown keys are errors) with a
`load(folder) -> Dataset` method. Recipes name one with `data.kind`; the section's other keys
(beside `path`, `name`, `split`, `train_frac`, `valid_frac`) are that loader's options, e.g.
`data.category` for amazon.

```python
@register_loader("mylens")
class MyLensLoader(DatasetLoader):
    min_rating: float = 0.0
    def load(self, folder: Path) -> Dataset:
        return load_mylens(folder, min_rating=self.min_rating)
```
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from freshrec.data.amazon import load_amazon
from freshrec.data.custom import load_custom
from freshrec.data.movielens import load_movielens
from freshrec.data.schema import Dataset
from freshrec.errors import ConfigError
from freshrec.registry import Registry

__all__ = [
    "DATASET_LOADERS",
    "AmazonLoader",
    "CustomLoader",
    "DatasetLoader",
    "MovieLensLoader",
    "load_dataset",
    "loader_for",
    "register_loader",
]

L = TypeVar("L", bound="DatasetLoader")


class DatasetLoader(BaseModel, abc.ABC):
    """Base of every loader: the fields are the loader's options (immutable, unknown keys are
    errors); `load` reads a dataset folder (DataError for malformed files)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def split_options(cls, split: str) -> dict[str, Any]:
        """Options implied by a recipe's `data.split` ("time" | "loo" | "official"); explicit
        options override them. Default: none."""
        return {}

    @abc.abstractmethod
    def load(self, folder: Path) -> Dataset:
        """Read the (existing) dataset folder into a `Dataset`."""


DATASET_LOADERS: Registry[type[DatasetLoader]] = Registry("dataset kind")


def register_loader(kind: str) -> Callable[[type[L]], type[L]]:
    """Class decorator: register a `DatasetLoader` subclass as `kind` (ConfigError if taken)."""

    def decorate(cls: type[L]) -> type[L]:
        if not (isinstance(cls, type) and issubclass(cls, DatasetLoader)):
            raise ConfigError(f"{cls!r} is not a DatasetLoader subclass")
        return DATASET_LOADERS.add(kind, cls)

    return decorate


@register_loader("movielens")
class MovieLensLoader(DatasetLoader):
    """MovieLens `movies.csv` + `ratings.csv` (`freshrec.data.movielens`)."""

    name: str | None = Field(None, description="dataset name (default: the folder's name)")

    def load(self, folder: Path) -> Dataset:
        return load_movielens(folder, name=self.name)


@register_loader("amazon")
class AmazonLoader(DatasetLoader):
    """Amazon Reviews 2023, one category (`freshrec.data.amazon`)."""

    category: str = Field(description="category, e.g. Video_Games (file prefix)")
    official_split: bool = Field(
        False, description="read the official split files (implied by data.split=official)"
    )
    max_description_chars: int = Field(1000, ge=0)

    @classmethod
    def split_options(cls, split: str) -> dict[str, Any]:
        return {"official_split": split == "official"}

    def load(self, folder: Path) -> Dataset:
        return load_amazon(folder, **self.model_dump())


@register_loader("custom")
class CustomLoader(DatasetLoader):
    """Bring-your-own `interactions.csv` + `items.csv` (`freshrec.data.custom`)."""

    name: str | None = Field(None, description="dataset name (default: the folder's name)")
    keep_unused_items: bool = False
    max_description_chars: int = Field(1000, ge=0)

    def load(self, folder: Path) -> Dataset:
        return load_custom(folder, **self.model_dump())


def _option_problems(exc: ValidationError, cls: type[DatasetLoader]) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown option {loc!r}")
        elif err["type"] == "missing":
            parts.append(f"missing required option {loc!r}")
        else:
            parts.append(f"{loc}: {err['msg']}")
    known = ", ".join(cls.model_fields) or "none"
    return f"{'; '.join(parts)} (its options: {known})"


def loader_for(kind: str, options: Mapping[str, Any] | None = None) -> DatasetLoader:
    """The registered loader of `kind` with `options` validated by its class (ConfigError)."""
    if kind not in DATASET_LOADERS:
        known = ", ".join(sorted(DATASET_LOADERS))
        raise ConfigError(f"unknown dataset kind {kind!r}; choose one of {known}")
    cls = DATASET_LOADERS.get(kind)
    try:
        return cls.model_validate(dict(options or {}))
    except ValidationError as exc:
        raise ConfigError(f"{kind} loader: {_option_problems(exc, cls)}") from None


def load_dataset(kind: str, path: str | Path, **options: Any) -> Dataset:
    """Load a dataset folder with the loader registered as `kind` ("movielens" | "amazon" |
    "custom" | ...); `options` are that loader's (e.g. `category=` for amazon). ConfigError
    for an unknown kind, a missing folder or options the loader does not take."""
    loader = loader_for(kind, options)
    folder = Path(path)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"dataset folder {str(folder)!r} {what}")
    return loader.load(folder)
