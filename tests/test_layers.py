"""The packages form layers that only point down (docs/ARCHITECTURE.md draws them).

Every module of the project (not the tests) is parsed with `ast`; each import, wherever it is (top level, inside a
function, under `if TYPE_CHECKING:`), and each "package.module:callable" string (the lazily imported subcommands
and embedder factories) is mapped to the top-level package it names. A package may use its own layer's packages
and those below it; an import of a higher layer fails, and so does any cycle between packages.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Bottom first. A package may import its own layer and the layers below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),  # contracts, I/O, media, Spark session and I/O, progress, timeline, faults, machine, metric math
    ("sources",),  # the generated world, the logs mapping (MovieLens), validation
    ("mining",),  # pair mining
    ("embedding",),  # SAIL embedding training, inference, batch embed, semantic IDs, ANN
    ("export",),  # feature export (Feast)
    ("recsys",),  # ranking samples, ranker, evaluation of the ranker
    ("offline_eval",),  # offline A/B, OPE, run summary, report
    ("jobs",),  # the pipeline and the CLI
    ("benchmarks", "scripts"),  # tools over the whole project
)

_ENTRY = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.\w+)+):\w+$")  # "package.module:callable"


@dataclass(frozen=True)
class Use:
    source: str  # package of the importing file
    target: str  # package imported
    where: str  # "path:line: import text"


def project_packages(root: Path) -> dict[str, Path]:
    """Top-level packages (folders with __init__.py) and the scripts folder."""
    found = {p.parent.name: p.parent for p in root.glob("*/__init__.py") if p.parent.name != "tests"}
    if (root / "scripts").is_dir():
        found["scripts"] = root / "scripts"
    return found


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]  # relative imports stay inside their own package
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and (m := _ENTRY.match(node.value)):
        return [m["module"]]
    return []


def package_uses(root: Path) -> list[Use]:
    """Every use of one project package by another, with the file, line and text of the import."""
    packages = project_packages(root)
    uses = []
    for name, folder in sorted(packages.items()):
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source, filename=str(path))
            for node in ast.walk(tree):
                for module in _imported(node):
                    target = module.split(".")[0]
                    if target in packages and target != name:
                        text = ast.get_source_segment(source, node) or module
                        where = f"{path.relative_to(root)}:{node.lineno}: {text.splitlines()[0]}"
                        uses.append(Use(name, target, where))
    return uses


def layer_problems(root: Path, layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    """Packages in no layer, imports of a higher layer, and cycles between packages, one line each."""
    rank = {pkg: i for i, layer in enumerate(layers) for pkg in layer}
    problems = [
        f"package {p!r} is in no layer of tests/test_layers.py" for p in project_packages(root) if p not in rank
    ]
    uses = package_uses(root)
    for u in uses:
        if u.source in rank and u.target in rank and rank[u.target] > rank[u.source]:
            problems.append(f"upward import: {u.where} ({u.source} imports the higher layer {u.target})")
    problems += _cycles(uses)
    return problems


def _cycles(uses: list[Use]) -> list[str]:
    """One line per cycle between packages found by a depth-first search, naming an import on each edge."""
    edges: dict[str, dict[str, str]] = defaultdict(dict)
    for u in uses:
        edges[u.source].setdefault(u.target, u.where)
    out, state, stack = [], {}, []  # state: 1 on the stack, 2 done

    def visit(p: str) -> None:
        state[p] = 1
        stack.append(p)
        for q in sorted(edges[p]):
            if state.get(q) == 1:
                cycle = stack[stack.index(q) :] + [q]
                steps = "; ".join(edges[a][b] for a, b in zip(cycle, cycle[1:], strict=False))
                out.append(f"import cycle {' -> '.join(cycle)}: {steps}")
            elif q not in state:
                visit(q)
        stack.pop()
        state[p] = 2

    for p in sorted(edges):
        if p not in state:
            visit(p)
    return out


def test_layers_only_point_down():
    problems = layer_problems(ROOT)
    assert not problems, "\n".join(problems)


def test_every_layer_package_exists():
    assert set(project_packages(ROOT)) == {p for layer in LAYERS for p in layer}


def test_an_upward_import_and_a_cycle_are_named(tmp_path):
    # Given a base package that imports the top one, which imports the base
    for pkg, body in {"core": "from jobs.cli import main\n", "jobs": "", "scripts": None}.items():
        if body is None:
            continue
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
        (tmp_path / pkg / "x.py").write_text(body)
    (tmp_path / "jobs" / "cli.py").write_text("def f():\n    import core.x\n\n\nmain = 'core.x:main'\n")
    # When the layers are checked
    problems = layer_problems(tmp_path, (("core",), ("jobs",)))
    # Then the upward import and the cycle are both named with their file and line
    assert "upward import: core/x.py:1: from jobs.cli import main (core imports the higher layer jobs)" in problems
    cycle = "import cycle core -> jobs -> core: core/x.py:1"
    assert any(p.startswith(cycle) and "jobs/cli.py:2" in p for p in problems)
