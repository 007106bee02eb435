"""The layout's promises, checked on the source: faces once, async I/O, no cycles, sizes.

Every check reads ``src/tipkit`` with :mod:`ast` (nothing is imported). Each
has a ``KNOWN_*`` list of what failed when the check was written, while the
primitives were still being refactored: a violation on the list passes, a new
one fails. The lists must be emptied as the refactoring lands (an entry that no
longer fails can simply be deleted).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

V = TypeVar("V")

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "tipkit"

# -- what failed when each check was written (to be emptied) --------------------------

KNOWN_FACE_OVERRIDES: list[str] = []
"""``module.Class.method``: a Guard/Scope/Keyed subclass outside _core writing a face."""

KNOWN_SYNC_STORE_CALLS_IN_ASYNC: list[str] = []
"""``module:function:line store.method``: an async def calling a sync store method."""

KNOWN_IMPORT_CYCLES: list[tuple[str, ...]] = []
"""Sorted module names of one strongly connected component of module-level imports."""

KNOWN_UPWARD_IMPORTS_FROM_CORE: list[str] = []
"""``tipkit._core.module -> imported module``."""

KNOWN_LONG_MODULES: list[str] = []
"""Modules over MAX_MODULE_LINES lines."""

KNOWN_LONG_CLASSES: list[str] = []
"""``module.Class`` over MAX_CLASS_LINES lines."""

MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 450

FACES = frozenset(
    {"_wrap_sync", "_wrap_async", "__enter__", "__exit__", "__aenter__", "__aexit__"}
    | {"call", "acall"}
)
FACE_BASES = frozenset({"Guard", "Scope", "Keyed"})
"""The _core bases whose faces are written once in _core."""

# Layers _core may import from: itself, and the foundation beside it.
CORE_MAY_IMPORT = ("tipkit._core", "tipkit.clock", "tipkit.errors", "tipkit.telemetry")


# -- reading the source ----------------------------------------------------------------


def _modules() -> dict[str, Path]:
    """Return every module of the package by dotted name (a package is its __init__)."""
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Yield imports run when the module is imported: not in functions, not TYPE_CHECKING."""
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node):
                stack.extend(node.body)
            stack.extend(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                stack.extend(block)
            for handler in node.handlers:
                stack.extend(handler.body)
        elif isinstance(node, ast.With):
            stack.extend(node.body)


def _all_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """Return the tipkit modules *node* (in *module*) imports.

    ``from tipkit.x import _y`` imports the module ``tipkit.x._y`` when there is
    one, else ``tipkit.x``.
    """
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in MODULES}
    base = node.module or ""
    if node.level:
        package = module.split(".")
        if MODULES[module].name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    found = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in MODULES:
            found.add(sub)
        elif base in MODULES:
            found.add(base)
    return found


def _graph() -> dict[str, set[str]]:
    return {
        name: {
            target
            for node in _module_level_imports(tree)
            for target in _targets(name, node)
            if target != name
        }
        for name, tree in TREES.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """Return the strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[tuple[str, ...]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _classes(
    trees: dict[str, ast.Module] | None = None,
) -> dict[tuple[str, str], ast.ClassDef]:
    return {
        (module, node.name): node
        for module, tree in (TREES if trees is None else trees).items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }


def _base_names(node: ast.ClassDef) -> set[str]:
    names = set()
    for base in node.bases:
        target = base.value if isinstance(base, ast.Subscript) else base
        if isinstance(target, ast.Name):
            names.add(target.id)
        elif isinstance(target, ast.Attribute):
            names.add(target.attr)
    return names


def _face_subclasses(
    classes: dict[tuple[str, str], ast.ClassDef],
) -> set[tuple[str, str]]:
    """Return (module, class) of every class deriving from a _core face base.

    Bases are matched by name, to a fixed point (``class B(A)`` with ``A`` a
    Guard subclass anywhere in the package is one too).
    """
    derived = set(FACE_BASES)
    while True:
        more = {
            name
            for (module, name), node in classes.items()
            if name not in derived
            and not module.startswith("tipkit._core")
            and _base_names(node) & derived
        }
        if not more:
            break
        derived |= more
    return {
        (module, name)
        for (module, name), node in classes.items()
        if not module.startswith("tipkit._core") and _base_names(node) & derived
    }


def _sync_store_methods() -> frozenset[str]:
    """Return the Store protocol's sync method names (from stores/_protocol.py)."""
    tree = TREES["tipkit.stores._protocol"]
    return frozenset(
        item.name
        for node in tree.body
        if isinstance(node, ast.ClassDef) and node.name.endswith("Store")
        for item in node.body
        if isinstance(item, ast.FunctionDef) and not item.name.startswith("_")
    )


def _storeish(node: ast.expr) -> bool:
    """Whether an expression names a store: ``store``, ``self._store``, ``x.store``."""
    text = ast.unparse(node).lower()
    last = text.rsplit(".", 1)[-1]
    return "store" in last


def _calls_in_async(fn: ast.AsyncFunctionDef) -> Iterator[ast.Call]:
    """Yield calls made by *fn* itself (not by functions or lambdas defined in it)."""
    stack: list[ast.AST] = list(fn.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Call):
            yield node
        stack.extend(ast.iter_child_nodes(node))


# -- the checks ------------------------------------------------------------------------


def face_overrides(trees: dict[str, ast.Module] | None = None) -> list[str]:
    """List ``module.Class.method`` for every face written outside _core."""
    classes = _classes(trees)
    return sorted(
        f"{module}.{name}.{item.name}"
        for module, name in _face_subclasses(classes)
        for item in classes[module, name].body
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
        and item.name in FACES
    )


def sync_store_calls_in_async() -> list[str]:
    """List every ``<store>.<sync method>(`` call made directly inside an async def."""
    sync = _sync_store_methods()
    found = []
    for module, tree in TREES.items():
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.AsyncFunctionDef):
                continue
            for call in _calls_in_async(fn):
                func = call.func
                if (
                    isinstance(func, ast.Attribute)
                    and func.attr in sync
                    and _storeish(func.value)
                ):
                    found.append(
                        f"{module}:{fn.name}:{call.lineno} "
                        f"{ast.unparse(func.value)}.{func.attr}"
                    )
    return sorted(found)


def upward_imports_from_core() -> list[str]:
    """List imports (any kind, anywhere) from _core into a layer above it."""
    return sorted(
        f"{module} -> {target}"
        for module, tree in TREES.items()
        if module.startswith("tipkit._core")
        for node in _all_imports(tree)
        for target in _targets(module, node)
        if not target.startswith(CORE_MAY_IMPORT)
    )


def long_modules() -> list[str]:
    """List modules over MAX_MODULE_LINES lines."""
    return sorted(
        name
        for name, path in MODULES.items()
        if len(path.read_text().splitlines()) > MAX_MODULE_LINES
    )


def long_classes() -> list[str]:
    """List classes over MAX_CLASS_LINES lines."""
    return sorted(
        f"{module}.{name}"
        for (module, name), node in _classes().items()
        if (node.end_lineno or node.lineno) - node.lineno + 1 > MAX_CLASS_LINES
    )


def _new(found: list[V], known: list[V]) -> list[V]:
    return [item for item in found if item not in known]


def test_faces_are_written_once_in_core() -> None:
    """No Guard, Scope or Keyed subclass outside _core defines a face of its own."""
    assert [] == _new(face_overrides(), KNOWN_FACE_OVERRIDES)


def test_async_defs_never_call_a_sync_store_method() -> None:
    """No async def calls a sync method of the Store protocol on a store directly."""
    found = sync_store_calls_in_async()
    assert [] == _new(found, KNOWN_SYNC_STORE_CALLS_IN_ASYNC)


def test_module_level_imports_form_no_cycle() -> None:
    """Module-level imports (not TYPE_CHECKING, not in functions) form no cycle."""
    assert [] == _new(_cycles(_graph()), KNOWN_IMPORT_CYCLES)


def test_core_imports_nothing_above_it() -> None:
    """_core imports only _core, clock, errors and telemetry: no stores, flags, primitives."""
    found = upward_imports_from_core()
    assert [] == _new(found, KNOWN_UPWARD_IMPORTS_FROM_CORE)


def test_modules_and_classes_stay_small() -> None:
    """No module over 600 lines, no class over 450 lines."""
    assert ([], []) == (
        _new(long_modules(), KNOWN_LONG_MODULES),
        _new(long_classes(), KNOWN_LONG_CLASSES),
    )


# -- the checks catch what they are for --------------------------------------------------


def test_face_check_follows_subclasses_across_modules() -> None:
    """A face written by a subclass of a Guard subclass is found; _core's own are not."""
    trees = {
        "tipkit._core._guard": ast.parse("class Guard:\n    def call(self): ..."),
        "tipkit.a": ast.parse("class A(Guard[int]):\n    def _step(self): ..."),
        "tipkit.b": ast.parse(
            "class B(a.A):\n    async def __aenter__(self): ...\n"
            "class Other:\n    def call(self): ..."
        ),
    }
    assert ["tipkit.b.B.__aenter__"] == face_overrides(trees)


def test_cycle_finder_finds_a_cycle_and_ignores_a_chain() -> None:
    """Tarjan over a toy graph: a <-> b is a cycle, c -> a is not part of it."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}, "d": set()}
    assert [("a", "b")] == _cycles(graph)


def test_import_targets_resolve_submodules_and_skip_type_checking() -> None:
    """`from tipkit._core import _scope` targets the submodule; TYPE_CHECKING is skipped."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "from tipkit._core import _scope, nothing_here\n"
        "if TYPE_CHECKING:\n"
        "    from tipkit.stores import Store\n"
        "def f():\n"
        "    import tipkit.flags\n"
    )
    targets = {
        t
        for node in _module_level_imports(tree)
        for t in _targets("tipkit.bulkhead", node)
    }
    assert {"tipkit._core._scope", "tipkit._core"} == targets


def test_sync_store_call_heuristic() -> None:
    """A sync store method called in an async def is found; awaited async twins are not."""
    fn = ast.parse(
        "async def f(self):\n"
        "    self._store.get('ns', 'k')\n"
        "    await self._store.aget('ns', 'k')\n"
        "    def inner():\n"
        "        self._store.set('ns', 'k', 1)\n"
        "    cache.get('k')\n"
    ).body[0]
    assert isinstance(fn, ast.AsyncFunctionDef)
    sync = _sync_store_methods()
    hits = [
        ast.unparse(call.func)
        for call in _calls_in_async(fn)
        if isinstance(call.func, ast.Attribute)
        and call.func.attr in sync
        and _storeish(call.func.value)
    ]
    assert ["self._store.get"] == hits


def test_known_lists_name_real_things() -> None:
    """Every KNOWN_* entry names a module of the package (so typos do not hide failures)."""
    named = [
        *(entry.split(":")[0] for entry in KNOWN_SYNC_STORE_CALLS_IN_ASYNC),
        *(entry.split(" -> ")[0] for entry in KNOWN_UPWARD_IMPORTS_FROM_CORE),
        *(module for cycle in KNOWN_IMPORT_CYCLES for module in cycle),
        *KNOWN_LONG_MODULES,
    ]
    assert [] == [module for module in named if module not in MODULES]


def test_architecture_picture_script_draws_every_arrow_downwards(
    tmp_path: Path,
) -> None:
    """docs/_tools/architecture.py runs; in its graph every import points to a lower row."""
    import runpy

    script = runpy.run_path(str(SRC.parent / "docs" / "_tools" / "architecture.py"))
    data = script["main"](tmp_path)
    rows = data["rows"]
    upward = [(a, b) for a, b in data["arrows"] if rows[a] <= rows[b]]
    assert ([], True) == (upward, (tmp_path / "architecture.png").stat().st_size > 0)
    assert set(rows) >= {"_core._guard", "_core._scope", "stores/", "breaker/"}
