"""The package's layers: no import circle among its modules, read from the source with `ast` (nothing is imported).

What counts as an import of a package module (an edge of the graph):

- every ``import`` and ``from ... import`` statement, also inside functions and methods (they run too, only later);
  those under ``if TYPE_CHECKING:`` do not count (they never run);
- ``from .x import y`` and ``import pkg.x``: an edge to the module ``x`` (``x.py``, or ``x/__init__.py`` for a
  package), and to ``x.y`` too where ``y`` is a submodule of the package ``x`` (``from . import x`` is an edge to
  ``x``);
- Python runs a package's ``__init__`` before any module under it, so ``from .engines.base import X`` is also an
  edge to ``engines/__init__.py``, except where the importing module lies inside that package itself (its
  ``__init__`` is already running then: ``executors/local.py``'s ``from .base import Executor`` is no edge to
  ``executors/__init__.py``). For the same reason the package's top ``__init__`` is never an edge's target from
  inside the package;
- a package's ``__init__`` imports its submodules only through what it imports itself.

A circle is a strongly connected component of more than one module, or a module that imports itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "genstruct_datasets"


def module_names(package: Path) -> dict[str, Path]:
    """Every module of `package` by its dotted name under the package (``"shards.job"``; ``""`` for the top
    ``__init__``, ``"shards"`` for ``shards/__init__.py``)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that can run: everywhere but in the body of ``if TYPE_CHECKING:``."""
    found = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
            continue
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            children = node.orelse
        stack.extend(children)
    return found


def imported_modules(name: str, path: Path, modules: dict[str, Path], top: str) -> set[str]:
    """The package modules that module `name` (at `path`) imports, by the rules of this file's docstring; `top` is
    the package's own name, for absolute imports."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if name else []
    own_package = here if is_package else here[:-1]
    targets: set[str] = set()

    def add(dotted: list[str], names: list[str]) -> None:
        module = ".".join(dotted)
        if module not in modules:
            return
        targets.add(module)
        for imported in names:  # `from pkg import submodule`
            sub = ".".join([*dotted, imported])
            if sub in modules:
                targets.add(sub)

    for node in _imports(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == top:
                    add(parts[1:], [])
        elif node.level:
            base = own_package[: len(own_package) - (node.level - 1)] if node.level > 1 else own_package
            add([*base, *(node.module.split(".") if node.module else [])], [alias.name for alias in node.names])
        elif node.module and node.module.split(".")[0] == top:
            add(node.module.split(".")[1:], [alias.name for alias in node.names])
    # Python runs the __init__ of each package on the way to a module, unless the importer is inside that package.
    for target in list(targets):
        parts = target.split(".")
        for depth in range(1, len(parts)):
            package = ".".join(parts[:depth])
            if not ".".join(here).startswith(package + ".") and ".".join(here) != package:
                targets.add(package)
    # The top __init__ encloses every module: it is running before any of them.
    targets.discard("")
    if name in targets and not is_package:
        return targets  # a module that imports itself: a circle of one
    targets.discard(name)
    return targets


def import_graph(package: Path) -> dict[str, set[str]]:
    """Each module of `package` (by dotted name) and the package modules it imports."""
    modules = module_names(package)
    return {name: imported_modules(name, path, modules, package.name) for name, path in modules.items()}


def import_circles(package: Path) -> list[list[str]]:
    """The import circles of `package`: for each strongly connected component of more than one module (or a module
    that imports itself), one circle through it, as ``[a, b, c, a]``; sorted, empty when there is none."""
    graph = import_graph(package)
    circles = []
    for component in _components(graph):
        start = min(component)
        if len(component) > 1 or start in graph[start]:
            circles.append(_circle_through(start, component, graph))
    return sorted(circles)


def _components(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
    return components


def _circle_through(start: str, component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest way from `start` back to itself inside `component` (breadth first)."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if child not in came_from:
                    came_from[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{start} is on no circle of {sorted(component)}")


def spelled(circles: list[list[str]]) -> str:
    return "\n".join(" -> ".join(name or "__init__" for name in circle) for circle in circles)


def test_no_import_circle():
    circles = import_circles(PACKAGE)
    assert circles == [], f"import circles among the package's modules:\n{spelled(circles)}"


LAYERS = [
    (
        "base",
        {"_atomic", "_checks", "_fingerprint", "_flags", "_memory", "_paths", "_sampling", "_tokens", "columns",
         "errors", "progress", "prompt", "runstats", "stage_counts"},
    ),
    ("models and engines", {"models", "engines", "engines.base", "engines._throttle", "engines._transformers",
                            "engines.openai_server", "engines.transformers_continuous", "engines.transformers_static",
                            "engines.vllm_engine"}),
    ("stages", {"sources", "passages", "generate", "parse", "score", "select", "dedup", "near_duplicates", "quality",
                "metrics", "metrics.genstruct_quality.genstruct_quality", "pipeline"}),
    ("filters", {"filters", "filters.base", "filters.minhash_dedup", "filters.rip", "filters.semantic_dedup",
                 "filters.decontaminate"}),
    ("recipe", {"recipe"}),
    ("checkpointing", {"hub_shards", "shards", "shards.hub", "shards.job", "shards.parts", "shards.store"}),
    ("executors", {"executors", "executors.base", "executors.local", "executors.ray", "executors.torchrun"}),
    ("builder", {"builder"}),
    ("report and publishing", {"report", "report.data", "report.text", "report.plot", "report.card", "publish",
                               "publish.folder", "publish.hub"}),
    ("run", {"run", "plan"}),
    ("front", {"", "cli", "demo", "testing"}),
]  # fmt: skip
"""The package's layers, bottom first, as docs/architecture.md draws them: a module imports nothing from a layer above
its own. Every module has its place here, so that a new one is placed on purpose."""


def test_every_module_imports_only_from_its_layer_and_below():
    graph = import_graph(PACKAGE)
    layer = {name: depth for depth, (_, names) in enumerate(LAYERS) for name in names}
    assert set(graph) - set(layer) == set(), "modules without a layer in LAYERS (and docs/architecture.md)"
    assert set(layer) - set(graph) == set(), "modules named in LAYERS that do not exist"
    upward = [
        f"{name} ({LAYERS[layer[name]][0]}) -> {imported} ({LAYERS[layer[imported]][0]})"
        for name in sorted(graph)
        for imported in sorted(graph[name])
        if layer[imported] > layer[name]
    ]
    assert upward == [], "imports of a layer above:\n" + "\n".join(upward)


def write(package: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    return package


def test_a_planted_circle_is_found_and_a_type_checking_import_is_not(tmp_path):
    package = write(
        tmp_path / "fake",
        {
            "__init__.py": "from .a import A\nfrom .sub import C\n",
            # a -> b at the top, b -> a inside a function: a circle all the same.
            "a.py": "from .b import B\nA = 1\n",
            "b.py": "B = 2\n\ndef late():\n    from .a import A\n    return A\n",
            # c -> d at the top, d -> c only for the type checker: no circle.
            "sub/__init__.py": "from .c import C\n",
            "sub/c.py": "from ..d import D\nC = 3\n",
            "d.py": (
                "from typing import TYPE_CHECKING\nimport typing\n\nif TYPE_CHECKING:\n    from .sub.c import C\n"
                "if typing.TYPE_CHECKING:\n    import fake.sub.c\nelse:\n    import fake.e\nD = 4\n"
            ),
            "e.py": "import os\nimport fake\n",
        },
    )
    assert import_graph(package)["d"] == {"e"}
    assert import_graph(package)["sub.c"] == {"d"}  # its own package's __init__ is already running
    assert import_circles(package) == [["a", "b", "a"]]
    assert spelled(import_circles(package)) == "a -> b -> a"


@pytest.mark.parametrize(
    ("files", "circle"),
    [
        pytest.param({"a.py": "from . import a\n"}, ["a", "a"], id="self-import"),
        pytest.param(
            {"x/__init__.py": "from .y import Y\n", "x/y.py": "Y = 1\n", "z.py": "def f():\n    import fake.x.y\n"},
            None,
            id="absolute-import-no-circle",
        ),
        pytest.param(
            # z imports x.y, which runs x/__init__ first; x/__init__ imports z: a circle through the package.
            {
                "x/__init__.py": "from ..z import Z\n",
                "x/y.py": "Y = 1\n",
                "z.py": "Z = 0\ndef f():\n    from .x.y import Y\n",
            },
            ["x", "z", "x"],
            id="through-a-package-init",
        ),
    ],
)
def test_other_shapes(tmp_path, files, circle):
    package = write(tmp_path / "fake", {"__init__.py": "", **files})
    assert import_circles(package) == ([circle] if circle else [])
