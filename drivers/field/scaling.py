"""Engineering values to raw numbers, for every driver: one rounding, one range check.

Rule: a value is written as ``raw = (value - offset) / scale`` in a raw type, and
:func:`raw_from_value` is the one place that computes it, for Modbus registers and OPC-UA
Variants alike: integer types round half away from zero and must lie within their range, float
types must stay finite and within theirs, booleans are 0 or 1; a value that is not a finite
number never gets that far. Anything unrepresentable is an
:class:`~laterne.drivers.field.errors.EncodeError` before a byte is sent. Pure, no I/O, no protocol
library: a driver names its wire types as :class:`RawType` (the Modbus codec by the site's
:data:`~laterne.models.site.DataType`, :data:`RAW_TYPES`; OPC-UA by the node's Variant type)
and packs the number itself. :func:`readback_tolerance` says how close a value read back must
come to the one written to count as equal.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from laterne.models.site import DataType, PointSpec

from .errors import EncodeError

__all__ = [
    "RAW_TYPES",
    "RawType",
    "float_type",
    "int_type",
    "raw_from_value",
    "readback_tolerance",
    "round_half_away",
]


@dataclass(frozen=True, slots=True)
class RawType:
    """A raw number type on the wire: ``name`` (for messages), the range ``[lo, hi]`` of its
    values, whether they are integers, and for floats the relative read-back tolerance."""

    name: str
    lo: int | float
    hi: int | float
    integer: bool
    rel_tol: float = 0.0


def int_type(name: str, bits: int, *, signed: bool) -> RawType:
    """The integer type of ``bits`` bits (``bits=1``: a boolean, 0 or 1)."""
    if signed:
        return RawType(name, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1, integer=True)
    return RawType(name, 0, 2**bits - 1, integer=True)


def float_type(name: str, bits: int) -> RawType:
    """The IEEE 754 float of 32 or 64 bits; its read-back tolerance is a few units in the last
    place (4 ULP)."""
    if bits == 32:
        top, mantissa = 3.4028234663852886e38, 24
    elif bits == 64:
        top, mantissa = sys.float_info.max, 53
    else:
        raise ValueError(f"no {bits}-bit float")
    return RawType(name, -top, top, integer=False, rel_tol=4 * 2.0**-mantissa)


#: the raw type of each data type of the site model
RAW_TYPES: dict[DataType, RawType] = {
    "bool": int_type("bool", 1, signed=False),
    "u16": int_type("u16", 16, signed=False),
    "i16": int_type("i16", 16, signed=True),
    "u32": int_type("u32", 32, signed=False),
    "i32": int_type("i32", 32, signed=True),
    "u64": int_type("u64", 64, signed=False),
    "i64": int_type("i64", 64, signed=True),
    "f32": float_type("f32", 32),
    "f64": float_type("f64", 64),
}


def round_half_away(x: float) -> int:
    """``x`` rounded to an integer, halves away from zero (2.5 -> 3, -2.5 -> -3)."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def raw_from_value(value: float, spec: PointSpec, raw: RawType) -> int | float:
    """The raw number of engineering ``value``: ``(value - offset) / scale`` as ``raw``.

    Integer types round half away from zero; the result is an ``int`` for them and a ``float``
    for float types.

    Raises
    ------
    EncodeError
        ``value`` is not finite, or the raw number is not finite or outside ``raw``'s range.
    """
    if not math.isfinite(value):
        raise EncodeError(value, raw.name, "not a finite number")
    x = (value - spec.offset) / spec.scale
    if not math.isfinite(x):
        raise EncodeError(value, raw.name, f"raw value {x!r} is not finite")
    if not raw.integer:
        if not raw.lo <= x <= raw.hi:
            raise EncodeError(value, raw.name, f"raw value {x!r} exceeds the {raw.name} range")
        return float(x)
    n = round_half_away(x)
    if not raw.lo <= n <= raw.hi:
        raise EncodeError(value, raw.name, f"raw value {n} is outside [{raw.lo}, {raw.hi}]")
    return n


def readback_tolerance(expected: float, spec: PointSpec, raw: RawType | None = None) -> float:
    """Largest difference between ``expected`` and a read-back that still counts as equal.

    Half a scale step for integer types (and bool); a few float ULPs of the value for floats.
    ``raw`` is the type on the wire, by default the one of ``spec.type`` (OPC-UA passes the
    node's own type).
    """
    kind = RAW_TYPES[spec.type] if raw is None else raw
    if not kind.integer:
        magnitude = max(abs(expected), abs(spec.offset), abs(spec.scale))
        return float(magnitude * kind.rel_tol)
    return float(abs(spec.scale) / 2 * (1 + 1e-9))
