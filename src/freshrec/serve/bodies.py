"""Request bodies of the HTTP API (pydantic, strict: no coercion of booleans, floats or
strings into ids, counts or flags), and the message of a body that fails validation."""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 20_000


def item_id(v: Any, where: str = "", what: str = "item id") -> str:
    """An id: a non-empty string or an integer (not a boolean), at most 256 characters."""
    at = f"{where}: " if where else ""
    if isinstance(v, bool) or not isinstance(v, str | int):
        got = "a boolean" if isinstance(v, bool) else type(v).__name__
        raise ValueError(f"{at}{what}s are strings (or integers), got {got}")
    s = str(v).strip()
    if not s:
        raise ValueError(f"{at}{what} is empty")
    if len(s) > MAX_ID_CHARS:
        raise ValueError(f"{at}{what} longer than {MAX_ID_CHARS} characters")
    return s


class RecommendIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    history: list[str] = Field(description="item ids, oldest first")
    top_k: int = 10
    exclude_seen: bool = True
    only_new: bool = False
    user: str | None = None

    @field_validator("history", mode="before")
    @classmethod
    def _history(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v  # pydantic reports the wrong type
        return [item_id(x, f"history[{i}]") for i, x in enumerate(v)]

    @field_validator("user", mode="before")
    @classmethod
    def _user(cls, v: Any) -> Any:
        return None if v is None else item_id(v, what="user id")


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    item_id: str
    title: str = Field(max_length=MAX_TEXT_CHARS)
    text: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    categories: list[str] | None = None
    description: str | None = Field(None, max_length=MAX_TEXT_CHARS)

    @field_validator("item_id", mode="before")
    @classmethod
    def _item_id(cls, v: Any) -> Any:
        return item_id(v)

    @field_validator("title")
    @classmethod
    def _title(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("title is empty")
        return v.strip()

    @field_validator("text")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("text is empty (leave it out to build it from the title)")
        return v


class ItemsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    items: list[ItemIn]


def validation_message(exc: RequestValidationError) -> tuple[int, str]:
    """(status, message) of an invalid body: 400 for malformed JSON or no body, else 422
    with every problem as `<field>: <problem>`."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx") or {}
        return 400, f"malformed JSON: {ctx.get('error', 'cannot parse the body')}"
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    if not parts:
        return 422, "invalid request body"
    if (
        errors
        and errors[0].get("type") == "missing"
        and tuple(errors[0].get("loc", ())) == ("body",)
    ):
        return 400, "the request needs a JSON body"
    return 422, "; ".join(parts)
