"""MMGRid checkpoint grid: one checkpoint per (time phase x domain), trained incrementally.

Time: the training period of the time split (docs/EVAL.md: the first 80% of the time span) is cut
into a **pretrain** period and later phases `phase1 .. phaseK` at `GridConfig.phases`
(fractions of the training-period interactions, or of its time span). Validation and test
periods are those of the time split, untouched.

Domains: disjoint groups of items by a primary label, the first listed genre (MovieLens
`Genres: ...`) or category (Amazon `Categories: ...`, entry `label_level`) of the item text.
A domain's data is its items' interactions only, so its users' sequences (and request
histories) hold only that domain's items. The track `all` (every item) is trained too.

Checkpoints (all ordinary `freshrec` checkpoints, one shared SID tokenizer fitted on the
pretrain-period items; later items get SIDs without refitting, so parameters line up):

```
init                          the initial weights (what pretrain started from)
pretrain                      all items, targets in the pretrain period     <- init
phase1-<d>, for each track d  d's items, targets in phase 1                  <- pretrain
phase2-<d>                    d's items, targets in phase 2                  <- phase1-<d>
```

Each phase continues from the previous checkpoint of its track (`pipeline.train(init_from=)`),
as incremental training does in production, and keeps its best epoch on its own context's
validation-period requests (`validate_on="valid"`, default) or on the requests of the window
after its own (`"next"`: pretrain on phase 1, ..., the last phase on the validation period).

Layout of `out_dir` (a freshrec work folder, so `freshrec evaluate --set work_dir=<out_dir>`
scores any grid or merged checkpoint against the grid's tokenizer):

```
out_dir/manifest.json                  contexts, parents, data windows, metrics (atomic writes)
out_dir/<dataset>/prepared/            the time split (docs/EVAL.md)
out_dir/<dataset>/tokenizer/           the shared tokenizer + SID table
out_dir/<dataset>/checkpoints/<name>/best/
```

Modules: `config` (GridConfig, phase names), `domains` (primary labels -> domains), `windows`
(phase bounds, context splits, window examples), `manifest` (Grid, GridEntry, load_grid),
`build` (build_grid).
"""

from freshrec.merge.grid.build import build_grid
from freshrec.merge.grid.config import ALL, GridConfig, phase_names
from freshrec.merge.grid.domains import assign_domains, auto_domains, item_labels, label_counts
from freshrec.merge.grid.manifest import MANIFEST, Grid, GridEntry, load_grid
from freshrec.merge.grid.windows import (
    context_split,
    phase_bounds,
    window_examples,
    window_positions,
)

__all__ = [
    "ALL",
    "MANIFEST",
    "Grid",
    "GridConfig",
    "GridEntry",
    "assign_domains",
    "auto_domains",
    "build_grid",
    "context_split",
    "item_labels",
    "label_counts",
    "load_grid",
    "phase_bounds",
    "phase_names",
    "window_examples",
    "window_positions",
]
