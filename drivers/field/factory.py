"""Build one :class:`~laterne.drivers.field.base.DeviceClient` per device of a site, by protocol.

Rule: the clients of a protocol's devices are built by the one *builder* registered for that
protocol (:func:`register_builder`), never by a branch on the endpoint's shape here. A builder
gets every device of its protocol at once, so it decides what they share: Modbus devices at the
same ``host:port`` share one :class:`~laterne.drivers.field.modbus.ModbusGateway` (one TCP
connection
with requests serialised, or a pool of ``max_in_flight`` connections); every OPC-UA device gets
its own client. Both are registered below; another driver (MQTT, LoRaWAN, ...) registers its
builder when its module is imported, next to its protocol's models in the site schema. A site
with a device whose protocol has no builder is refused with :class:`NoDriverError` before any
client is built. Building opens no connection: the drivers connect on first use.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from laterne.models.site import Device, ModbusEndpoint, SiteConfig

from .base import DeviceClient
from .modbus import ModbusDevice, ModbusGateway
from .opcua import OpcUaDevice

__all__ = [
    "Builder",
    "NoDriverError",
    "build_clients",
    "build_modbus_clients",
    "build_opcua_clients",
    "register_builder",
    "registered_protocols",
]


class Builder(Protocol):
    """Builds the clients of ``devices`` (all of one protocol, in configuration order), keyed
    by device id; ``monotonic`` is the clock of every reconnect backoff [s]."""

    def __call__(
        self, site: SiteConfig, devices: Sequence[Device], *, monotonic: Callable[[], float]
    ) -> Mapping[str, DeviceClient]: ...


class NoDriverError(LookupError):
    """A device's protocol has no registered builder. ``protocol`` is that protocol,
    ``device`` the first device of it, ``registered`` the protocols that have one."""

    def __init__(self, protocol: str, device: str, registered: Sequence[str]) -> None:
        self.protocol = protocol
        self.device = device
        self.registered = tuple(registered)
        super().__init__(
            f"no driver for protocol {protocol!r} (device {device!r}); drivers are registered "
            f"for: {', '.join(self.registered) or 'none'}"
        )


_BUILDERS: dict[str, Builder] = {}


def register_builder(protocol: str, builder: Builder, *, replace: bool = False) -> None:
    """Make ``builder`` build the clients of every device of ``protocol``.

    Raises
    ------
    ValueError
        ``protocol`` has a builder already and ``replace`` is false (two drivers for one
        protocol is a mistake, not a choice).
    """
    if protocol in _BUILDERS and not replace and _BUILDERS[protocol] is not builder:
        raise ValueError(f"protocol {protocol!r} has a builder already: {_BUILDERS[protocol]!r}")
    _BUILDERS[protocol] = builder


def registered_protocols() -> tuple[str, ...]:
    """The protocols that have a builder, in the order they were registered."""
    return tuple(_BUILDERS)


def build_clients(
    site: SiteConfig, *, monotonic: Callable[[], float] = time.monotonic
) -> dict[str, DeviceClient]:
    """Clients for every device of ``site``, keyed by device id, in configuration order.

    ``monotonic`` is the clock of every reconnect backoff [s].

    Raises
    ------
    NoDriverError
        a device's protocol has no builder (nothing is built then).
    """
    by_protocol: dict[str, list[Device]] = {}
    for device in site.devices:
        by_protocol.setdefault(site.profiles[device.profile].protocol, []).append(device)
    for protocol, devices in by_protocol.items():
        if protocol not in _BUILDERS:
            raise NoDriverError(protocol, devices[0].id, registered_protocols())
    built: dict[str, DeviceClient] = {}
    for protocol, devices in by_protocol.items():
        built.update(_BUILDERS[protocol](site, devices, monotonic=monotonic))
    return {d.id: built[d.id] for d in site.devices}


def build_modbus_clients(
    site: SiteConfig, devices: Sequence[Device], *, monotonic: Callable[[], float]
) -> dict[str, DeviceClient]:
    """One :class:`ModbusDevice` per device, one :class:`ModbusGateway` per ``host:port``.

    A gateway's request timeout is the largest ``timeout_s`` of the devices behind it (one
    connection has one timeout), and its ``max_in_flight`` the largest of their endpoints' (one
    device asking for parallel requests speaks for the box).
    """
    endpoints: list[tuple[Device, ModbusEndpoint]] = []
    for device in devices:
        if not isinstance(device.endpoint, ModbusEndpoint):  # the site validator refuses it
            raise TypeError(f"device {device.id!r} has no Modbus endpoint")
        endpoints.append((device, device.endpoint))
    timeout_s: dict[tuple[str, int], float] = {}
    in_flight: dict[tuple[str, int], int] = {}
    for device, ep in endpoints:
        key = (ep.host, ep.port)
        timeout_s[key] = max(timeout_s.get(key, 0.0), device.timeout_s)
        in_flight[key] = max(in_flight.get(key, 1), ep.max_in_flight)
    gateways: dict[tuple[str, int], ModbusGateway] = {}
    clients: dict[str, DeviceClient] = {}
    for device, ep in endpoints:
        key = (ep.host, ep.port)
        if key not in gateways:
            gateways[key] = ModbusGateway(
                ep.host,
                ep.port,
                timeout_s=timeout_s[key],
                max_in_flight=in_flight[key],
                monotonic=monotonic,
            )
        clients[device.id] = ModbusDevice(device, site.profiles[device.profile], gateways[key])
    return clients


def build_opcua_clients(
    site: SiteConfig, devices: Sequence[Device], *, monotonic: Callable[[], float]
) -> dict[str, DeviceClient]:
    """One :class:`OpcUaDevice` (one client, one session) per device."""
    return {
        d.id: OpcUaDevice(d, site.profiles[d.profile], monotonic=monotonic) for d in devices
    }


register_builder("modbus", build_modbus_clients)
register_builder("opcua", build_opcua_clients)
