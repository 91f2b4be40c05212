"""`UpdatePolicy`: how a deployed model is kept fresh between replay steps, and the `POLICIES`
registry.

```python
@register_policy("static", settings=NoSettings)
class Static(UpdatePolicy):
    def update(self, state, ctx, t0, t1) -> dict: return {}
```

A policy is made from its settings (`make_policy("edit", {"lam": 300})`, or a combination
"merge+edit" whose parts run in that order each step). `update(state, ctx, t0, t1)` may read
every interaction before t1 (those in [t0, t1) are the new ones) and changes `state` in place;
it returns what it did (JSON-ready numbers) for the step record.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from freshrec.errors import ConfigError, validation_problems
from freshrec.registry import Registry
from freshrec.replay.state import ReplayContext, ReplayState

__all__ = ["POLICIES", "Combined", "NoSettings", "UpdatePolicy", "make_policy", "register_policy"]

P = TypeVar("P", bound="UpdatePolicy")


class NoSettings(BaseModel):
    """A policy without settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class UpdatePolicy(ABC):
    """An update policy. `name` and `settings_class` are set by `register_policy`;
    `self.settings` is a validated `settings_class` instance."""

    name: ClassVar[str]
    settings_class: ClassVar[type[BaseModel]]

    def __init__(self, settings: BaseModel | None = None) -> None:
        self.settings = settings if settings is not None else self.settings_class()
        if not isinstance(self.settings, self.settings_class):
            raise ConfigError(f"policy {self.name!r} takes {self.settings_class.__name__}")

    def start(self, state: ReplayState, ctx: ReplayContext) -> None:  # noqa: B027 - optional
        """Called once before the first step of a part (the state is the trained model)."""

    @abstractmethod
    def update(self, state: ReplayState, ctx: ReplayContext, t0: int, t1: int) -> dict[str, Any]:
        """Apply the policy after the window [t0, t1) (interactions before t1 are known)."""

    def describe(self) -> str:
        """`name` plus the settings that differ from the defaults."""
        changed = self.settings.model_dump(exclude_defaults=True)
        return self.name + (f"({changed})" if changed else "")


POLICIES: Registry[type[UpdatePolicy]] = Registry("update policy")


def register_policy(name: str, settings: type[BaseModel]) -> Callable[[type[P]], type[P]]:
    """Class decorator: register an `UpdatePolicy` subclass as `name` with `settings`."""

    def decorate(cls: type[P]) -> type[P]:
        if not (isinstance(cls, type) and issubclass(cls, UpdatePolicy)):
            raise ConfigError(f"{cls!r} is not an UpdatePolicy subclass")
        POLICIES.add(name, cls)
        cls.name, cls.settings_class = name, settings
        return cls

    return decorate


class Combined(UpdatePolicy):
    """Several policies applied in order each step (e.g. "merge+edit": merge, then edit on
    the merged weights)."""

    name = "combined"
    settings_class = NoSettings

    def __init__(self, parts: list[UpdatePolicy]) -> None:
        super().__init__()
        if len(parts) < 2:
            raise ConfigError("a combined policy needs at least two parts")
        self.parts = parts
        self.name = "+".join(p.name for p in parts)  # type: ignore[misc]

    def start(self, state: ReplayState, ctx: ReplayContext) -> None:
        for part in self.parts:
            part.start(state, ctx)

    def update(self, state: ReplayState, ctx: ReplayContext, t0: int, t1: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part in self.parts:
            out.update({f"{part.name}.{k}": v for k, v in part.update(state, ctx, t0, t1).items()})
        return out

    def describe(self) -> str:
        return "+".join(p.describe() for p in self.parts)


def make_policy(spec: str, settings: Mapping[str, Mapping[str, Any]] | None = None) -> UpdatePolicy:
    """The policy of `spec` ("edit", or parts joined by "+", e.g. "merge+edit"); `settings`:
    {policy name: {field: value}} validated by each policy's settings class."""
    settings = dict(settings or {})
    names = [n.strip() for n in str(spec).split("+")]
    if not all(names) or len(set(names)) != len(names):
        raise ConfigError(f"policy {spec!r}: expected names joined by '+', each at most once")
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise ConfigError(f"settings given for {unknown}, which are not in policy {spec!r}")
    parts = []
    for name in names:
        cls = POLICIES.get(name)
        try:
            parts.append(cls(cls.settings_class.model_validate(dict(settings.get(name, {})))))
        except ValidationError as exc:
            raise ConfigError(f"policy {name!r}: {validation_problems(exc)}") from None
    return parts[0] if len(parts) == 1 else Combined(parts)
