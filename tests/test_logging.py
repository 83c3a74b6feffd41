"""A hung Modbus gateway does not flood the log: one line per state change, libraries quiet."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from laterne.controller.clock import ManualClock
from laterne.controller.runtime import Runtime
from laterne.drivers.field.factory import build_clients
from laterne.drivers.history.sqlite_store import SqliteHistory
from laterne.logs import LIBRARY_LOGGERS, LogLevel, configure_logging
from laterne.models.site import ModbusEndpoint, SiteConfig
from laterne.simulations.emulator import SiteEmulator
from laterne.simulations.ports import with_free_ports


@pytest.fixture
def restore_levels() -> Iterator[None]:
    names = ["", *LIBRARY_LOGGERS]
    before = {n: logging.getLogger(n).level for n in names}
    yield
    for n, level in before.items():
        logging.getLogger(n).setLevel(level)


async def _hung_gateway_run(
    site: SiteConfig, tmp_path: Path, cycles: int
) -> None:
    """The segment gateway accepts connections and never answers; the rest is emulated."""
    gw = next(d.endpoint for d in site.devices if d.id == "seg-bahnhofstr")
    assert isinstance(gw, ModbusEndpoint)
    emu = SiteEmulator(site, start=datetime.now(UTC))
    await emu.start()
    await emu.stop_device_server("seg-bahnhofstr")  # its gateway's port is free for the fake
    hold = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hold.wait()
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", gw.port)
    clock = ManualClock(datetime(2026, 11, 25, 22, 0, tzinfo=UTC))
    history = SqliteHistory(tmp_path / "h.sqlite")
    clients = build_clients(site, monotonic=lambda: clock.now().timestamp())
    runtime = Runtime(site, clients, history, clock)
    try:
        for _ in range(cycles):
            await runtime.run_cycle()
            clock.advance(site.policy.cycle_s)
    finally:
        hold.set()
        await runtime.close()
        await emu.stop()
        history.close()
        server.close()


@pytest.mark.usefixtures("restore_levels")
@pytest.mark.parametrize("level", [LogLevel.info, LogLevel.debug])
async def test_a_hung_gateway_is_one_line_per_device_not_a_flood(
    demo_site: SiteConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture, level: LogLevel
) -> None:
    site = with_free_ports(demo_site)
    site = site.model_copy(
        update={"devices": [d.model_copy(update={"timeout_s": 0.2}) for d in site.devices]}
    )
    configure_logging(level)
    caplog.handler.setLevel(logging.DEBUG)
    await _hung_gateway_run(site, tmp_path, cycles=6)
    from_libraries = [r for r in caplog.records if r.name.startswith(LIBRARY_LOGGERS)]
    went_offline = [r for r in caplog.records if "good -> offline" in r.getMessage()]
    if level is LogLevel.debug:
        assert from_libraries  # the hex dumps are there for whoever asked for them
        return
    assert from_libraries == []
    # each segment controller behind the hung gateway: at most one transition to offline
    for dev in ("seg-bahnhofstr", "seg-elberfelder", "seg-lindenweg"):
        assert len([r for r in went_offline if dev in r.getMessage()]) <= 1
    about_hung = [
        r for r in caplog.records if r.name.startswith("laterne") and "seg-" in r.getMessage()
    ]
    assert len(about_hung) <= 3  # at most one line per hung device, not one per poll
