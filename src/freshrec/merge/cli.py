"""`freshrec grid` and `freshrec merge`: typer commands over `build_grid` and
`merge_checkpoints`. Register them on the app with `register(app)`.

```
freshrec grid runs/grid --set model.recipe=causal_cpu \\
    --domain action=Action,Adventure --domain comedy=Comedy,Animation --phases 0.6,0.8
freshrec merge examples/merge/ties.yaml runs/merged
freshrec evaluate runs/merged --set work_dir=runs/grid --set model.recipe=causal_cpu
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from freshrec.cli_support import RecipeOpt, SetOpt, console, friendly
from freshrec.errors import ConfigError

__all__ = ["grid", "merge", "register"]


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


@friendly
def merge(
    recipe: Annotated[Path, typer.Argument(help="merge recipe YAML (mergekit shape)")],
    out_dir: Annotated[Path, typer.Argument(help="output checkpoint folder")],
    overwrite: Annotated[bool, typer.Option(help="replace OUT_DIR if it exists")] = False,
    progress: Annotated[bool, typer.Option(help="print per-key progress to stderr")] = True,
) -> None:
    """Merge checkpoints per RECIPE (merge_method: linear, task_arithmetic, ties, dare_linear,
    dare_ties or another registered method), streaming one tensor at a time; OUT_DIR is an
    ordinary checkpoint."""
    from freshrec.merge.recipe import load_recipe
    from freshrec.merge.streaming import merge_checkpoints

    parsed = load_recipe(recipe)
    if out_dir.exists() and not overwrite:
        raise ConfigError(f"{out_dir} already exists; pass --overwrite to replace it")
    report = merge_checkpoints(parsed, out_dir, progress=progress, overwrite=True)
    table = Table(title=f"merge ({report.method})", show_header=False)
    table.add_row("output", str(report.out_dir))
    table.add_row("base", str(parsed.base_model) if parsed.base_model else "-")
    for path, w, d in zip(parsed.model_paths(), parsed.weights(), parsed.densities(), strict=True):
        table.add_row("model", f"{path}  (weight {w:g}, density {d:g})")
    table.add_row("lambda / normalize", f"{parsed.lam:g} / {parsed.normalize}")
    table.add_row(
        "keys", f"{report.keys} ({report.merged_keys} merged, {report.copied_keys} copied)"
    )
    table.add_row("output size", _mib(report.output_bytes))
    table.add_row("peak RSS growth", _mib(report.peak_rss_delta_bytes))
    table.add_row("seconds", f"{report.seconds:.3f}")
    console.print(table)


def _grid_options(
    grid_file: Path | None,
    domain: list[str] | None,
    n_domains: int | None,
    phases: str | None,
    phase_unit: str | None,
    pretrain_epochs: int | None,
    phase_epochs: int | None,
    phase_lr: float | None,
    valid_requests: int | None,
    include_all: bool | None,
    validate_on: str | None = None,
) -> Any:
    """GridConfig from an optional YAML file, overridden by the command-line options."""
    import yaml

    from freshrec.merge.grid import GridConfig

    data: dict[str, Any] = {}
    if grid_file is not None:
        if not grid_file.is_file():
            raise ConfigError(f"{grid_file}: grid options file not found")
        try:
            data = yaml.safe_load(grid_file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{grid_file}: malformed YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{grid_file}: expected a mapping of grid options")
    if domain:
        groups: dict[str, list[str]] = {}
        for spec in domain:
            name, sep, labels = spec.partition("=")
            parts = [s.strip() for s in labels.split(",") if s.strip()]
            if not sep or not name.strip():
                raise ConfigError(f"--domain {spec!r}: expected NAME=Label1,Label2")
            groups[name.strip()] = parts
        data["domains"] = groups
    if phases is not None:
        try:
            data["phases"] = [float(x) for x in phases.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--phases {phases!r}: expected fractions like 0.6,0.8") from None
    given = {
        "n_domains": n_domains,
        "phase_unit": phase_unit,
        "pretrain_epochs": pretrain_epochs,
        "phase_epochs": phase_epochs,
        "phase_lr": phase_lr,
        "valid_requests": valid_requests,
        "include_all": include_all,
        "validate_on": validate_on,
    }
    data.update({k: v for k, v in given.items() if v is not None})
    return GridConfig.parse(data, source=str(grid_file) if grid_file else "grid options")


@friendly
def grid(
    out_dir: Annotated[Path, typer.Argument(help="grid folder (manifest + work folder)")],
    recipe: RecipeOpt = "cpu",
    set_: SetOpt = None,
    grid_file: Annotated[
        Path | None, typer.Option("--grid", help="YAML file of grid options (GridConfig)")
    ] = None,
    domain: Annotated[
        list[str] | None,
        typer.Option(help="NAME=Label1,Label2 (primary genres/categories; repeatable)"),
    ] = None,
    n_domains: Annotated[
        int | None, typer.Option("--domains", help="auto-group labels into N similar domains")
    ] = None,
    phases: Annotated[
        str | None, typer.Option(help="boundaries pretrain|phase1|..., e.g. 0.6,0.8")
    ] = None,
    phase_unit: Annotated[str | None, typer.Option(help="interactions | time")] = None,
    pretrain_epochs: Annotated[int | None, typer.Option()] = None,
    phase_epochs: Annotated[int | None, typer.Option()] = None,
    phase_lr: Annotated[float | None, typer.Option(help="lr of later phases")] = None,
    valid_requests: Annotated[int | None, typer.Option(help="per-epoch validation")] = None,
    validate_on: Annotated[
        str | None, typer.Option(help="valid (validation period) | next (the next window)")
    ] = None,
    include_all: Annotated[
        bool | None, typer.Option("--all/--no-all", help="train the all-items track")
    ] = None,
    rebuild: Annotated[bool, typer.Option(help="retrain every checkpoint")] = False,
) -> None:
    """Train the MMGRid checkpoint grid: pretrain, then phases 1..K per domain, each continued
    from the previous checkpoint; one shared SID tokenizer; writes OUT_DIR/manifest.json."""
    from freshrec.config import load_recipe as load_run_recipe
    from freshrec.merge.grid import MANIFEST, build_grid

    cfg = _grid_options(
        grid_file,
        domain,
        n_domains,
        phases,
        phase_unit,
        pretrain_epochs,
        phase_epochs,
        phase_lr,
        valid_requests,
        include_all,
        validate_on,
    )
    built = build_grid(load_run_recipe(recipe, set_ or []), out_dir, cfg, resume=not rebuild)
    table = Table(title=f"grid {out_dir} ({built.dataset})")
    for col in ("checkpoint", "parent", "window", "targets", "valid N@10", "seconds"):
        table.add_column(col)
    for e in built.entries.values():
        w, m = e.window, e.metrics
        span = f"{w['start_iso'][:10]} .. {w['end_iso'][:10]}" if w else "-"
        score = m.get("valid_ndcg10")
        table.add_row(
            e.name,
            e.parent or "-",
            span,
            str(w.get("n_targets", "-")),
            f"{score:.4f}" if isinstance(score, float) else "-",
            f"{m['train_seconds']:.0f}" if "train_seconds" in m else "-",
        )
    console.print(table)
    console.print(
        f"manifest: {out_dir / MANIFEST}; evaluate with "
        f"--set work_dir={out_dir} (the grid's tokenizer)"
    )


def register(app: typer.Typer) -> None:
    """Add `grid` and `merge` to the `freshrec` app."""
    app.command()(grid)
    app.command()(merge)
