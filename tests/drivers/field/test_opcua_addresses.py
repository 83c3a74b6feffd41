"""How the OPC-UA driver finds a point's node, against real asyncua servers on 127.0.0.1:
browse paths (their format, resolved at each connect, one that does not resolve makes only its
point FAULTY), ``nsu=`` NodeIds resolved through the server's namespace array at every connect,
and NodeIds built from the site model's parser."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from asyncua import ua
from asyncua.server.server import Server

from laterne.drivers.field.errors import UnknownNamespace, UnresolvedBrowsePath
from laterne.drivers.field.opcua import OpcUaDevice
from laterne.drivers.field.opcua_paths import (
    format_browse_path,
    format_node_id,
    node_id,
    parse_browse_path,
)
from laterne.models.opcua_address import parse_node_id
from laterne.models.site import OpcUaPoint, OpcUaProfile
from laterne.models.values import Quality

from ..conftest import FakeClock, free_port
from ..opcua_plant import (
    NOW,
    POINTS,
    SCHOOL,
    TEMP_PATH,
    VT,
    StartServer,
    make_device,
    opcua_device,
    start_server,
    values,
)

__all__ = ["make_device", "start_server"]  # fixtures, used by name below


# --------------------------------------------------------------------------- browse paths


def test_browse_path_format() -> None:
    path = parse_browse_path(TEMP_PATH)
    assert [(q.NamespaceIndex, q.Name) for q in path] == [
        (2, "School"), (2, "Classrooms"), (2, "Temperature"),
    ]  # fmt: skip
    assert format_browse_path(path) == TEMP_PATH
    for bad in ("", "School/2:Temp", "2:School//2:Temp", "/2:School", "70000:School", "2:"):
        with pytest.raises(ValueError, match="browse path"):
            parse_browse_path(bad)


@pytest.mark.parametrize(
    ("where", "text", "says"),
    [
        ("browse_path", "2:School/Temperature", "not '<namespace index>:<browse name>'"),
        ("node", "ns=2;x=Temperature", "identifier kind 'x'"),
        ("node", "nsu=;s=Temperature", "empty namespace URI"),
    ],
)
def test_malformed_address_fails_at_construction(where: str, text: str, says: str) -> None:
    # the site loader refuses these already; the driver parses again (with the same parser)
    # for profiles built in code, bypassing validation as model_construct does
    spec = OpcUaPoint.model_construct(**{where: text})
    prof = OpcUaProfile.model_construct(protocol="opcua", points={"t": spec})
    with pytest.raises(ValueError, match=re.escape(says)):
        OpcUaDevice(opcua_device("opc.tcp://127.0.0.1:4840/"), prof)


@pytest.mark.parametrize("subscribe", [True, False])
async def test_browse_path_points_read_and_write(
    start_server: StartServer, make_device: Callable[..., OpcUaDevice], subscribe: bool
) -> None:
    plant = await start_server()
    attic = {"browse_path": "2:School/2:Attic/2:Temp", "writable": True, "min": 0, "max": 40}
    points = {**POINTS, "attic_c": attic}
    dev = make_device(plant.url, points, subscribe=subscribe)
    readings = await dev.read(NOW)
    assert dev.mode == ("subscription" if subscribe else "polling")
    assert values(readings) == SCHOOL
    assert readings["attic_c"].quality is Quality.FAULTY
    assert "'2:School/2:Attic/2:Temp' does not resolve: BadNoMatch" in readings["attic_c"].error

    f32 = 21.25  # exactly representable as a Float
    assert await dev.write("setpoint_c", f32) == f32
    assert await plant.nodes["setpoint"].read_value() == f32
    dv = await plant.nodes["setpoint"].read_data_value()
    assert dv.Value is not None and dv.Value.VariantType is VT.Float  # the node's own type
    assert (await dev.read(NOW))["setpoint_c"].value == f32
    with pytest.raises(UnresolvedBrowsePath, match="Attic"):  # a typed error, not a crash
        await dev.write("attic_c", 1.0)


# ---------------------------------------------------------------- NodeIds by namespace URI

PLANT_URI = "urn:laterne:field:plant"


@dataclass
class NsPlant:
    server: Server
    url: str
    port: int
    index: int  # of PLANT_URI

    async def stop(self) -> None:
        await self.server.stop()


StartNsPlant = Callable[..., Awaitable[NsPlant]]


@pytest.fixture
async def ns_plant() -> AsyncIterator[StartNsPlant]:
    """A server whose plant lives in the namespace PLANT_URI, registered after ``before``
    other namespaces (so its index depends on them). The same string ids exist in a decoy
    namespace too, with other values, so a point read from the wrong index shows."""
    servers: list[Server] = []

    async def start(before: list[str], temp: float, port: int | None = None) -> NsPlant:
        port = port if port is not None else free_port()
        server = Server()
        await server.init()
        url = f"opc.tcp://127.0.0.1:{port}/field/"
        server.set_endpoint(url)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        for uri in before:
            await server.register_namespace(uri)
        decoy = await server.register_namespace("urn:laterne:field:decoy")
        idx = await server.register_namespace(PLANT_URI)
        objects = server.nodes.objects
        for ns, value in ((decoy, -99.0), (idx, temp)):
            node = await objects.add_variable(ua.NodeId("temp", ns), f"{ns}:Temp", value)
            await node.set_writable()
        await objects.add_variable(
            ua.NodeId(ua.Guid("09087e75-8e5e-499b-954f-f2a9603db28a"), ua.Int16(idx)),
            f"{idx}:Flow", 12.5, varianttype=VT.Float,
        )  # fmt: skip
        await objects.add_variable(ua.NodeId(4711, idx), f"{idx}:Count", 42, varianttype=VT.UInt32)
        await server.start()
        servers.append(server)
        return NsPlant(server, url, port, idx)

    yield start
    for server in servers:
        try:
            await server.stop()
        except Exception:  # already stopped by the test
            pass


NSU_POINTS: dict[str, dict[str, Any]] = {
    "temp_c": {"node": f"nsu={PLANT_URI};s=temp", "writable": True, "min": -40, "max": 60},
    "flow": {"node": f"nsu={PLANT_URI};g=09087E75-8E5E-499B-954F-F2A9603DB28A", "max": 100},
    "count": {"node": f"nsu={PLANT_URI};i=4711", "max": 1e9},
    "ghost": {"node": "nsu=urn:nobody:knows;s=temp", "writable": True, "min": 0, "max": 100},
}


@pytest.mark.parametrize("subscribe", [True, False])
async def test_nsu_node_ids_resolve_at_every_connect(
    ns_plant: StartNsPlant,
    make_device: Callable[..., OpcUaDevice],
    clock: FakeClock,
    subscribe: bool,
) -> None:
    plant = await ns_plant(["urn:a"], temp=21.5)
    assert plant.index == 4
    dev = make_device(plant.url, NSU_POINTS, subscribe=subscribe)
    readings = await dev.read(NOW)
    assert values(readings) == {"temp_c": 21.5, "flow": 12.5, "count": 42.0}
    ghost = readings["ghost"]
    assert ghost.quality is Quality.FAULTY
    assert "'urn:nobody:knows'" in ghost.error and f"[4] {PLANT_URI}" in ghost.error
    assert "[0] http://opcfoundation.org/UA/" in ghost.error
    assert await dev.write("temp_c", 22.0) == 22.0
    with pytest.raises(UnknownNamespace, match="urn:nobody:knows") as unknown:
        await dev.write("ghost", 1.0)
    assert unknown.value.uri == "urn:nobody:knows" and PLANT_URI in unknown.value.known

    # restarted with its namespaces in another order: the URI now has another index
    await plant.stop()
    moved = await ns_plant(["urn:a", "urn:b", "urn:c"], temp=18.0, port=plant.port)
    assert moved.index == 6
    await dev.close()  # as after a lost connection: the next read connects anew
    clock.advance(dev.backoff.remaining_s())
    readings = await dev.read(NOW)
    assert values(readings) == {"temp_c": 18.0, "flow": 12.5, "count": 42.0}  # not the decoy
    assert f"[6] {PLANT_URI}" in readings["ghost"].error


def test_node_ids_from_the_model_parser_round_trip() -> None:
    namespaces = ["http://opcfoundation.org/UA/", "urn:s", PLANT_URI, "urn:t"]
    for text in (
        "i=2258",
        "ns=2;s=School.Room1.Temperature",
        "ns=2;s=a;b=c",  # a string identifier may hold ';' and '='
        "ns=3;g=09087e75-8e5e-499b-954f-f2a9603db28a",
        "ns=1;b=M/RbKBsRVkePCePcx24oRA==",
        "ns=2;i=70000",
    ):
        nid = node_id(parse_node_id(text))
        assert nid == ua.NodeId.from_string(text)  # what asyncua makes of the same text
        assert format_node_id(nid) == text
        uri_form = format_node_id(nid, namespaces)
        assert uri_form.startswith(f"nsu={namespaces[nid.NamespaceIndex]};")
        assert parse_node_id(uri_form).namespace_uri == namespaces[nid.NamespaceIndex]
    with pytest.raises(ValueError, match="not resolved"):
        node_id(parse_node_id(f"nsu={PLANT_URI};s=x"))
