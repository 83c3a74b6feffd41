"""Golden register tables, round trips and read planning for the pure Modbus codec."""

from __future__ import annotations

import math
from typing import Any

import pytest

from laterne.drivers.field.errors import DecodeError, EncodeError
from laterne.drivers.field.modbus_codec import (
    BlockDecoder,
    ReadBlock,
    decode,
    encode,
    extract,
    plan_reads,
)
from laterne.drivers.field.scaling import readback_tolerance
from laterne.models.site import ModbusPoint, OpcUaPoint


def spec(type_: str = "u16", **kw: Any) -> ModbusPoint:
    table = "coil" if type_ == "bool" else "holding"
    return ModbusPoint.model_validate({"table": table, "address": 0, "type": type_, **kw})


F32_123_456 = 123.45600128173828  # 123.456 rounded to the nearest f32

# (type, word_order, byte_order, scale, offset, registers, value) -- independent of pymodbus
GOLDEN: list[tuple[str, str, str, float, float, list[int], float]] = [
    ("u16", "big", "big", 1, 0, [0xBEEF], 48879),
    ("u16", "big", "little", 1, 0, [0xEFBE], 48879),
    ("i16", "big", "big", 1, 0, [0xFFFF], -1),
    ("i16", "big", "big", 1, 0, [0x8000], -32768),
    ("i16", "big", "big", 1, 0, [0x7FFF], 32767),
    ("u32", "big", "big", 1, 0, [0x1234, 0x5678], 0x12345678),
    ("u32", "little", "big", 1, 0, [0x5678, 0x1234], 0x12345678),
    ("u32", "big", "little", 1, 0, [0x3412, 0x7856], 0x12345678),
    ("u32", "little", "little", 1, 0, [0x7856, 0x3412], 0x12345678),
    ("i32", "big", "big", 1, 0, [0xFFFF, 0xFFFE], -2),
    ("i32", "little", "big", 1, 0, [0xFFFE, 0xFFFF], -2),
    # 64-bit values are exact in a float only up to 53 significant bits: low nibble 0 here
    ("u64", "big", "big", 1, 0, [0x0123, 0x4567, 0x89AB, 0xCDE0], float(0x0123456789ABCDE0)),
    ("u64", "little", "big", 1, 0, [0xCDE0, 0x89AB, 0x4567, 0x0123], float(0x0123456789ABCDE0)),
    ("i64", "big", "big", 1, 0, [0xFFFF, 0xFFFF, 0xFFFF, 0xFF85], -123),
    ("f32", "big", "big", 1, 0, [0x42F6, 0xE979], F32_123_456),
    ("f32", "little", "big", 1, 0, [0xE979, 0x42F6], F32_123_456),
    ("f32", "big", "little", 1, 0, [0xF642, 0x79E9], F32_123_456),
    ("f32", "little", "little", 1, 0, [0x79E9, 0xF642], F32_123_456),
    ("f32", "big", "big", 1, 0, [0xBF80, 0x0000], -1.0),
    ("f64", "big", "big", 1, 0, [0x3FF8, 0, 0, 0], 1.5),
    ("f64", "little", "little", 1, 0, [0, 0, 0, 0xF83F], 1.5),
    ("f64", "big", "big", 1, 0, [0x405E, 0xDD2F, 0x1A9F, 0xBE77], 123.456),
    ("f64", "little", "big", 1, 0, [0xBE77, 0x1A9F, 0xDD2F, 0x405E], 123.456),
    ("u16", "big", "big", 0.1, 0, [123], 12.3),
    ("i16", "big", "big", 0.5, -40, [130], 25.0),
    ("i16", "big", "big", 0.5, -40, [0xFFEC], -50.0),  # raw -20
    ("u32", "big", "big", 0.1, 0, [0x0001, 0x0000], 6553.6),
    ("bool", "big", "big", 1, 0, [1], 1.0),
    ("bool", "big", "big", 1, 0, [0], 0.0),
    ("bool", "big", "big", 100, 0, [1], 100.0),  # a relay shown as 0/100 %
]


@pytest.mark.parametrize(("type_", "wo", "bo", "scale", "offset", "regs", "value"), GOLDEN)
def test_decode_golden(
    type_: str, wo: str, bo: str, scale: float, offset: float, regs: list[int], value: float
) -> None:
    s = spec(type_, word_order=wo, byte_order=bo, scale=scale, offset=offset)
    assert decode(regs, s) == pytest.approx(value, rel=1e-15)


@pytest.mark.parametrize(("type_", "wo", "bo", "scale", "offset", "regs", "value"), GOLDEN)
def test_encode_golden(
    type_: str, wo: str, bo: str, scale: float, offset: float, regs: list[int], value: float
) -> None:
    s = spec(type_, word_order=wo, byte_order=bo, scale=scale, offset=offset)
    want = 123.456 if value == F32_123_456 else value  # f32 encoding rounds to the same words
    assert encode(want, s) == regs


ROUND_TRIP_VALUES: dict[str, list[float]] = {
    "u16": [0, 1, 65535],
    "i16": [-32768, -1, 0, 32767],
    "u32": [0, 2**32 - 1, 123456789],
    "i32": [-(2**31), -1, 2**31 - 1],
    "u64": [0, 2**53, 2**63],
    "i64": [-(2**63), -1, 2**53],
    "f32": [0.0, -1.5, 3.0e38, 1e-30, 21.25],
    "f64": [0.0, -1.5, 1e300, math.pi, 5e-324],
}


@pytest.mark.parametrize("type_", sorted(ROUND_TRIP_VALUES))
@pytest.mark.parametrize("wo", ["big", "little"])
@pytest.mark.parametrize("bo", ["big", "little"])
def test_round_trip(type_: str, wo: str, bo: str) -> None:
    s = spec(type_, word_order=wo, byte_order=bo)
    for v in ROUND_TRIP_VALUES[type_]:
        regs = encode(v, s)
        assert len(regs) == s.register_count
        assert all(0 <= r <= 0xFFFF for r in regs)
        got = decode(regs, s)
        assert got == pytest.approx(v, rel=2**-23 if type_ == "f32" else 1e-15)
        assert encode(got, s) == regs


def test_scaled_round_trip_is_within_half_a_step() -> None:
    s = spec("u16", scale=0.1)
    for v in [0.0, 12.3, 12.34, 99.96, 100.0]:
        got = decode(encode(v, s), s)
        assert abs(got - v) <= readback_tolerance(got, s)


def test_integer_encoding_rounds_half_away_from_zero() -> None:
    s = spec("i16")
    assert encode(2.5, s) == [3]
    assert encode(-2.5, s) == [0xFFFD]  # -3
    assert encode(2.4999, s) == [2]


@pytest.mark.parametrize(
    ("type_", "value", "kw"),
    [
        ("u16", 65536, {}),
        ("u16", -1, {}),
        ("u16", -0.6, {}),  # rounds to -1
        ("i16", 32768, {}),
        ("u16", 6553.6, {"scale": 0.1}),  # raw 65536
        ("u32", 2**32, {}),
        ("i64", 2**63, {}),
        ("u16", math.nan, {}),
        ("f32", math.inf, {}),
        ("f32", 3.5e38, {}),
        ("f64", math.nan, {}),
        ("bool", 2, {}),
        ("bool", -1, {}),
    ],
)
def test_encode_refuses_unrepresentable(type_: str, value: float, kw: dict[str, Any]) -> None:
    with pytest.raises(EncodeError):
        encode(value, spec(type_, **kw))


@pytest.mark.parametrize(
    ("type_", "regs"),
    [
        ("u16", []),
        ("u16", [1, 2]),
        ("u32", [1]),
        ("f64", [0, 0]),
        ("u16", [0x10000]),
        ("i16", [-1]),
        ("bool", [2]),
        ("f32", [0x7FC0, 0x0000]),  # NaN
        ("f32", [0x7F80, 0x0000]),  # +inf
        ("f64", [0xFFF0, 0, 0, 0]),  # -inf
    ],
)
def test_decode_refuses_garbage(type_: str, regs: list[int]) -> None:
    with pytest.raises(DecodeError):
        decode(regs, spec(type_))


# ---------------------------------------------------------------------------- planning


def points(*items: tuple[str, str, int, str]) -> dict[str, ModbusPoint]:
    """(name, table, address, type) -> specs"""
    return {
        name: ModbusPoint.model_validate({"table": table, "address": address, "type": type_})
        for name, table, address, type_ in items
    }


def test_adjacent_points_merge_into_one_request() -> None:
    plan = plan_reads(
        points(("a", "holding", 0, "u16"), ("b", "holding", 1, "u32"), ("c", "holding", 3, "f64"))
    )
    assert plan == [ReadBlock("holding", 0, 7, ("a", "b", "c"))]


def test_gaps_up_to_max_gap_are_read_through() -> None:
    pts = points(("a", "holding", 0, "u16"), ("b", "holding", 9, "u16"))  # 8 unused between
    assert plan_reads(pts) == [ReadBlock("holding", 0, 10, ("a", "b"))]
    pts = points(("a", "holding", 0, "u16"), ("b", "holding", 10, "u16"))  # 9 unused
    assert plan_reads(pts) == [
        ReadBlock("holding", 0, 1, ("a",)),
        ReadBlock("holding", 10, 1, ("b",)),
    ]
    assert plan_reads(pts, max_gap=9) == [ReadBlock("holding", 0, 11, ("a", "b"))]


def test_max_gap_zero_still_merges_adjacent_points() -> None:
    pts = points(("a", "input", 0, "u32"), ("b", "input", 2, "u16"), ("c", "input", 4, "u16"))
    assert plan_reads(pts, max_gap=0) == [
        ReadBlock("input", 0, 3, ("a", "b")),
        ReadBlock("input", 4, 1, ("c",)),
    ]


def test_tables_are_never_mixed() -> None:
    pts = points(
        ("h", "holding", 0, "u16"),
        ("i", "input", 0, "u16"),
        ("c", "coil", 0, "bool"),
        ("d", "discrete", 0, "bool"),
        ("i2", "input", 1, "u16"),
    )
    plan = plan_reads(pts)
    assert [(b.table, b.address, b.count, b.points) for b in plan] == [
        ("holding", 0, 1, ("h",)),
        ("input", 0, 2, ("i", "i2")),
        ("coil", 0, 1, ("c",)),
        ("discrete", 0, 1, ("d",)),
    ]
    assert [b.is_bits for b in plan] == [False, False, True, True]


def test_register_limit_splits_without_splitting_a_point() -> None:
    pts = points(*[(f"p{i}", "holding", 2 * i, "u32") for i in range(100)])  # 200 registers
    plan = plan_reads(pts)
    assert [(b.address, b.count) for b in plan] == [(0, 124), (124, 76)]
    for block in plan:
        assert block.count <= 125
        for name in block.points:
            a = pts[name].address
            assert a is not None
            assert block.address <= a and a + 2 <= block.end
    assert sorted(n for b in plan for n in b.points) == sorted(pts)


def test_bit_limit_is_2000() -> None:
    pts = points(("a", "coil", 0, "bool"), ("b", "coil", 1999, "bool"), ("c", "coil", 2000, "bool"))
    plan = plan_reads(pts, max_gap=5000)
    assert plan == [ReadBlock("coil", 0, 2000, ("a", "b")), ReadBlock("coil", 2000, 1, ("c",))]


def test_custom_limit() -> None:
    pts = points(*[(f"p{i}", "input", i, "u16") for i in range(10)])
    assert [b.count for b in plan_reads(pts, max_count=4)] == [4, 4, 2]
    with pytest.raises(ValueError, match="request limit"):
        plan_reads(points(("a", "input", 0, "f64")), max_count=3)


def test_plan_refuses_points_without_location_and_negative_gap() -> None:
    with pytest.raises(ValueError, match="no Modbus"):
        plan_reads({"x": OpcUaPoint(node="ns=2;s=x")})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="max_gap"):
        plan_reads(points(("a", "holding", 0, "u16")), max_gap=-1)


def test_extract_slices_one_point_out_of_a_block() -> None:
    pts = points(("a", "holding", 10, "u16"), ("b", "holding", 12, "u32"))
    (block,) = plan_reads(pts)
    assert block == ReadBlock("holding", 10, 4, ("a", "b"))
    regs = [7, 99, 0x1234, 0x5678]
    assert extract(regs, block, pts["a"]) == [7]
    assert extract(regs, block, pts["b"]) == [0x1234, 0x5678]
    assert decode(extract(regs, block, pts["b"]), pts["b"]) == 0x12345678
    with pytest.raises(DecodeError):
        extract(regs[:3], block, pts["b"])
    with pytest.raises(ValueError):
        extract(regs, block, points(("z", "holding", 20, "u16"))["z"])
    with pytest.raises(ValueError):
        extract(regs, block, points(("z", "input", 10, "u16"))["z"])


# ---------------------------------------------------------------------------- bit fields


def bit_spec(bit: int, **kw: Any) -> ModbusPoint:
    return ModbusPoint.model_validate(
        {"table": "input", "address": 0, "type": "u16", "bit": bit, **kw}
    )


@pytest.mark.parametrize(
    ("register", "bit", "value"),
    [
        (0x0001, 0, 1.0),
        (0x0001, 1, 0.0),
        (0x8000, 15, 1.0),
        (0x8000, 14, 0.0),
        (0x7FFF, 15, 0.0),
        (0xFFFF, 7, 1.0),
        (0xA5A5, 0, 1.0),  # 1010 0101 1010 0101
        (0xA5A5, 1, 0.0),
        (0xA5A5, 2, 1.0),
        (0xA5A5, 13, 1.0),
        (0xA5A5, 14, 0.0),
        (0x0000, 0, 0.0),
    ],
)
def test_bit_field_golden(register: int, bit: int, value: float) -> None:
    assert decode([register], bit_spec(bit)) == value


def test_bit_field_scale_offset_and_refusals() -> None:
    assert decode([0x0004], bit_spec(2, scale=100)) == 100.0  # a flag shown as 0/100 %
    with pytest.raises(DecodeError):
        decode([0x10000], bit_spec(0))
    with pytest.raises(EncodeError, match="read-only"):
        encode(1, bit_spec(3))


def test_bit_fields_of_one_register_share_one_request() -> None:
    pts = {
        "status": ModbusPoint(table="input", address=4, type="u16"),
        "lamp_fault": ModbusPoint(table="input", address=5, type="u16", bit=0),
        "door_open": ModbusPoint(table="input", address=5, type="u16", bit=3),
        "on_battery": ModbusPoint(table="input", address=5, type="u16", bit=15),
        "count": ModbusPoint(table="input", address=6, type="u32"),
    }
    for gap in (0, 8):
        plan = plan_reads(pts, max_gap=gap)
        assert plan == [
            ReadBlock("input", 4, 4, ("status", "door_open", "lamp_fault", "on_battery", "count"))
        ]
    # alone in their register: one one-register request for three points
    only_bits = {k: v for k, v in pts.items() if v.bit is not None}
    assert plan_reads(only_bits, max_gap=0) == [
        ReadBlock("input", 5, 1, ("door_open", "lamp_fault", "on_battery"))
    ]
    # a whole-register point and bit fields of that same register
    pts["word"] = ModbusPoint(table="input", address=5, type="u16")
    (block,) = plan_reads(pts, max_gap=0)
    assert (block.address, block.count, len(block.points)) == (4, 4, 6)
    regs = [7, 0b1000_0000_0000_1001, 0x0001, 0x0002]
    got = {n: v for n, v, _e in BlockDecoder(block, pts).decode(regs)}
    assert got == {
        "status": 7.0,
        "lamp_fault": 1.0,
        "door_open": 1.0,
        "on_battery": 1.0,
        "word": float(0b1000_0000_0000_1001),
        "count": 65538.0,
    }


# ---------------------------------------------------------------------- counters at the wrap


@pytest.mark.parametrize(
    ("type_", "regs", "value"),
    [
        ("u16", [0xFFFF], 65535.0),
        ("u16", [0x0000], 0.0),
        ("u32", [0xFFFF, 0xFFFF], 4294967295.0),
        ("u32", [0x0000, 0x0000], 0.0),
        ("u32", [0x0000, 0x0001], 1.0),
        ("u32", [0xFFFF, 0xFFFE], 4294967294.0),
        ("u64", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], float(2**64 - 1)),  # 2**64 as a float
        ("u64", [0x001F, 0xFFFF, 0xFFFF, 0xFFFF], float(2**53 - 1)),  # largest exact one
        ("u64", [0, 0, 0, 0], 0.0),
        ("u64", [0, 0, 0, 1], 1.0),
    ],
)
@pytest.mark.parametrize("wo", ["big", "little"])
def test_counters_decode_to_raw_values_at_the_wrap(
    type_: str, regs: list[int], value: float, wo: str
) -> None:
    s = spec(type_, kind="counter", word_order=wo)
    words = regs if wo == "big" else regs[::-1]
    assert decode(words, s) == value
    (block,) = plan_reads({"c": s})
    assert BlockDecoder(block, {"c": s}).decode(words) == [("c", value, "")]


def test_u32_counter_wrap_difference_modulo_2_32() -> None:
    """What the policy does with two reads across the wrap: (new - old) mod 2**32."""
    s = spec("u32", kind="counter")
    before = decode([0xFFFF, 0xFFF0], s)
    after = decode([0x0000, 0x0010], s)
    assert (before, after) == (4294967280.0, 16.0)
    assert (after - before) % 2**32 == 32.0


# ---------------------------------------------------------------------- block decoding


def test_block_decoder_agrees_with_decode_for_every_golden_row() -> None:
    pts: dict[str, ModbusPoint] = {}
    regs: list[int] = []
    for i, (type_, wo, bo, scale, offset, words, _value) in enumerate(GOLDEN):
        if type_ == "bool":
            continue
        pts[f"p{i}"] = ModbusPoint.model_validate(
            {"table": "holding", "address": len(regs), "type": type_, "word_order": wo,
             "byte_order": bo, "scale": scale, "offset": offset}
        )  # fmt: skip
        regs.extend(words)
    (block,) = plan_reads(pts)
    got = BlockDecoder(block, pts).decode(regs)
    assert [n for n, _v, _e in got] == list(block.points)
    for name, value, error in got:
        assert error == ""
        assert value == decode(extract(regs, block, pts[name]), pts[name]), name


def test_block_decoder_bits_nan_and_short_answers() -> None:
    pts = points(("a", "coil", 0, "bool"), ("b", "coil", 3, "bool"))
    (block,) = plan_reads(pts)
    assert BlockDecoder(block, pts).decode([1, 0, 0, 0]) == [("a", 1.0, ""), ("b", 0.0, "")]
    with pytest.raises(DecodeError):
        BlockDecoder(block, pts).decode([2, 0, 0, 0])
    pts = points(("t", "input", 0, "f32"), ("ok", "input", 2, "u16"))
    (block,) = plan_reads(pts)
    dec = BlockDecoder(block, pts)
    (t, ok) = dec.decode([0x7FC0, 0x0000, 5])
    assert t[0] == "t" and math.isnan(t[1]) and "not a number" in t[2]
    assert ok == ("ok", 5.0, "")
    with pytest.raises(DecodeError, match="asked for 3"):
        dec.decode([0, 0])
    with pytest.raises(DecodeError, match="16-bit"):
        dec.decode([0, 0, 0x10000])
    assert dec.decode([0, 0, 5, 99]) == [("t", 0.0, ""), ("ok", 5.0, "")]  # extra ignored
    with pytest.raises(ValueError):
        BlockDecoder(ReadBlock("input", 1, 2, ("t",)), pts)
