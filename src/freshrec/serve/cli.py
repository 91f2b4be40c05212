"""`freshrec serve`: the CLI command (added to the main app with `register(app)`).

Three parts: the option types (one line each in the command's signature), `serve_config`
(options + an optional JSON config file -> a validated `ServeConfig`) and the command, which
runs the service and turns configuration errors into exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from freshrec.errors import ConfigError, FreshrecError

if TYPE_CHECKING:
    from freshrec.serve.config import ServeConfig

# ---------------------------------------------------------------------------------- options
Checkpoint = Annotated[
    Path | None, typer.Option(help="checkpoint folder (…/checkpoints/<run>/best)")
]
RecipeName = Annotated[
    str, typer.Option("--recipe", "-r", help="built-in recipe or YAML (locates <work>)")
]
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="recipe override section.key=value (repeatable)"),
]
ConfigFile = Annotated[
    Path | None, typer.Option(help="ServeConfig JSON file; options below override it")
]
Host = Annotated[str | None, typer.Option(help="bind address (default: 127.0.0.1)")]
Port = Annotated[int | None, typer.Option(help="port (default: 8000)")]
Db = Annotated[
    str | None,
    typer.Option(
        help="catalog database URL (default: sqlite:///<state>/catalog.db); PostgreSQL: "
        "postgresql+psycopg://user:password@host/db (the postgres extra of freshrec)"
    ),
]
StateDir = Annotated[Path | None, typer.Option(help="state folder (default: <work>/serve)")]
EditsDir = Annotated[
    Path | None,
    typer.Option(
        help="edit pack folder, a folder of its own; shared storage for replicas "
        "(default: <state>/edits)"
    ),
]
ReadOnly = Annotated[
    bool | None,
    typer.Option(
        "--read-only/--writer",
        help="a read replica of the writer that owns --db and --edits-dir (default: writer)",
    ),
]
FollowInterval = Annotated[
    float | None, typer.Option(help="a replica's seconds between catalog polls (default: 1)")
]
ApiKeyFile = Annotated[
    Path | None, typer.Option(help="API key file, used when $FRESHREC_API_KEY is unset")
]
OpenReads = Annotated[
    bool | None,
    typer.Option("--open-reads/--keyed-reads", help="reads without the key (default: open)"),
]
Batching = Annotated[
    bool | None, typer.Option("--batching/--no-batching", help="micro-batching (default: on)")
]
MaxBatch = Annotated[int | None, typer.Option(help="requests per batch (default: 32)")]
BatchWindow = Annotated[float | None, typer.Option(help="micro-batch window in ms (default: 2)")]
BeamSize = Annotated[int | None, typer.Option(help="beam size (default: 20)")]
Mode = Annotated[
    str | None,
    typer.Option(
        help="fresh: GR beam + new-item channel, added items recommended at once; "
        "beam: the GR model alone, added items once edited in (default: fresh)"
    ),
]
MaxInflight = Annotated[
    int | None,
    typer.Option(help="/recommend requests in flight at most; beyond them 429 (default: 24)"),
]
EditWindow = Annotated[
    float | None, typer.Option(help="seconds items wait to share an edit (default: 0.5)")
]
EditOverrides = Annotated[
    list[str] | None,
    typer.Option(help="EditConfig override key=value, e.g. --edit lam=1000"),
]
LogLevel = Annotated[str | None, typer.Option(help="log level (default: info)")]


def register(app: typer.Typer) -> None:
    """Add the `serve` command to `app`."""
    app.command(name="serve")(serve)


# ---------------------------------------------------------------------------------- command
def serve(
    checkpoint: Checkpoint = None,
    recipe: RecipeName = "cpu",
    set_: Overrides = None,
    config: ConfigFile = None,
    host: Host = None,
    port: Port = None,
    db: Db = None,
    state_dir: StateDir = None,
    edits_dir: EditsDir = None,
    read_only: ReadOnly = None,
    follow_interval: FollowInterval = None,
    api_key_file: ApiKeyFile = None,
    open_reads: OpenReads = None,
    batching: Batching = None,
    max_batch: MaxBatch = None,
    batch_window_ms: BatchWindow = None,
    beam_size: BeamSize = None,
    mode: Mode = None,
    max_inflight: MaxInflight = None,
    edit_window: EditWindow = None,
    edit: EditOverrides = None,
    log_level: LogLevel = None,
) -> None:
    """Serve recommendations over HTTP; added items are recommended as soon as POST /items
    acknowledges them (mode fresh) and edited in within seconds.

    Writes need the API key ($FRESHREC_API_KEY or --api-key-file). Several replicas: one
    writer and any number of --read-only processes on one --db and --edits-dir. See
    docs/SERVING.md."""
    from rich.console import Console

    from freshrec.serve.app import run

    options = {
        "checkpoint": checkpoint,
        "host": host,
        "port": port,
        "db_url": db,
        "state_dir": state_dir,
        "edits_dir": edits_dir,
        "read_only": read_only,
        "follow_interval_s": follow_interval,
        "api_key_file": api_key_file,
        "open_reads": open_reads,
        "batching": batching,
        "max_batch": max_batch,
        "batch_window_ms": batch_window_ms,
        "beam_size": beam_size,
        "mode": mode,
        "max_inflight_recommend": max_inflight,
        "edit_batch_window_s": edit_window,
        "log_level": log_level,
    }
    try:
        run(serve_config(options, config, recipe, set_ or [], edit or []))
    except FreshrecError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None


def serve_config(
    options: dict[str, Any],
    config_file: Path | None,
    recipe: str,
    overrides: list[str],
    edit: list[str],
) -> ServeConfig:
    """The `ServeConfig` of the command line: the config file's keys, then every option that
    was given (None = not given). ConfigError (exit 2) on a problem."""
    from freshrec.serve.config import ServeConfig

    data: dict[str, Any] = {}
    if config_file is not None:
        data = ServeConfig.from_file(config_file).model_dump(exclude_unset=True)
    data.update({k: v for k, v in options.items() if v is not None})
    if config_file is None or recipe != "cpu":
        data["recipe"] = recipe
    if overrides:
        data["overrides"] = [*data.get("overrides", []), *overrides]
    if edit:
        data["edit"] = {**data.get("edit", {}), **_pairs(edit)}
    if "checkpoint" not in data:
        raise ConfigError("--checkpoint is required (or set it in --config)")
    return ServeConfig.from_dict(data)


def _pairs(items: list[str]) -> dict[str, Any]:
    """key=value strings -> dict, values parsed as JSON when they parse (numbers, booleans)."""
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
