"""Building a site's clients: one builder per protocol from the registry, Modbus devices
sharing a gateway per host:port, and a protocol without a driver refused by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import pytest

from laterne.drivers.field import factory
from laterne.drivers.field.base import DeviceClient
from laterne.drivers.field.factory import (
    NoDriverError,
    build_clients,
    build_opcua_clients,
    register_builder,
    registered_protocols,
)
from laterne.drivers.field.modbus import ModbusDevice
from laterne.drivers.field.opcua import OpcUaDevice
from laterne.models.site import Device, SiteConfig
from laterne.models.values import PointReading


def test_build_clients_shares_one_gateway_per_host_and_port(demo_site: SiteConfig) -> None:
    clients = build_clients(demo_site)
    assert list(clients) == [d.id for d in demo_site.devices]
    for client in clients.values():
        assert isinstance(client, DeviceClient)
    modbus = {k: c for k, c in clients.items() if isinstance(c, ModbusDevice)}
    assert set(modbus) == {
        "counter-north",
        "counter-east",
        "seg-bahnhofstr",
        "seg-elberfelder",
        "seg-lindenweg",
    }
    assert modbus["counter-north"].gateway is modbus["counter-east"].gateway
    assert modbus["seg-bahnhofstr"].gateway is modbus["seg-lindenweg"].gateway
    assert modbus["seg-bahnhofstr"].gateway is not modbus["counter-north"].gateway
    assert (modbus["counter-east"].unit_id, modbus["seg-lindenweg"].unit_id) == (2, 3)
    assert len({id(m.gateway) for m in modbus.values()}) == 2
    assert isinstance(clients["school"], OpcUaDevice)
    assert not any(m.gateway.connected for m in modbus.values())  # nothing connects yet


def test_factory_gives_a_gateway_the_largest_in_flight_limit_behind_it(
    demo_site: SiteConfig,
) -> None:
    def with_limit(d: Device, n: int) -> Device:
        return d.model_copy(update={"endpoint": d.endpoint.model_copy(update={"max_in_flight": n})})

    devices = [with_limit(d, 3) if d.id == "counter-east" else d for d in demo_site.devices]
    clients = build_clients(demo_site.model_copy(update={"devices": devices}))
    north, east, seg = clients["counter-north"], clients["counter-east"], clients["seg-lindenweg"]
    assert isinstance(north, ModbusDevice) and isinstance(east, ModbusDevice)
    assert isinstance(seg, ModbusDevice)
    assert north.gateway is east.gateway
    assert north.gateway.max_in_flight == 3
    assert seg.gateway.max_in_flight == 1  # the default: one connection, serialised


# ------------------------------------------------------------------------------ registry


class FakeClient:
    """A client of some other protocol's driver."""

    def __init__(self, device_id: str) -> None:
        self._id = device_id

    @property
    def device_id(self) -> str:
        return self._id

    async def read(self, now: datetime) -> dict[str, PointReading]:
        return {}

    async def write(self, point: str, value: float) -> float:
        return value

    async def close(self) -> None:
        pass


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, factory.Builder]:
    """The builder registry, as it is, for this test only."""
    builders = dict(factory._BUILDERS)
    monkeypatch.setattr(factory, "_BUILDERS", builders)
    return builders


def test_modbus_and_opcua_are_registered() -> None:
    assert registered_protocols() == ("modbus", "opcua")


@pytest.mark.usefixtures("registry")
def test_each_protocols_devices_go_to_its_builder(demo_site: SiteConfig) -> None:
    calls: list[list[str]] = []

    def build_other(
        site: SiteConfig, devices: Sequence[Device], *, monotonic: Callable[[], float]
    ) -> Mapping[str, DeviceClient]:
        calls.append([d.id for d in devices])
        return {d.id: FakeClient(d.id) for d in devices}

    register_builder("opcua", build_other, replace=True)
    clients = build_clients(demo_site)
    assert calls == [["school"]]  # all of its protocol's devices, in one call
    assert isinstance(clients["school"], FakeClient)
    assert list(clients) == [d.id for d in demo_site.devices]  # configuration order
    assert all(isinstance(c, ModbusDevice) for k, c in clients.items() if k != "school")


@pytest.mark.usefixtures("registry")
def test_a_second_builder_for_a_protocol_is_refused() -> None:
    register_builder("opcua", build_opcua_clients)  # the same one again: nothing changes
    with pytest.raises(ValueError, match="protocol 'opcua' has a builder already"):
        register_builder("opcua", lambda site, devices, *, monotonic: {})


def test_a_protocol_without_a_driver_is_refused_before_anything_is_built(
    demo_site: SiteConfig, registry: dict[str, factory.Builder]
) -> None:
    built: list[str] = []

    def build_modbus(
        site: SiteConfig, devices: Sequence[Device], *, monotonic: Callable[[], float]
    ) -> Mapping[str, DeviceClient]:
        built.extend(d.id for d in devices)
        return {}

    registry["modbus"] = build_modbus
    del registry["opcua"]
    with pytest.raises(NoDriverError) as info:
        build_clients(demo_site)
    assert (info.value.protocol, info.value.device, info.value.registered) == (
        "opcua", "school", ("modbus",),
    )  # fmt: skip
    assert str(info.value) == (
        "no driver for protocol 'opcua' (device 'school'); drivers are registered for: modbus"
    )
    assert isinstance(info.value, LookupError)
    assert built == []
