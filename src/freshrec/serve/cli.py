"""`freshrec serve`: the CLI command (added to the main app with `register(app)`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from freshrec.errors import FreshrecError


def register(app: typer.Typer) -> None:
    """Add the `serve` command to `app`."""

    @app.command()
    def serve(
        checkpoint: Annotated[
            Path | None, typer.Option(help="checkpoint folder (…/checkpoints/<run>/best)")
        ] = None,
        recipe: Annotated[
            str, typer.Option("--recipe", "-r", help="built-in recipe or YAML (locates <work>)")
        ] = "cpu",
        set_: Annotated[
            list[str] | None,
            typer.Option("--set", "-s", help="recipe override section.key=value (repeatable)"),
        ] = None,
        config: Annotated[
            Path | None, typer.Option(help="ServeConfig JSON file; options below override it")
        ] = None,
        host: Annotated[str | None, typer.Option(help="bind address [127.0.0.1]")] = None,
        port: Annotated[int | None, typer.Option(help="port [8000]")] = None,
        db: Annotated[
            str | None,
            typer.Option(help="catalog database URL [sqlite:///<work>/serve/catalog.db]"),
        ] = None,
        state_dir: Annotated[Path | None, typer.Option(help="state folder [<work>/serve]")] = None,
        edits_dir: Annotated[
            Path | None, typer.Option(help="edit pack folder [<state>/edits]")
        ] = None,
        api_key_file: Annotated[
            Path | None, typer.Option(help="API key file, used when $FRESHREC_API_KEY is unset")
        ] = None,
        open_reads: Annotated[
            bool | None,
            typer.Option("--open-reads/--keyed-reads", help="reads without the key [open]"),
        ] = None,
        batching: Annotated[
            bool | None, typer.Option("--batching/--no-batching", help="micro-batching [on]")
        ] = None,
        max_batch: Annotated[int | None, typer.Option(help="requests per batch [32]")] = None,
        batch_window_ms: Annotated[
            float | None, typer.Option(help="micro-batch window in ms [2]")
        ] = None,
        beam_size: Annotated[int | None, typer.Option(help="beam size [20]")] = None,
        mode: Annotated[
            str | None,
            typer.Option(
                help="fresh: GR beam + new-item channel, added items recommended at once; "
                "beam: the GR model alone, added items once edited in [fresh]"
            ),
        ] = None,
        edit_window: Annotated[
            float | None, typer.Option(help="seconds items wait to share an edit [0.5]")
        ] = None,
        edit: Annotated[
            list[str] | None,
            typer.Option(help="EditConfig override key=value, e.g. --edit lam=1000"),
        ] = None,
        log_level: Annotated[str | None, typer.Option(help="log level [info]")] = None,
    ) -> None:
        """Serve recommendations over HTTP; added items are recommended as soon as POST /items
        acknowledges them (mode fresh) and edited in within seconds.

        Writes need the API key ($FRESHREC_API_KEY or --api-key-file). See docs/SERVING.md."""
        from rich.console import Console

        from freshrec.serve.app import run
        from freshrec.serve.config import ServeConfig

        try:
            data: dict[str, Any] = {}
            if config is not None:
                data = ServeConfig.from_file(config).model_dump(exclude_unset=True)
            options: dict[str, Any] = {
                "checkpoint": checkpoint,
                "host": host,
                "port": port,
                "db_url": db,
                "state_dir": state_dir,
                "edits_dir": edits_dir,
                "api_key_file": api_key_file,
                "open_reads": open_reads,
                "batching": batching,
                "max_batch": max_batch,
                "batch_window_ms": batch_window_ms,
                "beam_size": beam_size,
                "mode": mode,
                "edit_batch_window_s": edit_window,
                "log_level": log_level,
            }
            data.update({k: v for k, v in options.items() if v is not None})
            if config is None or recipe != "cpu":
                data["recipe"] = recipe
            if set_:
                data["overrides"] = [*data.get("overrides", []), *set_]
            if edit:
                data["edit"] = {**data.get("edit", {}), **_pairs(edit)}
            if "checkpoint" not in data:
                raise typer.BadParameter("--checkpoint is required (or set it in --config)")
            run(ServeConfig.from_dict(data))
        except FreshrecError as exc:
            Console(stderr=True).print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2) from None


def _pairs(items: list[str]) -> dict[str, Any]:
    """key=value strings -> dict, values parsed as JSON when they parse (numbers, booleans)."""
    from freshrec.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--edit {item!r} must look like key=value")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out
