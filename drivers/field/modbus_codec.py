"""Modbus register codec and read planner: pure functions, no I/O, no pymodbus.

Modbus only: what a register means. Scaling and the raw number's rounding and range are shared
with every driver (:mod:`laterne.drivers.field.scaling`); OPC-UA has no registers.

Rule: every bit of word order, byte order, scaling and request planning lives here and is
tested against golden register tables, so a pymodbus upgrade cannot silently change what a
register means (pymodbus changed coil bit order twice between 3.9 and 3.11). We use
:mod:`struct`, never pymodbus's converters.

Theory of operation
-------------------
A point of type ``t`` spans ``n = REGISTER_COUNT[t]`` 16-bit registers. Its raw value is the
big-endian ``struct`` encoding of ``t`` split into ``n`` words, most significant word first;
``word_order: little`` reverses the word list, ``byte_order: little`` swaps the two bytes inside
every word. So for ``u32 0x12345678``::

    word_order  byte_order  registers
    big         big         [0x1234, 0x5678]
    little      big         [0x5678, 0x1234]
    big         little      [0x3412, 0x7856]
    little      little      [0x7856, 0x3412]

The engineering value is ``raw * scale + offset``; :func:`encode` inverts it through
:func:`~laterne.drivers.field.scaling.raw_from_value`, the rounding (half away from zero) and range
checks every driver shares, and raises :class:`EncodeError` when the result does not fit the
type. ``bool`` points (coils, discrete inputs) have raw 0 or 1 and follow the same formula.
Values are Python floats, so 64-bit integers are exact only up to 2**53 (about 9.0e15).

A *bit field* (``bit: b`` on a ``u16`` holding or input register) has raw value
``(register >> b) & 1`` (bit 0 is the least significant bit), then ``raw * scale + offset``.
Bit fields are read-only: writing one would clobber the other bits of its register, so
:func:`encode` refuses them. Several bit fields of one register, and a whole-register point at
the same address, are served by one read of that register.

Counters of unsigned type decode to their raw value, ``0 .. 2**bits - 1``; turning a wrap
(``0xFFFFFFFF`` then ``0``) into a rate is the policy's business, modulo ``2**bits``.

:func:`plan_reads` groups the points of one device into as few requests as the protocol allows:
per table, sorted by address, a block grows while the next point starts at most ``max_gap``
registers after the block's end and the block stays within the protocol limit (125 registers,
2000 bits). A point is never split across blocks; points that share registers (bit fields of
one status word) share a block.

:class:`BlockDecoder` is the hot path of a poll: compiled once per block, it packs the block's
registers into bytes once and unpacks every point with a precompiled :class:`struct.Struct`, so a
poll does no per-register Python work beyond one ``struct.pack``. It agrees with :func:`decode`
point for point (tested).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from laterne.models.site import REGISTER_COUNT, ModbusPoint, ModbusTable

from .errors import DecodeError, EncodeError
from .scaling import RAW_TYPES, raw_from_value

__all__ = [
    "MAX_BITS_PER_READ",
    "MAX_REGISTERS_PER_READ",
    "BlockDecoder",
    "ReadBlock",
    "Table",
    "decode",
    "encode",
    "extract",
    "plan_reads",
]

Table = ModbusTable

#: protocol limits of one read request (Modbus Application Protocol v1.1b3, 6.1 to 6.4)
MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000

#: struct format character of each register type (packed big-endian)
_STRUCT_CODE: dict[str, str] = {
    "u16": "H",
    "i16": "h",
    "u32": "I",
    "i32": "i",
    "u64": "Q",
    "i64": "q",
    "f32": "f",
    "f64": "d",
}
_BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete"})
_TABLE_ORDER: tuple[Table, ...] = ("holding", "input", "coil", "discrete")


# ----------------------------------------------------------------------------- values


def decode(registers: Sequence[int], spec: ModbusPoint) -> float:
    """Decode the registers of one point into its engineering value ``raw * scale + offset``.

    Parameters
    ----------
    registers : exactly ``spec.register_count`` words, each 0..65535 (for ``bool``: one 0/1)
    spec : the point's type, word and byte order, scale and offset

    Raises
    ------
    DecodeError
        wrong number of registers, a word out of range, or a float that is NaN or infinite.
    """
    n = REGISTER_COUNT[spec.type]
    if len(registers) != n:
        raise DecodeError(f"{spec.type} needs {n} register(s), got {len(registers)}")
    if spec.type == "bool":
        if registers[0] not in (0, 1):
            raise DecodeError(f"bool raw value must be 0 or 1, got {registers[0]}")
        return float(registers[0] * spec.scale + spec.offset)
    for r in registers:
        if not 0 <= r <= 0xFFFF:
            raise DecodeError(f"register value {r} is not a 16-bit word")
    if spec.bit is not None:
        return float(((registers[0] >> spec.bit) & 1) * spec.scale + spec.offset)
    raw = struct.unpack(">" + _STRUCT_CODE[spec.type], _to_bytes(registers, spec))[0]
    if spec.type in ("f32", "f64") and not math.isfinite(raw):
        raise DecodeError(f"{spec.type} register content is {raw} (not a number)")
    return float(raw * spec.scale + spec.offset)


def encode(value: float, spec: ModbusPoint) -> list[int]:
    """Encode an engineering value into the point's registers: the inverse of :func:`decode`.

    Integer types round ``(value - offset) / scale`` half away from zero
    (:func:`~laterne.drivers.field.scaling.raw_from_value`).

    Raises
    ------
    EncodeError
        ``value`` is not finite, the raw value does not fit the type, or the point is a bit
        field (read-only: a write would clobber the register's other bits).
    """
    if spec.bit is not None:
        raise EncodeError(value, spec.type, f"bit field (bit {spec.bit}) is read-only")
    raw = raw_from_value(value, spec, RAW_TYPES[spec.type])
    if spec.type == "bool":
        return [int(raw)]
    packed = struct.pack(">" + _STRUCT_CODE[spec.type], raw)
    return _from_bytes(packed, spec)


def _to_bytes(registers: Sequence[int], spec: ModbusPoint) -> bytes:
    words = list(registers)
    if spec.word_order == "little":
        words.reverse()
    fmt = ">" if spec.byte_order == "big" else "<"
    return struct.pack(f"{fmt}{len(words)}H", *words)


def _from_bytes(packed: bytes, spec: ModbusPoint) -> list[int]:
    fmt = ">" if spec.byte_order == "big" else "<"
    words = list(struct.unpack(f"{fmt}{len(packed) // 2}H", packed))
    if spec.word_order == "little":
        words.reverse()
    return words


# ---------------------------------------------------------------------------- planning


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers (or bits) of ``table`` from ``address`` on.

    ``points`` names the points it serves, in address order.
    """

    table: Table
    address: int
    count: int
    points: tuple[str, ...]

    @property
    def end(self) -> int:
        """First address after the block."""
        return self.address + self.count

    @property
    def is_bits(self) -> bool:
        """True for coils and discrete inputs (one bit per address)."""
        return self.table in _BIT_TABLES


def plan_reads(
    points: Mapping[str, ModbusPoint],
    max_gap: int = 8,
    max_count: int = MAX_REGISTERS_PER_READ,
    max_bit_count: int = MAX_BITS_PER_READ,
) -> list[ReadBlock]:
    """Group points into as few contiguous read requests as possible.

    Parameters
    ----------
    points : name -> spec, each a :class:`~laterne.models.site.ModbusPoint`
    max_gap : read through at most this many unused registers (bits) between two points
    max_count : largest register request (protocol limit 125)
    max_bit_count : largest coil/discrete request (protocol limit 2000)

    Returns
    -------
    Blocks ordered by table (holding, input, coil, discrete), then address.

    Raises
    ------
    ValueError
        a point without a Modbus location, a negative gap, or a limit smaller than a point.
    """
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    by_table: dict[Table, list[tuple[int, int, str]]] = {}
    for name, spec in points.items():
        if not isinstance(spec, ModbusPoint):
            raise ValueError(f"point {name!r} has no Modbus table/address")
        by_table.setdefault(spec.table, []).append((spec.address, spec.register_count, name))

    blocks: list[ReadBlock] = []
    for table in _TABLE_ORDER:
        items = sorted(by_table.get(table, []))
        if not items:
            continue
        limit = max_bit_count if table in _BIT_TABLES else max_count
        for _address, count, name in items:
            if count > limit:
                raise ValueError(f"point {name!r} spans {count} > {limit} (the request limit)")
        first_address, first_count, first_name = items[0]
        start, end, names = first_address, first_address + first_count, [first_name]
        for address, count, name in items[1:]:
            new_end = max(end, address + count)
            if address - end <= max_gap and new_end - start <= limit:
                end = new_end
                names.append(name)
            else:
                blocks.append(ReadBlock(table, start, end - start, tuple(names)))
                start, end, names = address, address + count, [name]
        blocks.append(ReadBlock(table, start, end - start, tuple(names)))
    return blocks


def extract(block_registers: Sequence[int], block: ReadBlock, spec: ModbusPoint) -> list[int]:
    """The registers (bits) of one point out of the answer to ``block``.

    Raises
    ------
    DecodeError
        the device answered fewer registers than the block asked for.
    ValueError
        the point does not lie in ``block`` (a planning bug, not a field failure).
    """
    if spec.table != block.table:
        raise ValueError(f"point in {spec.table} is not part of a {block.table} block")
    offset = spec.address - block.address
    n = spec.register_count
    if offset < 0 or offset + n > block.count:
        raise ValueError(f"address {spec.address} (+{n}) is outside block {block}")
    if len(block_registers) < block.count:
        raise DecodeError(f"asked for {block.count} values, got {len(block_registers)}")
    return list(block_registers[offset : offset + n])


# ---------------------------------------------------------------------- block decoding

#: how one point is taken out of a block's bytes (see BlockDecoder)
_BIT, _BOOL, _STRUCT, _FLOAT = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class _PointPlan:
    name: str
    how: int  # _BIT, _BOOL, _STRUCT or _FLOAT
    index: int  # word (or bit) index in the block; for _STRUCT/_FLOAT a byte offset
    buffer: int  # which packed view of the block: bit 0 = little byte order, bit 1 = reversed
    unpack: struct.Struct | None
    bit: int
    scale: float
    offset: float
    type_name: str


class BlockDecoder:
    """Decodes every point of one :class:`ReadBlock` from the block's answer in one pass.

    Built once per block (per device), used on every poll: the block's registers are packed into
    bytes once (big-endian words; a byte-swapped and a word-reversed view only when a point needs
    one) and every point is unpacked at its byte offset with a precompiled ``struct.Struct``.
    ``word_order: little`` is read from the word-reversed view, where a point's words appear
    least significant first at offset ``count - offset - n``. Values equal :func:`decode`'s.

    Parameters
    ----------
    block : the request
    points : name -> spec; must contain every point the block serves
    """

    __slots__ = ("_block", "_buffers_needed", "_plans")

    def __init__(self, block: ReadBlock, points: Mapping[str, ModbusPoint]) -> None:
        self._block = block
        plans: list[_PointPlan] = []
        needed = 0
        for name in block.points:
            spec = points[name]
            if spec.table != block.table:
                raise ValueError(f"point {name!r} is not part of {block}")
            off = spec.address - block.address
            n = spec.register_count
            if off < 0 or off + n > block.count:
                raise ValueError(f"point {name!r} (+{n}) is outside block {block}")
            if block.is_bits:
                plans.append(
                    _PointPlan(name, _BOOL, off, 0, None, 0, spec.scale, spec.offset, "bool")
                )
                continue
            if spec.bit is not None:
                plans.append(
                    _PointPlan(name, _BIT, off, 0, None, spec.bit, spec.scale, spec.offset, "u16")
                )
                continue
            buffer = (1 if spec.byte_order == "little" else 0) | (
                2 if spec.word_order == "little" else 0
            )
            needed |= 1 << buffer
            start = block.count - off - n if spec.word_order == "little" else off
            how = _FLOAT if spec.type in ("f32", "f64") else _STRUCT
            plans.append(
                _PointPlan(
                    name,
                    how,
                    2 * start,
                    buffer,
                    struct.Struct(">" + _STRUCT_CODE[spec.type]),
                    0,
                    spec.scale,
                    spec.offset,
                    spec.type,
                )
            )
        self._plans = tuple(plans)
        self._buffers_needed = needed

    @property
    def block(self) -> ReadBlock:
        return self._block

    def decode(self, registers: Sequence[int]) -> list[tuple[str, float, str]]:
        """``(name, value, error)`` for every point of the block, in the block's point order.

        ``error`` is empty for a decoded value; for a float register holding NaN or infinity the
        value is NaN and ``error`` says why (the other points are unaffected).

        Raises
        ------
        DecodeError
            fewer values than the block asked for, or a value that is not a 16-bit word (0/1 for
            coils and discrete inputs): the whole answer is unusable.
        """
        block = self._block
        count = block.count
        if len(registers) < count:
            raise DecodeError(f"asked for {count} values, got {len(registers)}")
        regs = registers if len(registers) == count else registers[:count]
        out: list[tuple[str, float, str]] = []
        if block.is_bits:
            for p in self._plans:
                raw = regs[p.index]
                if raw not in (0, 1):
                    raise DecodeError(f"bool raw value must be 0 or 1, got {raw}")
                out.append((p.name, float(raw * p.scale + p.offset), ""))
            return out
        buffers = self._pack(regs)
        for p in self._plans:
            if p.how == _BIT:
                out.append((p.name, float(((regs[p.index] >> p.bit) & 1) * p.scale + p.offset), ""))
                continue
            assert p.unpack is not None
            raw = p.unpack.unpack_from(buffers[p.buffer], p.index)[0]
            if p.how == _FLOAT and not math.isfinite(raw):
                out.append(
                    (p.name, math.nan, f"{p.type_name} register content is {raw} (not a number)")
                )
                continue
            out.append((p.name, float(raw * p.scale + p.offset), ""))
        return out

    def _pack(self, regs: Sequence[int]) -> list[bytes]:
        buffers = [b"", b"", b"", b""]
        needed = self._buffers_needed
        count = len(regs)
        try:
            if needed & 0b0001:
                buffers[0] = struct.pack(f">{count}H", *regs)
            if needed & 0b0010:
                buffers[1] = struct.pack(f"<{count}H", *regs)
            if needed & 0b1100:
                rev = list(reversed(regs))
                if needed & 0b0100:
                    buffers[2] = struct.pack(f">{count}H", *rev)
                if needed & 0b1000:
                    buffers[3] = struct.pack(f"<{count}H", *rev)
        except struct.error as exc:
            raise DecodeError(f"a register value is not a 16-bit word: {exc}") from exc
        return buffers
