"""The raw-number encoding every driver shares: rounding, ranges, refusals, read-back tolerance;
and the Modbus codec and the OPC-UA driver agreeing on it, type for type."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from asyncua import ua

from laterne.drivers.field.errors import EncodeError
from laterne.drivers.field.modbus_codec import encode
from laterne.drivers.field.opcua import ua_raw_from_value
from laterne.drivers.field.scaling import (
    RAW_TYPES,
    float_type,
    int_type,
    raw_from_value,
    readback_tolerance,
    round_half_away,
)
from laterne.models.site import ModbusPoint, OpcUaPoint

VT = ua.VariantType


def modbus(type_: str, **kw: Any) -> ModbusPoint:
    table = "coil" if type_ == "bool" else "holding"
    return ModbusPoint.model_validate({"table": table, "address": 0, "type": type_, **kw})


def opcua(**kw: Any) -> OpcUaPoint:
    return OpcUaPoint.model_validate({"node": "ns=2;s=x", **kw})


def test_halves_round_away_from_zero() -> None:
    assert [round_half_away(x) for x in (2.5, -2.5, 0.5, -0.5, 2.4999, -2.4999, 3.0)] == [
        3, -3, 1, -1, 2, -2, 3,
    ]  # fmt: skip
    i16 = RAW_TYPES["i16"]
    assert raw_from_value(-1.25, modbus("i16", scale=0.5), i16) == -3  # -2.5 -> -3
    assert raw_from_value(42.37, modbus("u16", scale=0.1), RAW_TYPES["u16"]) == 424
    assert raw_from_value(-10.0, modbus("i16", scale=0.5, offset=-40), i16) == 60


def test_types_and_their_ranges() -> None:
    assert (int_type("x", 16, signed=True).lo, int_type("x", 16, signed=True).hi) == (
        -32768, 32767,
    )  # fmt: skip
    assert (RAW_TYPES["u64"].lo, RAW_TYPES["u64"].hi) == (0, 2**64 - 1)
    assert (RAW_TYPES["bool"].lo, RAW_TYPES["bool"].hi) == (0, 1)
    assert RAW_TYPES["f32"].hi == struct.unpack(">f", b"\x7f\x7f\xff\xff")[0]  # largest f32
    raw = raw_from_value(21.5, modbus("f64"), RAW_TYPES["f64"])
    assert raw == 21.5 and type(raw) is float
    raw = raw_from_value(21.0, modbus("i32"), RAW_TYPES["i32"])
    assert raw == 21 and type(raw) is int
    with pytest.raises(ValueError, match="no 16-bit float"):
        float_type("half", 16)


@pytest.mark.parametrize(
    ("value", "type_", "kw", "says"),
    [
        (math.nan, "u16", {}, "not a finite number"),
        (math.inf, "f64", {}, "not a finite number"),
        (1e308, "f64", {"scale": 1e-10}, "raw value inf is not finite"),  # overflows on scaling
        (65536, "u16", {}, "raw value 65536 is outside [0, 65535]"),
        (-0.6, "u16", {}, "raw value -1 is outside [0, 65535]"),
        (2, "bool", {}, "raw value 2 is outside [0, 1]"),
        (3.5e38, "f32", {}, "exceeds the f32 range"),
        (2**63, "i64", {}, "outside [-9223372036854775808, 9223372036854775807]"),
    ],
)
def test_unrepresentable_values_are_refused_saying_why(
    value: float, type_: str, kw: dict[str, Any], says: str
) -> None:
    with pytest.raises(EncodeError) as info:
        raw_from_value(value, modbus(type_, **kw), RAW_TYPES[type_])  # type: ignore[index]
    assert says in str(info.value) and info.value.type_name == type_


#: OPC-UA's numeric types and the Modbus data type with the same raw range
SAME_RANGE: list[tuple[ua.VariantType, str]] = [
    (VT.Boolean, "bool"),
    (VT.UInt16, "u16"),
    (VT.Int16, "i16"),
    (VT.UInt32, "u32"),
    (VT.Int32, "i32"),
    (VT.UInt64, "u64"),
    (VT.Int64, "i64"),
    (VT.Float, "f32"),
    (VT.Double, "f64"),
]
VALUES = [0.0, 0.5, 1.0, 1.5, -0.5, -2.5, 2.5, 100.05, -100.05, 65535.0, 65535.5, -32768.5,
          2.0**31, -(2.0**31) - 1, 2.0**53, 4e38, -4e38, math.nan, math.inf]  # fmt: skip


@pytest.mark.parametrize(("vt", "type_"), SAME_RANGE)
@pytest.mark.parametrize("scale", [1.0, 0.1, -0.5])
def test_modbus_and_opcua_encode_the_same_raw_numbers(
    vt: ua.VariantType, type_: str, scale: float
) -> None:
    """One encoding: a value the Modbus codec puts into registers is the raw number OPC-UA
    writes into a node of the same range, and what one refuses the other refuses."""
    point, node = modbus(type_, scale=scale), opcua(scale=scale)
    for value in VALUES:
        try:
            registers = encode(value, point)
        except EncodeError:
            with pytest.raises(EncodeError):
                ua_raw_from_value(value, node, vt)
            continue
        raw = ua_raw_from_value(value, node, vt)
        if type_ == "bool":
            assert registers == [int(raw)] and type(raw) is bool
        elif type_ in ("f32", "f64"):
            fmt = ">f" if type_ == "f32" else ">d"
            assert struct.pack(f">{len(registers)}H", *registers) == struct.pack(fmt, raw)
        else:
            code = {"u16": "H", "i16": "h", "u32": "I", "i32": "i", "u64": "Q", "i64": "q"}
            packed = struct.pack(f">{len(registers)}H", *registers)
            assert struct.unpack(">" + code[type_], packed)[0] == raw and type(raw) is int


def test_readback_tolerance() -> None:
    assert readback_tolerance(12.3, modbus("u16", scale=0.1)) == pytest.approx(0.05)
    assert readback_tolerance(1.0, modbus("bool")) == pytest.approx(0.5)
    assert readback_tolerance(100.0, modbus("f32")) == pytest.approx(100 * 4 * 2**-24)
    assert readback_tolerance(100.0, modbus("f64")) < 1e-12
    # OPC-UA: the node's own type decides, not the point's
    assert readback_tolerance(100.0, opcua(type="f64"), RAW_TYPES["f32"]) == pytest.approx(
        100 * 4 * 2**-24
    )
    assert readback_tolerance(20.0, opcua(scale=0.5), int_type("Int16", 16, signed=True)) == (
        pytest.approx(0.25)
    )
