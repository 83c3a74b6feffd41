"""The site emulator over real Modbus TCP and OPC-UA on loopback, read with plain clients."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.uaerrors import UaStatusCodeError
from pymodbus.client import AsyncModbusTcpClient

from laterne.controller.clock import ManualClock
from laterne.models.site import ModbusEndpoint, OpcUaEndpoint, PointRef, PointSpec, SiteConfig
from laterne.simulations.emulator import EmulatorError, SiteEmulator
from laterne.simulations.plant import building_heating_kw, segment_power_w
from laterne.simulations.ports import with_free_ports
from laterne.simulations.weather import outdoor_temp_c

T0 = datetime(2025, 1, 15, 6, 30, tzinfo=UTC)  # Wednesday 07:30 in Hagen: morning rush
U32 = AsyncModbusTcpClient.DATATYPE.UINT32


def modbus_port(site: SiteConfig, device_id: str) -> int:
    ep = site.device(device_id).endpoint
    assert isinstance(ep, ModbusEndpoint)
    return ep.port


def unit(site: SiteConfig, device_id: str) -> int:
    ep = site.device(device_id).endpoint
    assert isinstance(ep, ModbusEndpoint)
    return ep.unit_id


def opcua_url(site: SiteConfig, device_id: str) -> str:
    ep = site.device(device_id).endpoint
    assert isinstance(ep, OpcUaEndpoint)
    return ep.url


async def modbus_client(site: SiteConfig, device_id: str) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient(
        "127.0.0.1", port=modbus_port(site, device_id), timeout=2, retries=0
    )
    assert await client.connect()
    return client


async def read_u32(client: AsyncModbusTcpClient, address: int, device_id: int) -> int:
    rr = await client.read_input_registers(address, count=2, device_id=device_id)
    assert not rr.isError()
    value = client.convert_from_registers(rr.registers, U32)
    assert isinstance(value, int)
    return value


@pytest.fixture
async def emulator(demo_site: SiteConfig) -> AsyncIterator[SiteEmulator]:
    emu = SiteEmulator(with_free_ports(demo_site), start=T0, counter_offset_veh=2**32 - 300)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


async def test_counters_increase_between_steps_and_wrap_past_2_32(emulator: SiteEmulator) -> None:
    site = emulator.site
    client = await modbus_client(site, "counter-north")
    try:
        north = unit(site, "counter-north")
        first = [await read_u32(client, a, north) for a in (0, 2)]
        assert first == [2**32 - 300] * 2

        await emulator.step(T0 + timedelta(minutes=2))
        second = [await read_u32(client, a, north) for a in (0, 2)]
        assert all(b > a for a, b in zip(first, second, strict=True))

        await emulator.step(T0 + timedelta(minutes=30))  # ~500 vehicles per main-road lane
        third = [await read_u32(client, a, north) for a in (0, 2)]
        assert all(c < b for b, c in zip(second, third, strict=True))  # wrapped past 2^32
        plant = emulator.plant.counter_veh[:2]
        assert np.all(plant > 2**32)  # the plant's count itself never wraps
        assert third == [int(v) % 2**32 for v in plant]

        rr = await client.read_input_registers(4, count=1, device_id=north)
        assert rr.registers == [0]  # status
    finally:
        client.close()


async def test_dim_written_by_a_client_changes_power_after_next_step(
    emulator: SiteEmulator,
) -> None:
    site = emulator.site
    client = await modbus_client(site, "seg-elberfelder")
    try:
        dev = unit(site, "seg-elberfelder")
        rr = await client.read_holding_registers(0, count=1, device_id=dev)
        assert rr.registers == [1000]  # fail-safe 100 % in 0.1 % steps
        full_w = 30 * 60.0
        assert await read_u32(client, 0, dev) == round(full_w / 0.1)

        assert not (await client.write_register(0, 400, device_id=dev)).isError()  # 40 %
        assert await read_u32(client, 0, dev) == round(full_w / 0.1)  # not before the step
        await emulator.step(T0 + timedelta(minutes=1))
        assert emulator.plant.dim_pct[1] == pytest.approx(40.0)
        expected_w = full_w * (0.08 + 0.92 * 0.40)
        assert await read_u32(client, 0, dev) * 0.1 == pytest.approx(expected_w, abs=0.1)
        # the minute before the step ran at the new level, energy counter in whole Wh
        energy_wh = emulator.plant.segment_energy_wh[1]
        assert energy_wh == pytest.approx(expected_w / 60)
        assert await read_u32(client, 2, dev) == int(energy_wh)
        rr = await client.read_input_registers(4, count=1, device_id=dev)
        assert rr.registers == [0]  # failed_lamps
        # the other segments on the same gateway are untouched
        np.testing.assert_array_equal(emulator.plant.dim_pct[[0, 2]], [100.0, 80.0])
    finally:
        client.close()


async def test_opcua_points_are_typed_and_a_written_setpoint_reaches_the_plant(
    emulator: SiteEmulator,
) -> None:
    await emulator.step(T0 + timedelta(minutes=5))
    async with Client(opcua_url(emulator.site, "school"), timeout=5) as client:
        setpoint = client.get_node("ns=2;s=school.classrooms.setpoint")
        temp = client.get_node("ns=2;s=school.classrooms.temperature")
        power = client.get_node("ns=2;s=school.heating.power")
        outdoor = client.get_node("ns=2;s=school.outdoor.temperature")
        assert await setpoint.read_data_type_as_variant_type() == ua.VariantType.Double
        assert await setpoint.read_value() == 19.0  # zone default
        assert await temp.read_value() == pytest.approx(emulator.plant.zone_temp_c[0])
        expected_outdoor_c = outdoor_temp_c(emulator.params.weather, emulator.plant.ts)
        assert await outdoor.read_value() == pytest.approx(expected_outdoor_c)

        await setpoint.write_value(ua.DataValue(ua.Variant(23.5, ua.VariantType.Double)))
        with pytest.raises(UaStatusCodeError):  # measurements are read-only
            await temp.write_value(ua.DataValue(ua.Variant(30.0, ua.VariantType.Double)))

        await emulator.step(T0 + timedelta(minutes=35))
        assert emulator.plant.setpoint_c[0] == 23.5
        assert emulator.plant.setpoint_c[1] == 17.0
        heating_kw = building_heating_kw(emulator.layout, emulator.params, emulator.plant)[0]
        assert heating_kw > 100.0  # classrooms far below 23.5 °C: near full power
        assert await power.read_value() == pytest.approx(heating_kw)
        energy = await client.get_node("ns=2;s=school.heating.energy").read_value()
        assert energy == pytest.approx(emulator.plant.building_heating_energy_kwh[0])


async def test_stop_and_restart_the_server_of_a_device(emulator: SiteEmulator) -> None:
    site = emulator.site
    client = await modbus_client(site, "seg-lindenweg")
    dev = unit(site, "seg-lindenweg")
    await client.write_register(0, 333, device_id=dev)
    await emulator.step(T0 + timedelta(minutes=1))
    client.close()

    offline = await emulator.stop_device_server("seg-lindenweg")
    assert offline == ("seg-bahnhofstr", "seg-elberfelder", "seg-lindenweg")  # one gateway
    refused = AsyncModbusTcpClient("127.0.0.1", port=modbus_port(site, "seg-lindenweg"), retries=0)
    assert not await refused.connect()
    refused.close()
    # the counters on the other gateway still answer, and the plant keeps running
    other = await modbus_client(site, "counter-east")
    before = await read_u32(other, 0, unit(site, "counter-east"))
    await emulator.step(T0 + timedelta(minutes=20))
    assert await read_u32(other, 0, unit(site, "counter-east")) != before
    other.close()
    assert emulator.plant.dim_pct[2] == pytest.approx(33.3)  # last command held

    assert await emulator.start_device_server("seg-lindenweg") == offline
    client = await modbus_client(site, "seg-lindenweg")
    try:
        rr = await client.read_holding_registers(0, count=1, device_id=dev)
        assert rr.registers == [333]  # the last command, restored
        power_w = segment_power_w(emulator.layout, emulator.plant.dim_pct)[2]
        assert await read_u32(client, 0, dev) == round(power_w / 0.1)
        assert await read_u32(client, 2, dev) == int(emulator.plant.segment_energy_wh[2])
    finally:
        client.close()

    url = opcua_url(site, "school")
    assert await emulator.stop_device_server("school") == ("school",)
    with pytest.raises((OSError, asyncio.TimeoutError)):
        async with Client(url, timeout=2):
            pass
    await emulator.start_device_server("school")
    async with Client(url, timeout=5) as opc:
        value = await opc.get_node("ns=2;s=school.gym.temperature").read_value()
        assert value == pytest.approx(emulator.plant.zone_temp_c[1])

    with pytest.raises(KeyError):
        await emulator.stop_device_server("no-such-device")


async def test_run_steps_on_the_clock_until_stopped(emulator: SiteEmulator) -> None:
    clock = ManualClock(T0)
    task = asyncio.create_task(emulator.run(clock, 60.0))
    for _ in range(10_000):
        if emulator.plant.ts >= T0 + timedelta(minutes=10) or task.done():
            break
        await asyncio.sleep(0)
    assert emulator.plant.ts >= T0 + timedelta(minutes=10)
    await emulator.stop()
    await asyncio.wait_for(task, timeout=5)  # the loop ends once the emulator is stopped
    assert (emulator.plant.ts - T0).total_seconds() % 60 == 0


async def test_start_fails_loudly_when_a_port_is_taken(demo_site: SiteConfig) -> None:
    site = with_free_ports(demo_site)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", modbus_port(site, "seg-bahnhofstr")))
        squatter.listen()
        emu = SiteEmulator(site, start=T0)
        with pytest.raises(EmulatorError, match="cannot listen"):
            await emu.start()
    # whatever had started was stopped again: the counters' port is free
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", modbus_port(site, "counter-north")))


def test_a_mapped_point_with_an_unknown_unit_is_refused(demo_site: SiteConfig) -> None:
    prof = demo_site.profiles["segment-controller"]
    odd = prof.model_copy(
        update={
            "points": {
                **prof.points,
                "power_w": prof.points["power_w"].model_copy(update={"unit": "hp"}),
            }
        }
    )
    site = demo_site.model_copy(
        update={"profiles": {**demo_site.profiles, "segment-controller": odd}}
    )
    with pytest.raises(EmulatorError, match="hp"):
        SiteEmulator(site, start=T0)


def _site_with_more_point_kinds(demo_site: SiteConfig) -> SiteConfig:
    seg = demo_site.profiles["segment-controller"]
    bms = demo_site.profiles["school-bms"]
    seg_points = {
        **seg.points,
        "power_w": seg.points["power_w"].model_copy(update={"word_order": "little"}),
        "lamp_fault": PointSpec(table="discrete", address=17, type="bool"),
        "manual_mode": PointSpec(table="coil", address=3, type="bool", writable=True, min=0, max=1),
        "cabinet_temp_c": PointSpec(table="holding", address=10, type="i16", scale=0.1),
    }
    bms_points = {
        **bms.points,
        "boiler_status": PointSpec(node="ns=3;s=boiler.status", type="u16"),
        "gym_setpoint_c": bms.points["gym_setpoint_c"].model_copy(update={"type": "f32"}),
    }
    profiles = {
        **demo_site.profiles,
        "segment-controller": seg.model_copy(update={"points": seg_points}),
        "school-bms": bms.model_copy(update={"points": bms_points}),
    }
    return with_free_ports(demo_site.model_copy(update={"profiles": profiles}))


async def test_bits_gaps_word_order_and_more_opcua_types(demo_site: SiteConfig) -> None:
    site = _site_with_more_point_kinds(demo_site)
    async with SiteEmulator(site, start=T0) as emu:
        client = await modbus_client(site, "seg-bahnhofstr")
        try:
            dev = unit(site, "seg-bahnhofstr")
            rr = await client.read_discrete_inputs(17, count=1, device_id=dev)
            assert not rr.isError() and rr.bits[0] is False
            assert (await client.read_coils(3, count=1, device_id=dev)).bits[0] is False
            assert not (await client.write_coil(3, True, device_id=dev)).isError()
            assert (await client.read_coils(3, count=1, device_id=dev)).bits[0] is True
            rr = await client.read_holding_registers(0, count=11, device_id=dev)
            assert rr.registers[0] == 1000 and rr.registers[10] == 0  # dim, gap, cabinet temp
            rr = await client.read_input_registers(0, count=2, device_id=dev)
            power = client.convert_from_registers(rr.registers, U32, word_order="little")
            assert power == round(42 * 90 / 0.1)
            rr = await client.read_input_registers(10, count=1, device_id=dev)
            assert rr.isError()  # beyond the profile's table: illegal address
            await emu.step(T0 + timedelta(minutes=1))
            assert (await client.read_coils(3, count=1, device_id=dev)).bits[0] is True  # kept
        finally:
            client.close()

        async with Client(opcua_url(site, "school"), timeout=5) as opc:
            status = opc.get_node("ns=3;s=boiler.status")
            assert await status.read_data_type_as_variant_type() == ua.VariantType.UInt16
            assert await status.read_value() == 0
            gym = opc.get_node("ns=2;s=school.gym.setpoint")
            assert await gym.read_data_type_as_variant_type() == ua.VariantType.Float
            await gym.write_value(ua.DataValue(ua.Variant(20.5, ua.VariantType.Float)))
        await emu.step(T0 + timedelta(minutes=2))
        assert emu.plant.setpoint_c[1] == 20.5


async def test_bit_fields_read_zero_unless_mapped_and_share_their_register(
    demo_site: SiteConfig,
) -> None:
    seg = demo_site.profiles["segment-controller"]
    points = {
        **seg.points,
        "lamp_fault": PointSpec(table="input", address=5, type="u16", bit=0),
        "lamps_on": PointSpec(table="input", address=5, type="u16", bit=1),
        "door_open": PointSpec(table="input", address=5, type="u16", bit=3),
        # a bit of a register that also holds a whole point: that point's value decides it
        "many_failed": PointSpec(table="input", address=4, type="u16", bit=2),
    }
    profiles = {
        **demo_site.profiles,
        "segment-controller": seg.model_copy(update={"points": points}),
    }
    segments = [
        s.model_copy(update={"power": PointRef.model_validate("seg-bahnhofstr.lamps_on")})
        if s.id == "bahnhofstr"
        else s
        for s in demo_site.segments
    ]
    site = with_free_ports(
        demo_site.model_copy(update={"profiles": profiles, "segments": segments})
    )
    async with SiteEmulator(site, start=T0) as emu:
        client = await modbus_client(site, "seg-bahnhofstr")
        try:
            for dev_id, lamps_on in (("seg-bahnhofstr", 1), ("seg-lindenweg", 0)):
                rr = await client.read_input_registers(0, count=6, device_id=unit(site, dev_id))
                assert not rr.isError()
                assert rr.registers[5] == lamps_on << 1  # mapped bit set, the others 0
                assert rr.registers[4] == 0  # failed_lamps, untouched by the bit field
            rr = await client.read_input_registers(0, count=2, device_id=1)
            assert rr.registers == [0, 0]  # power_w: no longer mapped, so 0
            await emu.step(T0 + timedelta(minutes=1))
            rr = await client.read_input_registers(5, count=1, device_id=1)
            assert rr.registers == [0b10]
        finally:
            client.close()


def test_fault_injection_refuses_what_the_site_cannot_have(demo_site: SiteConfig) -> None:
    emulator = SiteEmulator(demo_site, start=T0)
    with pytest.raises(EmulatorError, match="unknown segment 'nope'; known: bahnhofstr"):
        emulator.set_lamps_out("nope", 1)
    with pytest.raises(EmulatorError, match="has 24 luminaires"):
        emulator.set_lamps_out("lindenweg", 25)
    with pytest.raises(EmulatorError, match="stuck at 120"):
        emulator.set_driver_stuck("lindenweg", 120.0)


async def test_injected_faults_change_the_plant_not_the_controllers_read_back(
    demo_site: SiteConfig,
) -> None:
    emulator = SiteEmulator(demo_site, start=T0, poisson=False)
    emulator.set_lamps_out("bahnhofstr", 21)
    emulator.set_driver_stuck("elberfelder", 40.0)
    state = await emulator.step(T0 + timedelta(hours=1))  # not started: the plant only
    assert state.dim_pct[1] == 40.0  # drivers hold 40 %, told the fail-safe 100 %
    lamp_w = emulator.layout.segments.luminaire_power_w(state.dim_pct)
    assert state.segment_energy_wh[0] == pytest.approx(21 * lamp_w[0])  # half the lamps, 1 h
    assert state.segment_energy_wh[1] == pytest.approx(30 * lamp_w[1])
    emulator.set_lamps_out("bahnhofstr", 0)
    emulator.set_driver_stuck("elberfelder", None)
    state = await emulator.step(T0 + timedelta(hours=2))
    assert state.dim_pct[1] == 100.0
