"""The package's shape, enforced: imports point down the layers, no cycles, ``__all__`` true.

Layers, lowest first (``docs/architecture.md``): ``errors`` and ``_core`` (settings,
logging setup, redaction, state directory); ``_connect`` (one connection); ``_notify``
(side channels that never fail the job); ``_session``; ``_legacy``; then the package's
public face (``__init__``), and on top the application ``_app`` (jobs, CLI, demo), which
nothing else imports. The simulator stands apart: it may use ``errors`` and ``_core``
only, so it can play a gateway without any of the client's logic. ``testing`` may use
everything but the application.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import ibkr_resilience

PACKAGE = Path(ibkr_resilience.__file__).parent

LAYERS = ["errors", "_core", "_connect", "_notify", "_session", "_legacy", "__init__", "_app"]
"""Each may import from its own layer and the ones before it."""
APART = {
    "simulator": {"errors", "_core", "simulator"},
    "testing": {"errors", "_core", "_connect", "_notify", "_session", "simulator", "testing"},
    "__main__": {"_app"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every package module that ``name`` imports, at module level or inside functions."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    # Imports under ``if TYPE_CHECKING:`` never run: annotations only, not an edge.
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                root = ".".join(anchor + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            targets = [root] + [f"{root}.{alias.name}" for alias in node.names]
        for target in targets:
            if target in known:
                found.add(target)
    found.discard(name)
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def test_imports_point_down_the_layers() -> None:
    """No module imports from a layer above its own (nor the simulator from the client)."""
    wrong = []
    for source, targets in graph().items():
        src = layer(source)
        for target in targets:
            dst = layer(target)
            if src in APART:
                ok = dst in APART[src] or (src == "testing" and dst == "__init__")
            elif dst in APART:
                ok = src == "_app" and dst == "simulator"  # the demo starts a simulated gateway
            else:
                ok = LAYERS.index(dst) <= LAYERS.index(src)
            if not ok:
                wrong.append(f"{source} -> {target}")
    assert wrong == []


def test_no_import_cycles() -> None:
    """The module graph is acyclic (a cycle makes import order matter and layers lie)."""
    edges = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            # A package's __init__ importing its own submodules is how packages re-export.
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    """The scan resolves relative imports: an upward import in ``_core`` is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from .._session.session import ibkr_session\n")
    known = set(modules())
    assert imports_of("ibkr_resilience._core.bad", bad, known) >= {
        "ibkr_resilience._session.session"
    }


@pytest.mark.parametrize(
    "public",
    [
        "ibkr_resilience",
        "ibkr_resilience.errors",
        "ibkr_resilience.simulator",
        "ibkr_resilience.testing",
    ],
)
def test_all_lists_exactly_the_public_names(public: str) -> None:
    """``__all__`` names exist, and every public name defined there is in ``__all__``."""
    module = importlib.import_module(public)
    exported = set(module.__all__)
    assert all(hasattr(module, name) for name in exported)
    submodules = {m.name for m in pkgutil.iter_modules(getattr(module, "__path__", []))}
    public_names = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and name not in submodules
        and getattr(value, "__module__", public).startswith("ibkr_resilience")
        and not isinstance(value, type(ast))  # modules
        and name != "annotations"
    }
    assert public_names - exported == set()


MAX_MODULE_LINES = 400


def test_no_module_is_over_400_lines() -> None:
    """One module per idea: a module past 400 lines is doing more than one thing."""
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {n: s for n, s in sizes.items() if s > MAX_MODULE_LINES} == {}
