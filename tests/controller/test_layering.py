"""Layer rules of docs/architecture.md, checked on the source: arrows point down, policy pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module if node.level == 0 else f".{node.module}")
    return out


@pytest.mark.parametrize(
    "module", ["policy.py", "safety.py", "observe.py", "health.py", "resume.py"]
)
def test_pure_controller_modules_import_no_io(module: str) -> None:
    found = imports_of(ROOT / "controller" / module)
    banned = {"asyncio", "time", "sqlite3", "socket", "pymodbus", "asyncua", "laterne.drivers"}
    assert not {m for m in found if m.split(".")[0] in banned or m.startswith("laterne.drivers")}
    assert not any("clock" in m or "runtime" in m for m in found)


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("models", ("laterne.controller", "laterne.drivers", "laterne.api", "laterne.simulations")),
        ("drivers", ("laterne.controller", "laterne.api", "laterne.simulations")),
        ("controller", ("laterne.api", "laterne.simulations")),
        ("api", ("laterne.drivers", "laterne.simulations")),
        ("simulations", ("laterne.drivers", "laterne.api")),
    ],
)
def test_layers_import_only_downwards(layer: str, forbidden: tuple[str, ...]) -> None:
    for path in (ROOT / layer).rglob("*.py"):
        bad = {m for m in imports_of(path) if m.startswith(forbidden)}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
