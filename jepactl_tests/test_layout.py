"""The package's layout: imports flow one way, and each format has one owner.

Rooms (``cli`` and ``bench`` at the top; ``train``, ``features``, ``probe``, ``report`` under
them) use the components (``models``, ``presets``, ``masks``, ``objectives``, ``data``,
``recipe``), which use the core (``config``, ``errors``, ``grid``, ``rundir``,
``checkpoint``, ``dist``, ``optim``, ``lock``, ``plugins``, ``profiles``, ``utils``). An
import that goes up a layer, or between two rooms other than the allowed ones, fails here, as
does any import cycle (function-level imports count).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jepactl"

CORE = {
    "config", "errors", "grid", "rundir", "checkpoint", "dist", "optim", "lock", "stats", "utils",
    "version", "log", "plugins", "profiles", "formats",
}  # fmt: skip
COMPONENTS = {"models", "presets", "masks", "objectives", "data", "recipe"}
ROOMS = {"train", "features", "probe", "report"}
TOP = {"cli", "bench", "study", "__main__", "__init__"}
#: Room -> rooms it may import: a probe reads the feature cache; a report names the tasks and
#: reads metrics lines and probe results through their owners (``train.metrics``, which imports
#: torch lazily, and ``probe.records``, which does not import it).
ROOM_EDGES = {"probe": {"features"}, "report": {"features", "train", "probe"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, name: str, known: set[str]) -> Iterator[str]:
    """The project modules ``path`` imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1],
                                 *([base] if base else [])])  # fmt: skip
            # ``from pkg import mod`` imports the submodule when there is one.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            if target.startswith("jepactl"):
                while target not in known and "." in target:
                    target = target.rpartition(".")[0]
                if target in known and target != name:
                    yield target


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: set(imports(path, name, known)) for name, path in mods.items()}


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer(module: str) -> int:
    a = area(module)
    for rank, group in enumerate((CORE, COMPONENTS, ROOMS, TOP)):
        if a in group:
            return rank
    raise AssertionError(f"{module} is in no layer: add '{a}' to one in test_layout.py")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_cli_imports() -> None:
    subprocess.run([sys.executable, "-c", "import jepactl.cli"], check=True)


def test_the_walker_sees_a_planted_cycle() -> None:
    """The checker itself can fail: a two-module loop is found."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_imports_flow_one_way() -> None:
    bad = []
    for module, targets in graph().items():
        for target in targets:
            a, b = area(module), area(target)
            if a == b:
                continue
            if layer(target) > layer(module):
                bad.append(f"{module} -> {target} (up a layer)")
            elif layer(target) == layer(module) == 2 and b not in ROOM_EDGES.get(a, set()):
                bad.append(f"{module} -> {target} (between rooms)")
            elif module == "jepactl.config" and b not in ("errors", "utils"):
                bad.append(f"{module} -> {target} (config imports only errors and utils)")
    assert not bad, "\n".join(sorted(bad))


@pytest.mark.parametrize("room", sorted(COMPONENTS - {"recipe"}))
def test_config_knows_no_component(room: str) -> None:
    assert not {t for t in graph()["jepactl.config"] if area(t) == room}


def test_the_cache_format_has_one_owner() -> None:
    """Only features/cache.py opens HDF5 files."""
    pattern = re.compile(r"^\s*(import h5py|from h5py)", re.M)
    users = sorted(name for name, path in modules().items() if pattern.search(path.read_text()))
    assert users == ["jepactl.features.cache"]


def test_run_directory_names_have_one_owner() -> None:
    """The file names inside a run directory are spelled in rundir.py only."""
    spelled = {
        name
        for name, path in modules().items()
        for word in ('"config.yaml"', '"metrics.jsonl"', '"latest.pt"', '"checkpoints"', '"probes"')
        if word in path.read_text()
    }
    assert spelled == {"jepactl.rundir"}


#: The modules of ``jepactl/cli/`` that are not command modules: the assembler and the
#: shared options. Every other module there holds one command family.
CLI_SHARED = {"jepactl.cli", "jepactl.cli.common"}


def command_modules(mods: dict[str, Path]) -> set[str]:
    return {m for m in mods if m.startswith("jepactl.cli.") and m not in CLI_SHARED}


def test_a_command_module_imports_no_other_command_module() -> None:
    """A command family uses the shared module and the library, never another family (so a
    family can be read, moved or removed on its own); only ``jepactl.cli`` assembles them."""
    edges = graph()
    commands = command_modules(modules())
    assert {"jepactl.cli.train", "jepactl.cli.evaluate", "jepactl.cli.study"} <= commands
    bad = sorted(
        f"{module} -> {target}"
        for module in commands
        for target in edges[module]
        if target.startswith("jepactl.cli") and target != "jepactl.cli.common"
    )
    assert not bad, "command modules importing each other (or the assembler): " + "; ".join(bad)


def test_the_command_module_check_sees_a_planted_import(tmp_path: Path) -> None:
    """The checker itself can fail: a family importing another is found."""
    planted = tmp_path / "train.py"
    planted.write_text("from jepactl.cli.evaluate import probe\nfrom jepactl.cli import common\n")
    known = set(modules())
    found = set(imports(planted, "jepactl.cli.train", known))
    assert found & command_modules(modules()) == {"jepactl.cli.evaluate"}
    assert "jepactl.cli.common" in found


def test_the_shared_cli_module_imports_no_command_module() -> None:
    edges = graph()
    assert not {t for t in edges["jepactl.cli.common"] if t.startswith("jepactl.cli")}
