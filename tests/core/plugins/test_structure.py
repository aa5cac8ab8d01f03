"""The import structure of ``sae_core`` (issue 24): a newcomer can read it top-down.

- no import cycles: the graph of every ``import`` in the source (function-level ones included,
  ``if TYPE_CHECKING:`` ones left out) has no cycle, with the lazy tables of the packages resolved
  to the module that defines each name;
- imports sit at module top; one that stays inside a function says why (``# lazy: <reason>``:
  torch that ``sae info`` must not load, a cycle, ...);
- the built-in components import what a plugin would: public names from ``sae_core`` (or
  ``sae_core.protocols``), and their own package's modules.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ROOT / "packages"
CORE = PACKAGES / "sae-core" / "src" / "sae_core"

#: packages whose ``__init__`` loads names lazily from a table: package -> {name: "module[:attr]"}
LAZY_TABLES = {"sae_core": "_WHERE", "sae_core.protocols": "_WHERE", "sae_core.checkpoint": "_WHERE",
               "sae_core.train": "_WHERE", "sae_core.inference": "_WHERE"}
#: modules whose function-level import must say why it is not at the top
HEAVY = ("torch", "numpy", "safetensors", "transformers")


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(src: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``src`` by dotted name (a package by its ``__init__``)."""
    return {_module_name(p, src): p for p in sorted((src / package).rglob("*.py"))}


CORE_MODULES = _modules(CORE.parent, "sae_core")


def _lazy_table(package: str) -> dict[str, str]:
    """``name -> defining module`` of a lazily loading package (importing it is cheap)."""
    table = getattr(importlib.import_module(package), LAZY_TABLES[package])
    out = {}
    for name, where in table.items():
        module = where.partition(":")[0]
        out[name] = module if module.startswith("sae_core") else f"{package}.{module}"
    return out


LAZY = {package: _lazy_table(package) for package in LAZY_TABLES}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, *, in_function: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it sits inside a function; ``if TYPE_CHECKING:`` bodies skipped."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, in_function
        elif isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), in_function=in_function)
        else:
            inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from _imports(node, in_function=inner)


def _resolve(module: str, name: str | None) -> str | None:
    """The ``sae_core`` module an import of ``name`` from ``module`` executes (``None``: not ours)."""
    if module != "sae_core" and not module.startswith("sae_core."):
        return None
    if name is not None:
        if f"{module}.{name}" in CORE_MODULES:
            return f"{module}.{name}"
        if module in LAZY and name in LAZY[module]:
            return LAZY[module][name]
    assert module in CORE_MODULES, f"import of unknown module {module}"
    return module


def _edges(path: Path) -> Iterator[tuple[str, ast.stmt]]:
    for node, _ in _imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [_resolve(a.name, None) for a in node.names]
        elif node.level:  # relative imports are not used in sae_core; resolve them if they appear
            raise AssertionError(f"{path}: relative import at line {node.lineno}; import sae_core.<module>")
        else:
            targets = [_resolve(node.module or "", a.name) for a in node.names]
        for target in targets:
            if target is not None:
                yield target, node


def _graph() -> dict[str, set[str]]:
    return {name: {t for t, _ in _edges(path) if t != name} for name, path in CORE_MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, set(c)) for c in components]


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError("a strongly connected component without a cycle")


def test_sae_core_has_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    shown = "\n".join(" -> ".join(c) for c in cycles)
    assert not cycles, f"import cycles in sae_core (move the shared piece to a module both import):\n{shown}"


def _function_level_imports(path: Path) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Function-level imports of ``sae_core`` or of a heavy library, with the module imported."""
    for node, in_function in _imports(ast.parse(path.read_text())):
        if not in_function:
            continue
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        for name in names:
            if name.split(".")[0] in ("sae_core", *HEAVY):
                yield node, name
                break


def test_function_level_imports_say_why() -> None:
    """An import inside a function costs a reader the module's dependencies at a glance; each one
    that stays there (torch that ``sae info`` must not load, an optional library, ...) says why."""
    missing = []
    for path in CORE_MODULES.values():
        lines = path.read_text().splitlines()
        for node, imported in _function_level_imports(path):
            if "# lazy:" not in lines[node.lineno - 1]:
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {imported}")
    assert not missing, ("function-level imports without `# lazy: <reason>` (hoist them to the module top, or say "
                         "why they must wait):\n" + "\n".join(missing))


#: public modules a plugin imports from (everything else in sae_core is an internal that may change)
PUBLIC_MODULES = ("sae_core", "sae_core.protocols")
#: component kinds whose built-ins must not import sae_core internals at all (beyond their own package);
#: built-in analyses still use internal helpers (held-out row selection, probing, the activation
#: database's writer) that are not public yet, so for them only the public-name rule below holds
NO_INTERNALS = ("adapter", "store", "architecture", "dataset", "exporter", "analysis")


def _component_modules() -> dict[str, set[str]]:
    """Module of every built-in component -> the kinds it defines (the example plugin left out)."""
    from sae_core.plugins import get_registry
    from sae_core.registry import KINDS

    registry, found = get_registry(), {}
    for kind in KINDS:
        for component in registry.all(kind):
            module = getattr(component.factory, "__module__", "") or ""
            if module.split(".")[0] in ("sae_core", "sae_text", "sae_vision", "sae_viewer"):
                found.setdefault(module, set()).add(kind)
    return found


def _registers(importer: str, module: str) -> bool:
    """Whether ``importer`` is a hook module (``<package>.plugin``) importing a component module it
    registers (the built-in components live in these packages)."""
    return importer.endswith(".plugin") and module.split(".")[1] in ("archs", "stores", "analyses", "interop")


def test_builtin_components_import_only_public_names() -> None:
    """A plugin author copies what the built-ins do, so the built-ins import exactly what a plugin
    can: a public name from ``sae_core`` (never from the private module that defines it), and —
    for adapters, stores, architectures, datasets, exporters — no other ``sae_core`` module than
    their own package's or another built-in component's (a plugin's hook module imports the
    components it registers)."""
    import sae_core

    public = set(sae_core.__all__)
    modules = _component_modules()
    assert {"sae_core.archs.topk", "sae_core.analyses.feature_stats"} <= set(modules), sorted(modules)
    offenders = []
    for name, kinds in sorted(modules.items()):
        path = Path(importlib.import_module(name).__file__)
        own = name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sae_core"):
                continue
            if node.module in PUBLIC_MODULES:
                continue
            for alias in node.names:
                if alias.name in public:
                    offenders.append(f"{name}:{node.lineno} imports public {alias.name} from {node.module}")
                elif kinds & set(NO_INTERNALS) and not node.module.startswith(own) and not _registers(name, node.module):
                    offenders.append(f"{name}:{node.lineno} imports internal {node.module}.{alias.name}")
    assert not offenders, "built-in components must import like a plugin:\n" + "\n".join(offenders)


def test_no_public_name_is_also_a_submodule() -> None:
    """``sae_core.firing`` once was both a function and a module: importing the module binds the
    package attribute, so ``from sae_core import firing`` returned the module after the first import
    of it. A public name must never equal a submodule's name."""
    import pkgutil

    import sae_core

    clash = set(sae_core.__all__) & {m.name for m in pkgutil.iter_modules(sae_core.__path__)}
    assert not clash, f"public names shadowed by submodules: {sorted(clash)}"
