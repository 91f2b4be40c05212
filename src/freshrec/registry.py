"""`Registry`: a name -> entry table for the places where users add methods.

Each extension point owns one registry (merge methods, SID tokenizers, dataset loaders,
editors; see docs/ARCHITECTURE.md, "Extension points"). Entries are registered at import time
by the module that defines them:

```python
TOKENIZERS: Registry[type[SemanticTokenizer]] = Registry("SID tokenizer")

@TOKENIZERS.register("rkmeans")
class ResidualKMeansTokenizer(SemanticTokenizer): ...

TOKENIZERS.get("rkmeans")    # the class; ConfigError listing the known names if unknown
```

Names are kept in registration order (that order is the one error messages list).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from freshrec.errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Registry(Generic[T]):
    """Named entries of one kind (`what`, e.g. "merge method", used in error messages).

    Names are lower-case identifiers (`[a-z][a-z0-9_]*`); registering a name twice is a
    `ConfigError` (remove the old entry first to replace it).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register `entry` under `name`; returns `entry`."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                f"{self.what} name {name!r} must be lower-case letters, digits and '_', "
                "starting with a letter"
            )
        if name in self._entries:
            raise ConfigError(
                f"{self.what} {name!r} is already registered ({self._describe(name)}); "
                "choose another name"
            )
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`: `@registry.register("name")` above a class or function."""

        def decorate(entry: T) -> T:
            return self.add(name, entry)

        return decorate

    def remove(self, name: str) -> T:
        """Unregister `name` and return its entry (ConfigError if unknown)."""
        entry = self.get(name)
        del self._entries[name]
        return entry

    def get(self, name: str) -> T:
        """The entry of `name`; ConfigError naming the known ones when there is none."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        """`unknown <what> 'x'; expected one of: a, b` (for validators that re-raise it)."""
        return f"unknown {self.what} {name!r}; expected one of: {', '.join(self.names())}"

    def names(self) -> tuple[str, ...]:
        """Registered names in registration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self.names())})"

    def _describe(self, name: str) -> str:
        entry = self._entries[name]
        qual = getattr(entry, "__qualname__", None) or type(entry).__qualname__
        module = getattr(entry, "__module__", None) or type(entry).__module__
        return f"{module}.{qual}"
