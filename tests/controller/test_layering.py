"""Layer rules of docs/architecture.md, checked on the source with ``ast``.

1. Arrows point down: no layer imports one above it.
2. The controller's I/O lives in its shells. A controller module that imports asyncio is a shell,
   and the shells are listed here by name (:data:`CONTROLLER_SHELLS`); every other controller
   module — including any added later — imports no driver, asyncio, sqlite3, socket or time.
3. Pure modules read no clock (time is an argument): no ``datetime.now()``, ``utcnow()``,
   ``today()``, ``date.today()``, ``time.time()``, ``time.monotonic()``, ``perf_counter()``
   calls, however imported or aliased. Pure are all of ``models/``, every controller module but
   the shells, and every simulation module but its shells (:data:`SIMULATION_SHELLS`); the sets
   are derived from the folders, so a new module is pure unless it is declared a shell.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: the controller's I/O shells: they may import asyncio, the drivers, time (and read clocks)
CONTROLLER_SHELLS = frozenset(
    {
        "runtime.py",  # the live loop: poll, decide, write, record
        "poller.py",  # polls the device clients
        "writer.py",  # writes commands and reads them back
        "recorder.py",  # the write-behind history queues, drained in worker threads
        "clock.py",  # wall and scaled clocks: the one place that reads the time
    }
)
#: simulation modules that serve or probe real sockets (the rest of simulations/ is pure)
SIMULATION_SHELLS = frozenset(
    {
        "emulator.py",  # emulated devices on real Modbus/OPC-UA servers
        "ports.py",  # finds free ports by binding sockets
    }
)
#: named in the architecture as pure; each must be among the derived pure modules if it exists
NAMED_PURE = (
    "controller/policy.py", "controller/safety.py", "controller/cycle.py",
    "controller/observe.py", "controller/health.py", "controller/resume.py",
    "controller/sun.py", "controller/snapshot.py", "controller/baselines.py",
    "simulations/plant.py", "simulations/traffic.py", "simulations/weather.py",
    "simulations/kpis.py",
)  # fmt: skip

SHELL_ONLY_IMPORTS = ("asyncio", "sqlite3", "socket", "time", "laterne.drivers")

#: fully qualified calls that read a clock
CLOCK_CALLS = frozenset(
    {
        "datetime.datetime.now", "datetime.datetime.utcnow", "datetime.datetime.today",
        "datetime.date.today", "time.time", "time.time_ns", "time.monotonic",
        "time.monotonic_ns", "time.perf_counter", "time.perf_counter_ns",
    }
)  # fmt: skip


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).glob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def imports_of(source: str, package: str = "") -> set[str]:
    """Every module ``source`` imports, absolute; relative imports resolved against ``package``
    (``laterne.controller``), ``from x import y`` giving both ``x`` and ``x.y``."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def _dotted(expr: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if isinstance(expr, ast.Name):
        parts.append(expr.id)
        return ".".join(reversed(parts))
    return None


def clock_reads(source: str) -> list[tuple[int, str]]:
    """(line, call) of every call in ``source`` that reads a clock, names resolved through the
    module's imports (``from datetime import datetime as dt``: ``dt.now()`` is
    ``datetime.datetime.now``; ``from datetime import time``: ``time(7)`` is no clock)."""
    tree = ast.parse(source)
    names: dict[str, str] = {}  # local name -> what it is
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    names[a.asname] = a.name
                else:
                    top = a.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (name := _dotted(node.func)) is not None:
            head, _, rest = name.partition(".")
            qualified = names.get(head, head) + (f".{rest}" if rest else "")
            if qualified in CLOCK_CALLS:
                found.append((node.lineno, name))
    return sorted(found)


def package_of(path: Path) -> str:
    return f"laterne.{path.parent.name}"


def shell_only_imports(path: Path) -> set[str]:
    found = imports_of(path.read_text(encoding="utf-8"), package_of(path))
    return {m for m in found if m in SHELL_ONLY_IMPORTS or m.startswith("laterne.drivers")}


CONTROLLER = modules("controller")
CONTROLLER_PURE = [p for p in CONTROLLER if p.name not in CONTROLLER_SHELLS]
PURE = (
    modules("models")
    + CONTROLLER_PURE
    + [p for p in modules("simulations") if p.name not in SIMULATION_SHELLS]
)


# ------------------------------------------------------------------- the checkers themselves


@pytest.mark.parametrize(
    ("source", "reads"),
    [
        ("from datetime import datetime\nx = datetime.now()", [(2, "datetime.now")]),
        ("from datetime import datetime\nx = datetime.now(tz=UTC)", [(2, "datetime.now")]),
        ("from datetime import datetime as dt\nx = dt.utcnow()", [(2, "dt.utcnow")]),
        ("import datetime\nx = datetime.datetime.now()", [(2, "datetime.datetime.now")]),
        ("import datetime as _d\nx = _d.date.today()", [(2, "_d.date.today")]),
        ("from datetime import date\nx = date.today()", [(2, "date.today")]),
        ("import time\nx = time.time()", [(2, "time.time")]),
        ("import time\nx = time.monotonic()", [(2, "time.monotonic")]),
        ("from time import monotonic\nx = monotonic()", [(2, "monotonic")]),
        ("from time import perf_counter as pc\nx = pc()", [(2, "pc")]),
        # not clocks
        ("from datetime import time\nx = time(7, 30)", []),
        ("from datetime import datetime\nx = datetime(2026, 1, 1)", []),
        ("from datetime import datetime\nx = datetime.fromtimestamp(t_s, UTC)", []),
        ("def f(clock):\n    return clock.now()", []),  # a clock given as an argument
        ("def f(now):\n    return now.date()", []),
        ("x = layout.time", []),
    ],
)
def test_clock_reads_finds_calls_through_any_import(
    source: str, reads: list[tuple[int, str]]
) -> None:
    assert clock_reads(source) == reads


@pytest.mark.parametrize(
    ("source", "package", "found"),
    [
        ("import asyncio", "laterne.controller", {"asyncio"}),
        ("import time, socket", "laterne.controller", {"time", "socket"}),
        ("from datetime import time", "laterne.controller", {"datetime", "datetime.time"}),
        (
            "from laterne.drivers.field.base import X",
            "laterne.controller",
            {"laterne.drivers.field.base", "laterne.drivers.field.base.X"},
        ),
        (
            "from ..drivers import field",
            "laterne.controller",
            {"laterne.drivers", "laterne.drivers.field"},
        ),
        ("from .policy import Policy", "laterne.controller",
         {"laterne.controller.policy", "laterne.controller.policy.Policy"}),
    ],
)  # fmt: skip
def test_imports_of_resolves_relative_imports(source: str, package: str, found: set[str]) -> None:
    assert imports_of(source, package) == found


# ------------------------------------------------------------------------------- the rules


def test_the_module_lists_are_derived_from_the_folders() -> None:
    assert len(CONTROLLER) > len(CONTROLLER_SHELLS)
    missing = sorted(s for s in CONTROLLER_SHELLS if not (ROOT / "controller" / s).exists())
    assert not missing, f"listed as controller shells but not there (update the list): {missing}"
    missing = sorted(s for s in SIMULATION_SHELLS if not (ROOT / "simulations" / s).exists())
    assert not missing, f"listed as simulation shells but not there (update the list): {missing}"
    pure = {rel(p) for p in PURE}
    for named in NAMED_PURE:
        if (ROOT / named).exists():
            assert named in pure, f"{named} is pure by the architecture but listed as a shell"
    assert {rel(p) for p in modules("models")} <= pure


@pytest.mark.parametrize("path", CONTROLLER_PURE, ids=rel)
def test_controller_modules_but_the_shells_import_no_io(path: Path) -> None:
    bad = shell_only_imports(path)
    assert not bad, (
        f"{rel(path)} imports {sorted(bad)}: only the shells {sorted(CONTROLLER_SHELLS)} may "
        "(a module that needs asyncio is a shell: add it to CONTROLLER_SHELLS)"
    )


def test_every_controller_module_that_imports_asyncio_is_a_listed_shell() -> None:
    async_modules = {
        p.name
        for p in CONTROLLER
        if "asyncio" in imports_of(p.read_text(encoding="utf-8"), "laterne.controller")
    }
    assert async_modules <= CONTROLLER_SHELLS


@pytest.mark.parametrize("name", [n for n in NAMED_PURE if n.startswith("controller/")])
def test_named_pure_controller_modules_import_no_shell(name: str) -> None:
    path = ROOT / name
    if not path.exists():
        pytest.skip(f"{name} does not exist (yet)")
    shells = {f"laterne.controller.{s.removesuffix('.py')}" for s in CONTROLLER_SHELLS}
    found = imports_of(path.read_text(encoding="utf-8"), "laterne.controller")
    assert not found & shells, f"{name} imports the shell(s) {sorted(found & shells)}"


@pytest.mark.parametrize("path", PURE, ids=rel)
def test_pure_modules_read_no_clock(path: Path) -> None:
    reads = clock_reads(path.read_text(encoding="utf-8"))
    assert not reads, f"{rel(path)} reads a clock at {reads}; take the time as an argument"


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
        package = ".".join(("laterne", *path.relative_to(ROOT).parent.parts))
        bad = {
            m
            for m in imports_of(path.read_text(encoding="utf-8"), package)
            if m.startswith(forbidden)
        }
        assert not bad, f"{rel(path)} imports {bad}"
