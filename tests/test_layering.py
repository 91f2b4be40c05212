"""Static checks of the package layout (docs/ARCHITECTURE.md): stages import only downward,
`beam_search` is called only inside recommend/, and model internals stay inside model/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "src" / "freshrec"
LAYERS = [
    "data",
    "embed",
    "semid",
    "model",
    "recommend",
    "train",
    "evaluate",
    "edit",
    "merge",
    "replay",
    "serve",
]
GLUE = {"pipeline", "cli", "workspace", "config", "cli_support"}
# Known upward imports, to be removed: the checkpoint grid builder trains its runs through the
# pipeline with run recipes.
KNOWN = {
    ("src/freshrec/merge/grid/build.py", "freshrec.config"),
    ("src/freshrec/merge/grid/build.py", "freshrec.pipeline"),
}


def _stage(module: str) -> str | None:
    """The stage (or glue module) of a dotted `freshrec.x...` module name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "freshrec" else None


def _runtime_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every `freshrec` import outside `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "freshrec":
            out += [(node.lineno, f"freshrec.{a.name}") for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in out if m == "freshrec" or m.startswith("freshrec.")]


def _files(stage: str) -> list[Path]:
    return sorted((PKG / stage).rglob("*.py"))


@pytest.mark.parametrize("stage", LAYERS)
def test_stages_import_only_downward(stage: str) -> None:
    """Shared modules (errors, atomic, manifest, registry) anywhere; `workspace` (the work folder's
    layout) from recommend/ up; a stage's `cli.py` (its commands on the app) and the service's
    settings (run recipes) may use the glue."""
    shared = {"errors", "atomic", "manifest", "registry", None}
    below = set(LAYERS[: LAYERS.index(stage) + 1]) | shared
    if LAYERS.index(stage) >= LAYERS.index("recommend"):
        below.add("workspace")
    wrong = []
    for path in _files(stage):
        allowed = below | GLUE if path.name == "cli.py" else below
        if stage == "serve":
            allowed = allowed | {"config"}
        rel = str(path.relative_to(REPO))
        wrong += [
            f"{rel}:{line} imports {module}"
            for line, module in _runtime_imports(path)
            if _stage(module) not in allowed and (rel, module) not in KNOWN
        ]
    assert wrong == []


def test_model_imports_nothing_above_it() -> None:
    above = {"recommend", "train", "evaluate", "edit", "merge", "replay", "serve", *GLUE}
    wrong = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in _files("model")
        for line, module in _runtime_imports(path)
        if _stage(module) in above
    ]
    assert wrong == []


def _calls(path: Path, name: str) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == name)
            or (isinstance(node.func, ast.Attribute) and node.func.attr == name)
        )
    ]


def test_beam_search_is_called_only_inside_recommend() -> None:
    sources = [*PKG.rglob("*.py"), *(REPO / "benchmarks").glob("*.py")]
    outside = [
        f"{path.relative_to(REPO)}:{line}"
        for path in sources
        if PKG / "recommend" not in path.parents
        for line in _calls(path, "beam_search")
    ]
    assert outside == []


def test_model_internals_stay_in_model() -> None:
    """No `arch ==` branches and no `.t5` / `.llama` attribute access outside model/."""
    wrong = []
    for path in [*PKG.rglob("*.py"), *(REPO / "benchmarks").glob("*.py")]:
        if PKG / "model" in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("t5", "llama"):
                wrong.append(f"{path.relative_to(REPO)}:{node.lineno} .{node.attr}")
            if (
                isinstance(node, ast.Compare)
                and isinstance(node.left, ast.Attribute)
                and node.left.attr == "arch"
            ):
                wrong.append(f"{path.relative_to(REPO)}:{node.lineno} arch comparison")
    assert wrong == []
