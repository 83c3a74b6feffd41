"""Build one :class:`~laterne.drivers.base.DeviceClient` per device of a site.

Rule: every Modbus device at the same ``host:port`` shares one :class:`ModbusGateway` (one TCP
connection, requests serialised); every OPC-UA device gets its own client. Building opens no
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
    connection has one timeout). ``monotonic`` is the clock of every reconnect backoff [s].
    """
    timeout_s: dict[tuple[str, int], float] = {}
    for device in site.devices:
        if isinstance(device.endpoint, ModbusEndpoint):
            key = (device.endpoint.host, device.endpoint.port)
            timeout_s[key] = max(timeout_s.get(key, 0.0), device.timeout_s)

    gateways: dict[tuple[str, int], ModbusGateway] = {}
    clients: dict[str, DeviceClient] = {}
    for device in site.devices:
        profile = site.profiles[device.profile]
        endpoint = device.endpoint
        if isinstance(endpoint, ModbusEndpoint):
            key = (endpoint.host, endpoint.port)
            if key not in gateways:
                gateways[key] = ModbusGateway(
                    endpoint.host, endpoint.port, timeout_s=timeout_s[key], monotonic=monotonic
                )
            clients[device.id] = ModbusDevice(device, profile, gateways[key])
        else:
            clients[device.id] = OpcUaDevice(device, profile, monotonic=monotonic)
    return clients
