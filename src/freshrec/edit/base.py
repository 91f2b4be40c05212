"""`Editor`: the interface of a model-editing algorithm, and the `EDITORS` registry.

An editor is built from a trained model and what it was trained on, then injects new items:

    editor = cls(model, checkpoint_dir, split, table, emb, config, work)
    pack = editor.edit(new_items, seed=0)          # -> EditPack, applied by an EditStack

`freshrec edit --editor NAME` picks one (default `genrecedit`); its `--set edit.<key>=<value>`
overrides are validated by the editor's `config_class`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from freshrec.errors import ConfigError, validation_problems
from freshrec.registry import Registry

if TYPE_CHECKING:
    from freshrec.data.schema import Split
    from freshrec.model.base import GenerativeRecommender
    from freshrec.model.edit_packs import EditPack
    from freshrec.semid.table import SidTable
    from freshrec.workspace import Workspace

__all__ = ["EDITORS", "Editor", "register_editor"]

E = TypeVar("E", bound="Editor")


class Editor(ABC):
    """A model-editing algorithm. `name` is its registered name, `config_class` the pydantic
    model of its settings (what `--set edit.<key>=` sets); both set by `register_editor`."""

    name: ClassVar[str]
    config_class: ClassVar[type[BaseModel]]
    accepts_observed: ClassVar[bool] = False
    """True when `edit` takes `observed=Requests` (real interactions with the new items, used
    as edit requests; a deployment replay passes them)."""

    @abstractmethod
    def __init__(
        self,
        model: GenerativeRecommender,
        checkpoint_dir: str | Path,
        split: Split,
        table: SidTable,
        emb: np.ndarray,
        config: Any = None,
        work: Workspace | str | Path | None = None,
    ) -> None:
        """model: loaded from `checkpoint_dir`; split: the data it was trained on; table: SID
        table with the new items' SIDs assigned; emb: float32[n_items, d] item text embeddings;
        config: a `config_class` instance (None = defaults); work: workspace or cache folder."""

    @abstractmethod
    def edit(
        self,
        new_items: np.ndarray | Sequence[int],
        seed: int | None = None,
        previous: Sequence[EditPack] = (),
    ) -> EditPack:
        """An `EditPack` making the model recommend `new_items` (int item indices with SIDs),
        built on the `previous` packs; the model itself is left unchanged."""

    @classmethod
    def make_config(cls, data: Mapping[str, Any]) -> BaseModel:
        """`config_class` validated from a mapping; ConfigError naming each bad field."""
        try:
            return cls.config_class.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(f"invalid edit config: {validation_problems(exc)}") from None


EDITORS: Registry[type[Editor]] = Registry("editor")


def register_editor(name: str, config: type[BaseModel]) -> Callable[[type[E]], type[E]]:
    """Class decorator: register an `Editor` subclass as `name` with settings class `config`
    (ConfigError if the name is taken)."""

    def decorate(cls: type[E]) -> type[E]:
        if not (isinstance(cls, type) and issubclass(cls, Editor)):
            raise ConfigError(f"{cls!r} is not an Editor subclass")
        EDITORS.add(name, cls)
        cls.name, cls.config_class = name, config
        return cls

    return decorate
