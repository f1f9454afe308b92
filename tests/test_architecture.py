"""The floor plan holds: imports only go down the layers of ``datatools/__init__.py``'s docstring,
never in a circle, no module reaches into another's private names, no module passes 500 lines,
and a constant is defined once."""

from __future__ import annotations

import ast
import collections
import re
from pathlib import Path

import pytest

import datatools

PACKAGE = Path(datatools.__file__).parent
MAX_LINES = 500
MAX_PARAMETERS = 8

LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli", "__main__"),
    ("verify", "info", "loaders", "augment"),
    ("convert", "patches", "instances"),
    ("inputs",),
    ("ledger", "sinks", "writers"),
    ("edges", "downsample"),
    ("sources",),
    ("ngff", "stores"),
    ("errors", "geometry", "dtypes", "units", "options", "executor", "progress", "interrupts"),
    ("zarr_tasks", ""),
)
"""Rooms from the top (the CLI) to the ground floor; ``""`` is ``datatools`` itself."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def room(module: str) -> str:
    """The room of ``datatools.x.y``: ``x`` (``""`` for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(module: str) -> int:
    """0 for the top floor (the CLI), larger further down."""
    name = room(module)
    found = [k for k, rooms in enumerate(LAYERS) if name in rooms]
    assert found, f"{module}: its room {name!r} is on no floor of LAYERS (add it)"
    return found[0]


def imports(path: Path) -> list[tuple[int, str, tuple[str, ...]]]:
    """``(line, module, names)`` of every datatools import in ``path``, function-level ones
    (lazy imports) included; ``names`` are those of ``from module import names``."""
    found: list[tuple[int, str, tuple[str, ...]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "datatools":
                found.append((node.lineno, node.module, tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Import):
            found.extend(
                (node.lineno, a.name, ()) for a in node.names if a.name.split(".")[0] == "datatools"
            )
    return found


def targets(module: str, names: tuple[str, ...]) -> list[str]:
    """The modules an import statement loads: ``from pkg import submodule`` names modules."""
    subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
    return subs if subs and len(subs) == len(names) else [module, *subs]


def module_level_graph() -> dict[str, set[str]]:
    """Imports made when a module loads (function-level, lazy imports left out)."""
    edges: dict[str, set[str]] = collections.defaultdict(set)
    for name, path in MODULES.items():
        for node in ast.parse(path.read_text()).body:
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.level == 0
                and node.module.split(".")[0] == "datatools"
            ):
                edges[name].update(targets(node.module, tuple(a.name for a in node.names)))
    return edges


def test_every_room_has_a_floor() -> None:
    for module in MODULES:
        layer(module)


def test_imports_only_go_down() -> None:
    upward = [
        f"{module}:{line} imports {target} (floor {layer(target)} is above {layer(module)})"
        for module, path in MODULES.items()
        for line, imported, names in imports(path)
        for target in targets(imported, names)
        if layer(target) < layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle_between_modules() -> None:
    edges = module_level_graph()
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if nxt == node or nxt.startswith(node + "."):
                continue  # a package importing its own submodules
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in MODULES:
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_no_module_reaches_into_another_modules_private_names() -> None:
    found = []
    for module, path in MODULES.items():
        for line, imported, names in imports(path):
            private = [
                n
                for n in names
                if n.startswith("_") and not n.endswith("__") and f"{imported}.{n}" not in MODULES
            ]
            if private and imported != module:
                found.append(f"{module}:{line} imports {', '.join(private)} from {imported}")
            hidden = imported.split(".")[-1].startswith("_")
            package = imported.rsplit(".", 1)[0]
            if hidden and not module.startswith(package):
                found.append(f"{module}:{line} imports the private module {imported}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_at_most_500_lines(module: str) -> None:
    lines = MODULES[module].read_text().count("\n")
    assert lines <= MAX_LINES, f"{module}: {lines} lines (split it by concept)"


def test_each_constant_is_defined_once() -> None:
    """A module-level UPPER_CASE name given the same value in two modules is one constant
    written twice: it belongs in the lowest room that needs it."""
    where: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for module, path in MODULES.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and node.value is not None:
                for target in node.targets:
                    if isinstance(target, ast.Name) and re.fullmatch(r"[A-Z][A-Z0-9_]+", target.id):
                        where[(target.id, ast.unparse(node.value))].append(module)
    twice = {f"{name} = {value}": mods for (name, value), mods in where.items() if len(mods) > 1}
    assert not twice, twice


def test_the_layout_in_the_package_docstring_names_every_room() -> None:
    doc = datatools.__doc__ or ""
    rooms = {room(m) for m in MODULES} - {"", "__main__"}
    missing = sorted(r for r in rooms if not re.search(rf"\b{re.escape(r)}\b", doc))
    assert not missing, f"datatools/__init__.py docstring does not describe {missing}"


def test_public_calls_take_at_most_8_parameters() -> None:
    """Settings travel as one options object; a public function or initialiser takes at most 8
    parameters besides ``self`` and ``**overrides`` (dataclass value objects, options and
    results, are records, not calls, and are not counted)."""
    wide = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if node.name.startswith("_") and node.name != "__init__":
                continue
            args = node.args
            names = [
                a.arg
                for a in args.posonlyargs + args.args + args.kwonlyargs
                if a.arg not in ("self", "cls")
            ]
            if len(names) > MAX_PARAMETERS:
                wide.append(f"{module}:{node.lineno} {node.name}() takes {len(names)}")
    assert not wide, "\n".join(wide)


def test_architecture_md_lists_every_module_once() -> None:
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text()
    listed = re.findall(r"`(datatools/[\w/]+\.py)`", text)
    files = {str(p.relative_to(PACKAGE.parent)) for p in MODULES.values()}
    assert sorted(set(listed) - files) == [], "listed but missing"
    assert sorted(files - set(listed)) == [], "modules ARCHITECTURE.md does not list"
    assert len(listed) == len(set(listed))
