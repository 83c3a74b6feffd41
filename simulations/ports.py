"""Free loopback ports for emulated sites, so tests and benchmarks never clash with a running demo.

Rule: :func:`with_free_ports` returns a *copy* of a site whose every endpoint is moved to a port
that was free on 127.0.0.1 a moment ago; the site passed in is never changed. Modbus devices that
shared one ``host:port`` (a gateway with several unit ids) share one new port and keep their unit
ids; each OPC-UA URL gets its own new port and keeps its path. The ports are found by binding to
port 0 and releasing; another process could take one in between, which on loopback in a test
run is unlikely enough not to need more.
"""

from __future__ import annotations

import socket
from contextlib import ExitStack
from urllib.parse import urlsplit, urlunsplit

from laterne.models.site import Device, ModbusEndpoint, OpcUaEndpoint, SiteConfig

__all__ = ["LOOPBACK", "free_ports", "with_free_ports"]

LOOPBACK = "127.0.0.1"


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that are free on 127.0.0.1 right now."""
    with ExitStack() as stack:
        ports = []
        for _ in range(n):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _opcua_key(url: str) -> str:
    return url.rstrip("/")


def with_free_ports(site: SiteConfig) -> SiteConfig:
    """A copy of ``site`` with all Modbus and OPC-UA endpoints on fresh 127.0.0.1 ports."""
    modbus_keys: list[tuple[str, int]] = []
    opcua_keys: list[str] = []
    for d in site.devices:
        if isinstance(d.endpoint, ModbusEndpoint):
            key = (d.endpoint.host, d.endpoint.port)
            if key not in modbus_keys:
                modbus_keys.append(key)
        else:
            ukey = _opcua_key(d.endpoint.url)
            if ukey not in opcua_keys:
                opcua_keys.append(ukey)
    ports = free_ports(len(modbus_keys) + len(opcua_keys))
    modbus_port = dict(zip(modbus_keys, ports[: len(modbus_keys)], strict=True))
    opcua_port = dict(zip(opcua_keys, ports[len(modbus_keys) :], strict=True))

    devices: list[Device] = []
    for d in site.devices:
        ep = d.endpoint
        new_ep: ModbusEndpoint | OpcUaEndpoint
        if isinstance(ep, ModbusEndpoint):
            new_ep = ep.model_copy(
                update={"host": LOOPBACK, "port": modbus_port[(ep.host, ep.port)]}
            )
        else:
            parts = urlsplit(ep.url)
            netloc = f"{LOOPBACK}:{opcua_port[_opcua_key(ep.url)]}"
            new_ep = ep.model_copy(update={"url": urlunsplit(parts._replace(netloc=netloc))})
        devices.append(d.model_copy(update={"endpoint": new_ep}))
    return site.model_copy(update={"devices": devices})
