"""Shared pieces of the `freshrec` commands (the app in `freshrec.cli`, stage commands in
`<stage>/cli.py`): option types, consoles, and `friendly`, which turns user errors into one line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from freshrec.errors import FreshrecError

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

RecipeOpt = Annotated[
    str,
    typer.Option(
        "--recipe", "-r", help="built-in recipe (cpu, tiger-cpu, tiger-paper) or YAML file"
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="override, e.g. --set train.epochs=5 (repeatable)"),
]


def friendly(fn: F) -> F:
    """Print `FreshrecError`s as one clear line (exit code 2) instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FreshrecError as exc:
            err_console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
