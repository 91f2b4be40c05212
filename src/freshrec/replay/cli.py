"""`freshrec replay`: walk the validation and test periods step by step with update policies and
report quality per step and the CPU-seconds the updates cost (docs/REPLAY.md). Register the
command on the app with `register(app)`.

```
freshrec replay CKPT --policy static --policy edit --policy merge+edit --step-days 7 \\
    --max-steps 12 --max-requests 200 --option edit.edit.lam=300 --option merge.method=ties
```
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from pydantic import ValidationError
from rich.table import Table

from freshrec.cli_support import RecipeOpt, SetOpt, console, friendly
from freshrec.errors import ConfigError, validation_problems

__all__ = ["context_from_recipe", "parse_options", "register", "replay_command"]


def parse_options(options: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """{policy: settings} from `policy.key[.subkey]=value` options (values parsed as YAML)."""
    from freshrec.config import parse_value

    out: dict[str, dict[str, Any]] = {}
    for option in options or []:
        key, sep, value = option.partition("=")
        path = [k.strip() for k in key.split(".")]
        if not sep or len(path) < 2 or not all(path):
            raise ConfigError(f"option {option!r}: expected <policy>.<key>=<value>")
        node = out.setdefault(path[0], {})
        for k in path[1:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"option {option!r}: {k} is not a settings section")
        node[path[-1]] = parse_value(value)
    return out


def context_from_recipe(recipe: Any, checkpoint: Path, work: Path | None = None) -> Any:
    """The `ReplayContext` of a recipe's workspace (prepared split, embeddings, tokenizer) and a
    checkpoint (its fresh.json calibration, if any): SIDs of training-period items only (the
    others are assigned step by step as they appear)."""
    from freshrec import pipeline
    from freshrec.model.checkpoint import resolve_checkpoint
    from freshrec.recommend.fresh import FreshParams
    from freshrec.replay import ReplayContext
    from freshrec.replay.timeline import item_first_seen
    from freshrec.semid.table import SidTable

    folder = resolve_checkpoint(checkpoint)
    split = pipeline.load_prepared(recipe)
    tok, table = pipeline.load_tokenized(recipe)
    sids = table.sids.copy()
    sids[np.asarray(split.is_new, dtype=bool)] = -1
    return ReplayContext(
        split=split,
        emb=pipeline.item_embeddings(recipe, split),
        tokenizer=tok,
        warm_table=SidTable(sids, table.max_collision),
        checkpoint=folder,
        train=recipe.train,
        fresh=FreshParams.load_or_default(folder),
        work=work or pipeline.workspace(recipe).reports("replay") / "work",
        first_seen=item_first_seen(split),
        beam_size=recipe.eval.beam_size,
        batch_size=recipe.eval.batch_size,
        prompt_new_items=recipe.eval.prompt_new_items,
        seed=recipe.train.seed,
    )


def summary_table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="deployment replay (R@20 over each period's scored requests)")
    for col in ("policy", "part", "steps", "requests", "R@20", "warm R@20", "cold R@20"):
        table.add_column(col)
    table.add_column("update cpu-s", justify="right")
    table.add_column("peak MiB", justify="right")

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    for res in results:
        for part, out in res["parts"].items():
            s = out["summary"]
            table.add_row(
                res["policy"],
                part,
                str(s["n_steps"]),
                str(s["n_requests"]),
                f(s["mean_recall20"]),
                f(s["mean_warm_recall20"]),
                f(s["mean_cold_recall20"]),
                f"{s['update_cpu_seconds']:.1f}",
                f"{s['peak_mem_mb']:.0f}",
            )
    return table


@friendly
def replay_command(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint folder (…/best or a run folder)")],
    policy: Annotated[
        list[str] | None,
        typer.Option(
            help="update policy (static, edit, finetune, merge, retrain; a+b combines); repeatable"
        ),
    ] = None,
    step_days: Annotated[float, typer.Option(help="step width in days of the data's time")] = 1.0,
    parts: Annotated[str, typer.Option(help="periods to walk: valid,test")] = "valid,test",
    max_steps: Annotated[
        int | None, typer.Option(help="only the first N steps of each period")
    ] = None,
    max_requests: Annotated[
        int | None, typer.Option(help="seeded sample of at most N requests scored per step")
    ] = None,
    align: Annotated[
        str,
        typer.Option(help="with --max-steps: walk each period's first (start) or last (end) steps"),
    ] = "start",
    option: Annotated[
        list[str] | None,
        typer.Option(help="policy setting <policy>.<key>=<value>, e.g. edit.edit.lam=300"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="JSON report (default <work>/reports/replay/replay.json)")
    ] = None,
    recipe: RecipeOpt = "cpu",
    set_: SetOpt = None,
) -> None:
    """Replay the validation and test periods step by step: score each step's requests with
    the deployed model (fresh mode), then update it with each policy; print R@20 (overall,
    warm, cold) and the update cost, and write every step to a JSON report."""
    from freshrec import pipeline
    from freshrec.atomic import write_json
    from freshrec.config import load_recipe
    from freshrec.replay import ReplayConfig, make_policy, replay

    r = load_recipe(recipe, set_ or [])
    settings = parse_options(option)
    names = policy or ["static"]
    unused = sorted(set(settings) - {part for n in names for part in n.split("+")})
    if unused:
        raise ConfigError(f"--option given for {unused}, not in any --policy {names}")
    policies = [
        make_policy(n, {k: v for k, v in settings.items() if k in n.split("+")}) for n in names
    ]
    try:
        cfg = ReplayConfig(
            step_days=step_days,
            parts=tuple(p.strip() for p in parts.split(",") if p.strip()),  # type: ignore[arg-type]
            max_steps=max_steps,
            max_requests=max_requests,
            align=align,  # type: ignore[arg-type]
        )
    except ValidationError as exc:
        raise ConfigError(f"replay settings: {validation_problems(exc)}") from None
    ctx = context_from_recipe(r, checkpoint)
    results = [replay(ctx, p, cfg, progress=console.log) for p in policies]
    path = out or pipeline.workspace(r).reports("replay") / "replay.json"
    write_json(path, {"results": results})
    console.print(summary_table(results))
    console.print(f"report: {path}")


def register(app: typer.Typer) -> None:
    """Add `freshrec replay` to `app`."""
    app.command("replay")(replay_command)
