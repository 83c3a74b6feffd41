"""Real protocol servers on 127.0.0.1 for the driver tests, plus a clock the tests drive.

Modbus units are pymodbus ``SimDevice``s with four separate tables (coils, discrete inputs,
holding, input registers); ``SimData.address`` is the 0-based protocol address. Registers the
tests do not map answer "illegal data address", as a real device does.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simdevice import SimAction

from laterne.models.site import Device, DeviceProfile

#: function code that reads each table
READ_FC: dict[str, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class FakeClock:
    """A monotonic clock [s] that moves only when a test says so."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# ------------------------------------------------------------------------------ Modbus


def unit(
    unit_id: int,
    *,
    holding: Sequence[int] = (),
    inputs: Sequence[int] = (),
    coils: Sequence[bool] = (),
    discrete: Sequence[bool] = (),
    holding_blocks: Sequence[tuple[int, Sequence[int]]] = (),
    action: SimAction | None = None,
) -> SimDevice:
    """A Modbus unit whose tables start at address 0 with the given values.

    ``holding_blocks`` adds holding registers as ``(address, values)`` blocks instead, leaving
    the addresses between them unmapped. ``action`` is pymodbus's per-request hook.
    """
    hr = [SimData(a, values=list(v), datatype=DataType.REGISTERS) for a, v in holding_blocks]
    if holding:
        hr.append(SimData(0, values=list(holding), datatype=DataType.REGISTERS))
    ir = [SimData(0, values=list(inputs), datatype=DataType.REGISTERS)] if inputs else []
    co = [SimData(0, values=list(coils), datatype=DataType.BITS)] if coils else []
    di = [SimData(0, values=list(discrete), datatype=DataType.BITS)] if discrete else []
    # pymodbus needs every table non-empty: park an unused one far away
    far = [SimData(60000, values=[0], datatype=DataType.REGISTERS)]
    far_bits = [SimData(60000, values=[False] * 16, datatype=DataType.BITS)]
    return SimDevice(
        unit_id,
        simdata=(co or far_bits, di or far_bits, hr or far, ir or far),
        action=action,
    )


@dataclass
class ModbusServerHandle:
    """One running pymodbus server and what it has received."""

    port: int
    devices: list[SimDevice]
    server: ModbusTcpServer | None = None
    requests: list[tuple[int, int]] = field(default_factory=list)  # (unit id, function code)
    #: (unit id, function code, address, count) of every request received
    ranges: list[tuple[int, int, int, int]] = field(default_factory=list)

    async def start(self) -> None:
        """(Re)start on the same port, with the datastores rebuilt from ``devices``."""
        assert self.server is None

        def trace(sending: bool, pdu: ModbusPDU) -> ModbusPDU:
            if not sending:
                self.requests.append((pdu.dev_id, pdu.function_code))
                count = getattr(pdu, "count", 0)
                self.ranges.append((pdu.dev_id, pdu.function_code, pdu.address, count))
            return pdu

        self.server = ModbusTcpServer(
            self.devices,
            address=("127.0.0.1", self.port),
            trace_pdu=trace,
        )
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()  # type: ignore[no-untyped-call]
            self.server = None

    async def values(self, unit_id: int, table: str, address: int, count: int = 1) -> list[int]:
        """What the server holds now (read directly from its datastore, not over the wire)."""
        assert self.server is not None
        got = await self.server.async_getValues(unit_id, READ_FC[table], address, count)
        return [int(v) for v in got]

    async def set_values(
        self, unit_id: int, table: str, address: int, values: Sequence[int]
    ) -> None:
        """Change what the server holds (directly in its datastore)."""
        assert self.server is not None
        vals: list[int] | list[bool] = (
            [bool(v) for v in values] if table in ("coil", "discrete") else list(values)
        )
        await self.server.async_setValues(unit_id, READ_FC[table], address, vals)

    @property
    def connections(self) -> int:
        """Open client connections."""
        assert self.server is not None
        return len(self.server.active_connections)


ModbusServerFactory = Callable[..., Awaitable[ModbusServerHandle]]


@pytest.fixture
async def modbus_server() -> AsyncIterator[ModbusServerFactory]:
    """``await modbus_server(unit(1, ...), unit(2, ...))`` starts a server on a free port."""
    handles: list[ModbusServerHandle] = []

    async def start(*devices: SimDevice, port: int | None = None) -> ModbusServerHandle:
        handle = ModbusServerHandle(port if port is not None else free_port(), list(devices))
        await handle.start()
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        await handle.stop()


def modbus_device(
    profile: DeviceProfile, port: int, unit_id: int = 1, device_id: str = "dev", **kw: Any
) -> Device:
    return Device.model_validate(
        {
            "id": device_id,
            "profile": "p",
            "endpoint": {"host": "127.0.0.1", "port": port, "unit_id": unit_id},
            **kw,
        }
    )


def profile(protocol: str, points: dict[str, dict[str, Any]]) -> DeviceProfile:
    return DeviceProfile.model_validate({"protocol": protocol, "points": points})


# ------------------------------------------------------------------------------ OPC-UA


@dataclass
class OpcUaServerHandle:
    """One running asyncua server with variables in namespace 2."""

    server: Server
    url: str
    nodes: dict[str, Node]

    async def value(self, node_id: str) -> Any:
        return await self.nodes[node_id].read_value()

    async def variant_type(self, node_id: str) -> ua.VariantType:
        dv = await self.nodes[node_id].read_data_value()
        assert dv.Value is not None
        return dv.Value.VariantType

    async def stop(self) -> None:
        await self.server.stop()

    async def start(self) -> None:
        await self.server.start()


OpcUaServerFactory = Callable[..., Awaitable[OpcUaServerHandle]]


@pytest.fixture
async def opcua_server() -> AsyncIterator[OpcUaServerFactory]:
    """``await opcua_server({"s.x": (1.5, ua.VariantType.Float, writable)})`` on a free port.

    Keys are string identifiers in namespace 2, so the profile's node is ``ns=2;s=<key>``.
    """
    servers: list[Server] = []

    async def start(
        variables: dict[str, tuple[Any, ua.VariantType, bool]],
    ) -> OpcUaServerHandle:
        url = f"opc.tcp://127.0.0.1:{free_port()}/laterne-test/"
        server = Server()
        await server.init()
        server.set_endpoint(url)
        idx = await server.register_namespace("urn:laterne:test")
        assert idx == 2
        nodes: dict[str, Node] = {}
        for key, (value, vtype, writable) in variables.items():
            node = await server.nodes.objects.add_variable(
                ua.NodeId.from_string(f"ns={idx};s={key}"), key, value, varianttype=vtype
            )
            if writable:
                await node.set_writable()
            nodes[key] = node
        await server.start()
        servers.append(server)
        return OpcUaServerHandle(server, url, nodes)

    yield start
    for server in servers:
        try:
            await server.stop()
        except Exception:  # already stopped by the test
            pass
