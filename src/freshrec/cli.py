"""The `freshrec` command line: a thin layer over `freshrec.pipeline` and the stage APIs.

Every command takes `--recipe` (a built-in name or a YAML file) and `--set section.key=value`
overrides. User errors (`FreshrecError`) print one line and exit with code 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from freshrec.cli_support import RecipeOpt, SetOpt, console, friendly

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="freshrec: generative recommendation with semantic IDs that stays fresh.",
)


def _recipe(recipe: str, overrides: list[str] | None) -> Any:
    from freshrec.config import load_recipe

    return load_recipe(recipe, overrides or [])


@app.command()
@friendly
def prepare(recipe: RecipeOpt = "cpu", set_: SetOpt = None) -> None:
    """Load the dataset, split it by time, write the prepared data and print its stats."""
    from freshrec import pipeline

    pipeline.prepare(_recipe(recipe, set_))


@app.command()
@friendly
def tokenize(recipe: RecipeOpt = "cpu", set_: SetOpt = None) -> None:
    """Embed item texts, fit the SID tokenizer on warm items, assign new items, print the report."""
    from freshrec import pipeline

    r = _recipe(recipe, set_)
    pipeline.tokenize(r, pipeline.load_prepared(r))


@app.command()
@friendly
def train(
    recipe: RecipeOpt = "cpu",
    set_: SetOpt = None,
    name: Annotated[str | None, typer.Option(help="run name (default: <arch>-s<seed>)")] = None,
    resume: Annotated[bool, typer.Option(help="continue from the run's last epoch")] = False,
) -> None:
    """Train the recipe's model; keeps the best-on-validation checkpoint.

    Data-parallel: `torchrun --nproc-per-node N .venv/bin/freshrec train ...`."""
    from freshrec import pipeline
    from freshrec.train.distributed import init_from_env, is_main_process

    init_from_env()
    r = _recipe(recipe, set_)
    split = pipeline.load_prepared(r)
    tok, table = pipeline.load_tokenized(r)
    out = pipeline.train(r, split, tok, table, name=name, resume=resume)
    console.print(
        f"best epoch {out.result.best_epoch} (valid N@10 {out.result.best_valid:.4f}), "
        f"{out.result.sec_per_epoch:.1f} s/epoch -> {out.folder / 'best'}"
    )
    if r.fresh.calibrate and is_main_process():
        pipeline.calibrate(r, out.folder / "best")


@app.command()
@friendly
def calibrate(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint folder (or a run folder)")],
    recipe: RecipeOpt = "cpu",
    set_: SetOpt = None,
) -> None:
    """Fit the fused fresh-item ranker on validation requests into the checkpoint's
    fresh.json (`--set fresh.budget=0.02`, `--set fresh.valid_requests=null` for all)."""
    from freshrec import pipeline

    pipeline.calibrate(_recipe(recipe, set_), checkpoint)


@app.command()
@friendly
def evaluate(
    checkpoints: Annotated[list[Path], typer.Argument(help="checkpoint folders (…/best)")],
    recipe: RecipeOpt = "cpu",
    set_: SetOpt = None,
    baselines: Annotated[bool, typer.Option(help="also run the baselines")] = True,
    out: Annotated[str, typer.Option(help="report name under <work>/reports/")] = "evaluate",
) -> None:
    """Evaluate checkpoints (warm catalog, full catalog, the fused fresh-item ranker) and
    baselines on the test split."""
    from freshrec import pipeline

    r = _recipe(recipe, set_)
    paths = pipeline.evaluate(r, checkpoints, baselines=baselines, report_name=out)
    console.print(f"report: {paths['md']}\nplots: {paths['collapse']}, {paths['positions']}")


@app.command()
@friendly
def recommend(
    user: Annotated[str, typer.Option(help="user id as in the dataset")],
    checkpoint: Annotated[Path, typer.Option(help="checkpoint folder")],
    recipe: RecipeOpt = "cpu",
    set_: SetOpt = None,
    top_k: Annotated[int, typer.Option(help="number of items")] = 10,
    catalog: Annotated[str, typer.Option(help="warm | full | new")] = "full",
    edit: Annotated[
        list[str] | None,
        typer.Option(help="edit pack folder or id under <work>/edits/ (repeatable, in order)"),
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            help="fresh (GR beam + new-item channel) | beam (the GR model alone) | spec "
            "(speculative: draft + verify)"
        ),
    ] = "fresh",
    drafter: Annotated[str, typer.Option(help="spec mode drafter: text | self")] = "text",
    gamma: Annotated[
        float | None, typer.Option(help="spec mode acceptance threshold (mean SID log-prob)")
    ] = None,
    self_drafter: Annotated[
        Path | None, typer.Option(help="spec mode: heads saved by SelfDrafter.save")
    ] = None,
) -> None:
    """Recommend items for a user from their whole history, printing titles."""
    from freshrec import pipeline

    options: dict[str, Any] = {}
    if mode == "spec":
        options = {"drafter": drafter, "gamma": gamma, "self_drafter_dir": self_drafter}
    rows = pipeline.recommend_user(
        _recipe(recipe, set_),
        checkpoint,
        user,
        top_k,
        catalog,
        mode=mode,
        edit_packs=edit or [],
        **options,
    )
    for rank, (item_id, title, score, new) in enumerate(rows, 1):
        tag = " [new]" if new else ""
        console.print(f"{rank:>3}. {title}{tag}  ({item_id}, score {score:.3f})")


@app.command()
@friendly
def demo(recipe: RecipeOpt = "cpu", set_: SetOpt = None) -> None:
    """prepare -> tokenize -> train -> evaluate on the recipe's dataset (the README's main job)."""
    from freshrec import pipeline

    pipeline.demo(_recipe(recipe, set_))


def _register_stage_commands() -> None:
    from freshrec.edit.cli import register as register_edit
    from freshrec.merge.cli import register as register_merge
    from freshrec.replay.cli import register as register_replay
    from freshrec.serve.cli import register as register_serve

    register_edit(app)
    register_merge(app)
    register_replay(app)
    register_serve(app)


_register_stage_commands()


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
