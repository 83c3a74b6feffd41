"""The emulator's register codec: golden registers, and agreement with pymodbus' own converter."""

from __future__ import annotations

from typing import Literal

import pytest
from pymodbus.client import ModbusTcpClient

from laterne.models.site import PointSpec
from laterne.simulations.emulator import decode_registers, encode_registers, raw_value

DT = ModbusTcpClient.DATATYPE


def spec(type_: str, **kw: object) -> PointSpec:
    return PointSpec.model_validate({"table": "input", "address": 0, "type": type_, **kw})


@pytest.mark.parametrize(
    ("word_order", "byte_order", "registers"),
    [
        ("big", "big", [0x1234, 0x5678]),
        ("little", "big", [0x5678, 0x1234]),
        ("big", "little", [0x3412, 0x7856]),
        ("little", "little", [0x7856, 0x3412]),
    ],
)
def test_u32_word_and_byte_order(word_order: str, byte_order: str, registers: list[int]) -> None:
    s = spec("u32", word_order=word_order, byte_order=byte_order)
    assert encode_registers(0x12345678, s) == registers
    assert decode_registers(registers, s) == 0x12345678


@pytest.mark.parametrize(
    ("point", "value", "registers"),
    [
        (spec("f32"), 1.0, [0x3F80, 0x0000]),
        (spec("f32", word_order="little"), 1.0, [0x0000, 0x3F80]),
        (spec("f64"), -2.0, [0xC000, 0, 0, 0]),
        (spec("u16", scale=0.1), 25.0, [250]),
        (spec("i16", scale=0.1), -12.3, [0xFF85]),
        (spec("u32", scale=0.1), 3780.0, [0, 37800]),
        (spec("i32", offset=-40.0, scale=0.01), -41.0, [0xFFFF, 0xFF9C]),
        (spec("u64"), 2**40 + 7, [0, 0x0100, 0, 7]),
        (spec("u16"), 70000.0, [0xFFFF]),  # a measurement is clipped to its type
        (spec("u16"), -3.0, [0]),
        (spec("u32", kind="counter"), 2**32 + 5.7, [0, 5]),  # a counter wraps, whole units
        (spec("u16", kind="counter"), 65536 * 3 + 2, [2]),
    ],
)
def test_golden_registers(point: PointSpec, value: float, registers: list[int]) -> None:
    assert encode_registers(value, point) == registers


@pytest.mark.parametrize("type_", ["u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64"])
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_agrees_with_pymodbus_converter(type_: str, word_order: Literal["big", "little"]) -> None:
    value = {"u16": 54321, "i16": -1234, "f32": 21.5, "f64": -3.25}.get(type_, 123456789)
    if type_ == "i32" or type_ == "i64":
        value = -123456789
    data_type = {
        "u16": DT.UINT16, "i16": DT.INT16, "u32": DT.UINT32, "i32": DT.INT32,
        "u64": DT.UINT64, "i64": DT.INT64, "f32": DT.FLOAT32, "f64": DT.FLOAT64,
    }[type_]  # fmt: skip
    s = spec(type_, word_order=word_order)
    regs = encode_registers(value, s)
    assert regs == ModbusTcpClient.convert_to_registers(value, data_type, word_order=word_order)
    assert decode_registers(regs, s) == value


def test_raw_value_for_opcua_types() -> None:
    assert raw_value(21.7, spec("f64")) == 21.7
    assert raw_value(21.7, spec("i32")) == 22
    assert raw_value(2.0, PointSpec(table="coil", address=0, type="bool")) is True
    assert raw_value(0.0, PointSpec(table="coil", address=0, type="bool")) is False


def test_codec_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="registers"):
        decode_registers([1], spec("u32"))
    with pytest.raises(ValueError, match="encode"):
        encode_registers(float("nan"), spec("u16"))
    with pytest.raises(ValueError, match="coils"):
        encode_registers(1.0, PointSpec(table="coil", address=0, type="bool"))
