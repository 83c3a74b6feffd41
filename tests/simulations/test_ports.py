"""with_free_ports: a copy of the site on fresh loopback ports."""

from __future__ import annotations

from laterne.models.site import ModbusEndpoint, OpcUaEndpoint, SiteConfig
from laterne.simulations.ports import free_ports, with_free_ports


def test_endpoints_move_to_free_loopback_ports_keeping_gateways_and_units(
    demo_site: SiteConfig,
) -> None:
    moved = with_free_ports(demo_site)
    assert moved is not demo_site
    old = {d.id: d.endpoint for d in demo_site.devices}
    new = {d.id: d.endpoint for d in moved.devices}
    assert old.keys() == new.keys()
    ports = set()
    for dev, ep in new.items():
        before = old[dev]
        if isinstance(ep, ModbusEndpoint):
            assert isinstance(before, ModbusEndpoint)
            assert ep.host == "127.0.0.1" and ep.unit_id == before.unit_id
            assert ep.port != before.port
            ports.add(ep.port)
        else:
            assert isinstance(ep, OpcUaEndpoint) and isinstance(before, OpcUaEndpoint)
            assert ep.url.startswith("opc.tcp://127.0.0.1:") and ep.url.endswith("/laterne/")
            assert ep.url != before.url
            ports.add(int(ep.url.split(":")[2].split("/")[0]))

    def port(dev: str) -> int:
        ep = new[dev]
        assert isinstance(ep, ModbusEndpoint)
        return ep.port

    assert port("counter-north") == port("counter-east")  # one gateway stays one gateway
    assert port("seg-bahnhofstr") == port("seg-lindenweg") != port("counter-north")
    assert len(ports) == 3
    # the original is untouched and everything else is carried over
    assert isinstance(old["counter-north"], ModbusEndpoint) and old["counter-north"].port == 15020
    assert moved.segments == demo_site.segments and moved.profiles == demo_site.profiles


def test_free_ports_are_distinct() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
