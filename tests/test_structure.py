"""The package's shape holds: stages import downwards only, no cycles, small modules and functions,
settings objects instead of wide signatures, the package's own modules imported at module level.

Read with ``ast`` (nothing is imported), counting imports inside functions and ``if TYPE_CHECKING:``
blocks as well, as ``shared/tools/structure.py`` does.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "lmeval_layerprune"
NAME = PKG.name

#: stage order: a module may import its own stage and the stages before it, never one after it
STAGES = (
    ("errors", "resources"),
    ("core",),
    ("methods",),
    ("checkpoint",),
    ("probes", "metrics"),
    ("lmeval",),
    ("search",),
    ("heal",),
    ("speed",),
    ("sweep",),
    ("report",),
    ("hub",),
    ("demo",),
    ("cli", "_autoload"),
)
#: function-local imports of the package's own modules that must stay lazy: the start-up hook runs in
#: every Python process of the environment and may import nothing but itself until lm-eval is imported
ALLOWED_LOCAL = {("_autoload", "lmeval"), ("_autoload", "lmeval.plugin")}
MAX_LOCAL_IMPORTS = 20
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 120
MAX_PARAMS = 8


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out[".".join(parts)] = path
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def _stage(module: str) -> int:
    head = module.split(".")[0] if module else ""
    for i, group in enumerate(STAGES):
        if head in group:
            return i
    return -1  # the package root (__init__: lazy attribute access only)


def _target(module: str, node: ast.ImportFrom | ast.Import) -> set[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".")
            is_pkg = MODULES[module].name == "__init__.py"
            base = base[: len(base) - node.level + (1 if is_pkg else 0)]
            prefix = ".".join([NAME, *base] + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
    out = set()
    for name in names:
        if not (name == NAME or name.startswith(NAME + ".")):
            continue
        inner = name[len(NAME) + 1 :] if name != NAME else ""
        while inner and inner not in MODULES:
            inner = inner.rpartition(".")[0]
        out.add(inner)
    return out


def _imports() -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    edges: dict[str, set[str]] = defaultdict(set)
    local: list[tuple[str, str]] = []
    for module, tree in TREES.items():
        inner = set()
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                inner |= {id(x) for x in ast.walk(fn) if isinstance(x, ast.Import | ast.ImportFrom)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                targets = _target(module, node) - {module}
                edges[module] |= targets
                if id(node) in inner:
                    local.extend((module, t) for t in targets)
    return edges, local


EDGES, LOCAL = _imports()


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in EDGES.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for module in MODULES:
        if module not in index:
            visit(module)
    assert cycles == []


def test_imports_point_down_the_stages() -> None:
    upward = [
        f"{a} -> {b}" for a, targets in EDGES.items() for b in targets if b and _stage(b) > _stage(a) and _stage(a) >= 0
    ]
    assert upward == [], "a lower stage imports a higher one"


def test_the_packages_own_modules_are_imported_at_module_level() -> None:
    kept = [(a, b) for a, b in LOCAL if (a, b) not in ALLOWED_LOCAL]
    assert len(LOCAL) <= MAX_LOCAL_IMPORTS
    assert kept == [], "import these at module level (only the start-up hook stays lazy)"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_stay_small(module: str) -> None:
    source = MODULES[module].read_text(encoding="utf-8")
    assert source.count("\n") <= MAX_MODULE_LINES, f"{module} has {source.count(chr(10))} lines"
    for fn in ast.walk(TREES[module]):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = fn.end_lineno - fn.lineno + 1
        assert length <= MAX_FUNCTION_LINES, f"{module}:{fn.name} is {length} lines"
        a = fn.args
        params = len(a.args) + len(a.kwonlyargs) + len(a.posonlyargs)
        params -= 1 if a.args and a.args[0].arg in ("self", "cls") else 0
        if not fn.name.startswith("_"):
            assert params <= MAX_PARAMS, f"{module}:{fn.name} takes {params} parameters: give it a settings object"
