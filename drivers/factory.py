"""Build one :class:`~laterne.drivers.base.DeviceClient` per device of a site.

Rule: every Modbus device at the same ``host:port`` shares one :class:`ModbusGateway` (one TCP
connection with requests serialised, or a pool of ``max_in_flight`` connections); every OPC-UA
device gets its own client. Building opens no
connection: the drivers connect on first use.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from laterne.models.site import ModbusEndpoint, SiteConfig

from .base import DeviceClient
from .modbus import ModbusDevice, ModbusGateway
from .opcua import OpcUaDevice

__all__ = ["build_clients"]


def build_clients(
    site: SiteConfig, *, monotonic: Callable[[], float] = time.monotonic
) -> dict[str, DeviceClient]:
    """Clients for every device of ``site``, keyed by device id, in configuration order.

    A gateway's request timeout is the largest ``timeout_s`` of the devices behind it (one
    connection has one timeout), and its ``max_in_flight`` the largest of their endpoints' (one
    device asking for parallel requests speaks for the box). ``monotonic`` is the clock of every
    reconnect backoff [s].
    """
    timeout_s: dict[tuple[str, int], float] = {}
    in_flight: dict[tuple[str, int], int] = {}
    for device in site.devices:
        if isinstance(device.endpoint, ModbusEndpoint):
            key = (device.endpoint.host, device.endpoint.port)
            timeout_s[key] = max(timeout_s.get(key, 0.0), device.timeout_s)
            in_flight[key] = max(in_flight.get(key, 1), device.endpoint.max_in_flight)

    gateways: dict[tuple[str, int], ModbusGateway] = {}
    clients: dict[str, DeviceClient] = {}
    for device in site.devices:
        profile = site.profiles[device.profile]
        endpoint = device.endpoint
        if isinstance(endpoint, ModbusEndpoint):
            key = (endpoint.host, endpoint.port)
            if key not in gateways:
                gateways[key] = ModbusGateway(
                    endpoint.host,
                    endpoint.port,
                    timeout_s=timeout_s[key],
                    max_in_flight=in_flight[key],
                    monotonic=monotonic,
                )
            clients[device.id] = ModbusDevice(device, profile, gateways[key])
        else:
            clients[device.id] = OpcUaDevice(device, profile, monotonic=monotonic)
    return clients
