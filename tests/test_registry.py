"""`freshrec.registry.Registry`: the name -> entry table behind every extension point."""

from __future__ import annotations

import pytest

from freshrec.errors import ConfigError
from freshrec.registry import Registry


def test_register_get_and_order() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("b", 2)

    @reg.register("a_1")
    def a() -> int:
        return 1

    assert reg.get("b") == 2
    assert reg.get("a_1") is a
    assert reg.names() == ("b", "a_1")  # registration order, not sorted
    assert "b" in reg
    assert "zz" not in reg
    assert list(reg) == ["b", "a_1"]
    assert len(reg) == 2


def test_unknown_name_lists_known_ones() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("one", 1)
    reg.add("two", 2)
    with pytest.raises(ConfigError, match=r"^unknown widget 'three'; expected one of: one, two$"):
        reg.get("three")
    with pytest.raises(ConfigError, match="unknown widget"):
        reg.get(None)  # type: ignore[arg-type]


def test_duplicates_and_bad_names_refused() -> None:
    reg: Registry[object] = Registry("widget")
    reg.add("one", 1)
    with pytest.raises(ConfigError, match=r"widget 'one' is already registered"):
        reg.add("one", 2)
    assert reg.get("one") == 1
    for bad in ("One", "1x", "a-b", ""):
        with pytest.raises(ConfigError, match="must be lower-case"):
            reg.add(bad, 3)


def test_remove_then_replace() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("one", 1)
    assert reg.remove("one") == 1
    reg.add("one", 11)
    assert reg.get("one") == 11
    with pytest.raises(ConfigError, match="unknown widget 'zz'"):
        reg.remove("zz")
