"""keymon's modules import each other in layers, with no module-level import cycle.

Bottom to top: the common pieces (errors, model, log, changes, config_base), the exchange
modules (each with its settings, key model and adapter), the configuration (which collects them
from the registry), then policy, store, state and budget; audit, metrics, notify and the
scheduler; the app; and the command line and demo at the top. The simulators import nothing
of keymon outside :mod:`keymon.simulator`. Imports inside functions and under
``TYPE_CHECKING`` are not module-level and are not counted.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "keymon"

#: A module may import modules of its own layer or below, never above.
LAYERS: dict[str, int] = {
    "keymon": 0,
    "keymon.errors": 0,
    "keymon.model": 0,
    "keymon.log": 0,
    "keymon.changes": 0,
    "keymon.config_base": 0,
    "keymon.healthcheck": 0,
    "keymon.exchanges": 1,
    "keymon.config": 2,
    "keymon.policy": 3,
    "keymon.store": 3,
    "keymon.state": 3,
    "keymon.budget": 3,
    "keymon.audit": 4,
    "keymon.metrics": 4,
    "keymon.notify": 4,
    "keymon.schedule": 4,
    "keymon.app": 5,
    "keymon.demo": 6,
    "keymon.cli": 6,
    "keymon.__main__": 7,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(name: str) -> set[str]:
    """The keymon modules ``name`` imports when it is imported."""
    found: set[str] = set()
    pending: list[ast.stmt] = list(ast.parse(MODULES[name].read_text()).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If):
            if not _is_type_checking(node):
                pending += node.body
            pending += node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody
            for handler in node.handlers:
                pending += handler.body
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _module_level_imports(name) for name in MODULES}


def _layer(name: str) -> int | None:
    while name:
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    return None


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in MODULES if _layer(m) is None and not m.startswith("keymon.simulator")]
    assert unplaced == []


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})"
        for name, targets in GRAPH.items()
        if not name.startswith("keymon.simulator")
        for target in sorted(targets)
        if not target.startswith("keymon.simulator") and (_layer(target) or 0) > (_layer(name) or 0)
    ]
    assert upward == []


def test_exchange_modules_build_on_config_base_not_config() -> None:
    for name, targets in GRAPH.items():
        if name.startswith("keymon.exchanges") or name == "keymon.config_base":
            assert "keymon.config" not in targets, name
        if name == "keymon.config_base":
            assert not any(t.startswith("keymon.exchanges") for t in targets)


def test_simulators_import_nothing_of_keymon_outside_the_simulator_package() -> None:
    for name, targets in GRAPH.items():
        if name.startswith("keymon.simulator"):
            outside = {t for t in targets if not t.startswith("keymon.simulator")}
            assert outside <= {"keymon"}, (name, outside)


def test_demo_and_cli_do_not_import_each_other_at_module_level() -> None:
    assert "keymon.cli" not in GRAPH["keymon.demo"]
    assert "keymon.demo" not in GRAPH["keymon.cli"]


def test_no_module_level_import_cycle() -> None:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert cycles == []


@pytest.mark.parametrize(
    "module",
    [
        "keymon.config_base",
        "keymon.exchanges.binance",
        "keymon.exchanges.coinbase",
        "keymon.config",
        "keymon.simulator",
        "keymon.demo",
        "keymon.cli",
    ],
)
def test_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, timeout=60)
