"""What the live shell would read from (and leave in) the emulated devices, as numpy.

Rule: pure, vectorised, and a model of exactly two pieces of code — the emulator's encoding of a
plant value into a point (:func:`~laterne.simulations.emulator.raw_value`) followed by the
drivers' decoding of it, and the drivers' encoding of a command followed by the emulator's
decoding of what it finds in the register. The in-process runner uses it so that its
observations, and the commands its plant holds, are the live shell's to the last bit
(``tests/simulations/test_runner.py`` checks it against the emulator's own functions;
``tests/test_twin.py`` checks the whole loop). It imports neither the drivers (a layer above)
nor the emulator (whose protocol libraries take seconds to import).

Theory of operation
-------------------
A :class:`PointReadout` holds, per element of a group of points (the counter channels, the zone
temperatures, ...), the point's type, ``scale``, ``offset``, bounds and the unit factor from the
plant's unit to the point's (W → kW, ...), the same table as the emulator's.

* Reading (:meth:`PointReadout.seen`): ``raw = (plant value × factor − offset) / scale``;
  unsigned counters wrap: ``floor(raw) mod 2^bits``; other integers round half to even (Python's
  ``round``, as the emulator does) and clip to the type; ``f32`` rounds to single precision;
  ``bool`` is ``value ≠ 0``; a bit field is ``round(raw) ≠ 0``. The driver reads
  ``raw × scale + offset``, and a value that is not finite or outside the point's ``[min, max]``
  is FAULTY: not usable, NaN in the observation.
* Holding a command (:meth:`PointReadout.held`): the driver writes ``(value − offset) / scale``,
  integers rounded half away from zero, ``f32`` in single precision; the emulator decodes
  ``raw × scale + offset`` (a coil: 0 or 1), clips it to the point's bounds and divides by the
  unit factor. A
  segment controller with ``scale: 0.1`` so holds 42.35 % as 42.4 %, and the plant draws the
  power of 42.4 %.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Final

import numpy as np
import numpy.typing as npt

from laterne.models.site import PointRef, PointSpec, SiteConfig
from laterne.models.values import BoolArray, FloatArray

__all__ = ["UNIT_FACTORS", "PointReadout", "ReadoutError"]

#: plant quantity -> point unit -> factor (point value = plant value × factor); the emulator's
#: table (``simulations/emulator.py``), for the quantities an observation or a command carries
UNIT_FACTORS: Final[dict[str, dict[str, float]]] = {
    "temp_c": {"degC": 1.0, "°C": 1.0, "C": 1.0, "Cel": 1.0},
    "veh": {"veh": 1.0, "vehicles": 1.0, "count": 1.0},
    "pct": {"%": 1.0, "pct": 1.0, "percent": 1.0},
}

_INT_BITS: Final[dict[str, tuple[int, bool]]] = {
    "u16": (16, False), "i16": (16, True), "u32": (32, False), "i32": (32, True),
    "u64": (64, False), "i64": (64, True),
}  # fmt: skip

# element kinds
_F64: Final = 0
_F32: Final = 1
_WRAP: Final = 2  # unsigned counter: floor, modulo 2^bits
_INT: Final = 3  # other integers: round, clip to the type
_BOOL: Final = 4
_BIT: Final = 5


class ReadoutError(ValueError):
    """A point cannot be modelled (e.g. a unit the emulator does not serve)."""


@dataclass(frozen=True, eq=False)
class PointReadout:
    """How one group of points shows plant values and holds commands, element by element."""

    factor: FloatArray
    scale: FloatArray
    offset: FloatArray
    kind: npt.NDArray[np.int8]
    modulus: FloatArray  # 2^bits for unsigned counters, else 0
    raw_lo: FloatArray  # the integer type's range (±inf for floats)
    raw_hi: FloatArray
    lo: FloatArray  # the point's [min, max] in its unit (±inf: open)
    hi: FloatArray
    present: BoolArray  # False: no point configured (never usable, as in the observation)

    @property
    def plain(self) -> bool:
        """Every element a present f64 with no scaling: reading is the bounds check alone."""
        return bool(
            np.all(self.kind == _F64)
            and np.all(self.present)
            and np.all(self.factor == 1.0)
            and np.all(self.scale == 1.0)
            and np.all(self.offset == 0.0)
        )

    @classmethod
    def ideal(cls, present: BoolArray) -> PointReadout:
        """Exact float sensors without bounds, for a layout without its site file."""
        n = len(present)
        inf = np.full(n, np.inf)
        return cls(
            np.ones(n), np.ones(n), np.zeros(n), np.zeros(n, dtype=np.int8), np.zeros(n),
            -inf, inf.copy(), -inf, inf.copy(), np.asarray(present, dtype=bool),
        )  # fmt: skip

    @classmethod
    def of(cls, site: SiteConfig, refs: Sequence[PointRef | None], quantity: str) -> PointReadout:
        """The readout of ``refs`` (None: no point, never usable) carrying ``quantity``.

        Raises
        ------
        ReadoutError
            a point's unit is not one the emulator serves for that quantity.
        """
        specs = [site.point(r) if r is not None else None for r in refs]
        return cls.of_specs(specs, quantity, [str(r) for r in refs])

    @classmethod
    def of_specs(
        cls,
        specs: Sequence[PointSpec | None],
        quantity: str,
        names: Sequence[str] | None = None,
    ) -> PointReadout:
        """The readout of points given by their specs (``names`` for messages)."""
        labels = list(names) if names is not None else [f"#{i}" for i in range(len(specs))]
        units = UNIT_FACTORS[quantity]
        n = len(specs)
        factor, scale, offset = np.ones(n), np.ones(n), np.zeros(n)
        kind = np.zeros(n, dtype=np.int8)
        modulus = np.zeros(n)
        raw_lo, raw_hi = np.full(n, -np.inf), np.full(n, np.inf)
        lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
        for i, (ref, spec) in enumerate(zip(labels, specs, strict=True)):
            if spec is None:
                continue
            if spec.unit and spec.unit not in units:
                raise ReadoutError(
                    f"point {ref}: unit {spec.unit!r}; the emulator serves it in one of "
                    f"{', '.join(units)}"
                )
            factor[i] = units.get(spec.unit, 1.0)
            scale[i], offset[i] = spec.scale, spec.offset
            lo[i], hi[i] = spec.bounds
            kind[i] = _kind(spec)
            if spec.type in _INT_BITS:
                bits, signed = _INT_BITS[spec.type]
                if kind[i] == _WRAP:
                    modulus[i] = 2.0**bits
                half = 2.0 ** (bits - 1)
                raw_lo[i], raw_hi[i] = (-half, half - 1) if signed else (0.0, 2.0**bits - 1)
        present = np.array([s is not None for s in specs], dtype=bool)
        return cls(factor, scale, offset, kind, modulus, raw_lo, raw_hi, lo, hi, present)

    @property
    def size(self) -> int:
        return int(self.kind.size)

    @cached_property
    def _plain(self) -> bool:
        return self.plain

    def seen(self, plant_value: FloatArray) -> tuple[FloatArray, BoolArray]:
        """What the driver reads for plant values ``(..., n)``: (value or NaN, usable)."""
        v = np.asarray(plant_value, dtype=float) * self.factor
        if self._plain:
            good: BoolArray = self.present & np.isfinite(v) & (v >= self.lo) & (v <= self.hi)
            return np.where(good, v, np.nan), good
        raw = (v - self.offset) / self.scale
        k = self.kind
        with np.errstate(invalid="ignore"):
            wrapped = np.mod(np.floor(raw), np.where(self.modulus > 0, self.modulus, 1.0))
            rounded = np.clip(np.rint(raw), self.raw_lo, self.raw_hi)
            single = raw.astype(np.float32).astype(float)
        r = np.select(
            [k == _F64, k == _F32, k == _WRAP, k == _INT, k == _BOOL],
            [raw, single, wrapped, rounded, (v != 0).astype(float)],
            default=(np.rint(raw) != 0).astype(float),  # bit field
        )
        value = r * self.scale + self.offset
        ok: BoolArray = self.present & np.isfinite(value) & (value >= self.lo) & (value <= self.hi)
        out: FloatArray = np.where(ok, value, np.nan)
        return out, ok

    def held(self, command: FloatArray) -> FloatArray:
        """What the plant holds after the driver wrote ``command`` [point units] (plant units)."""
        c = np.asarray(command, dtype=float)
        if self._plain:  # x - 0, x / 1, x * 1 + 0: the same values, fewer operations
            plain: FloatArray = np.minimum(np.maximum(c, self.lo), self.hi)
            return plain
        shifted = self._shifted
        raw = (c - self.offset if shifted else c) / self.scale
        mode = self._held_mode
        if mode == "f64":
            r = raw
        else:
            away = np.copysign(np.floor(np.abs(raw) + 0.5), raw)  # the drivers' rounding
            if mode == "int":
                r = away
            else:
                single = raw.astype(np.float32).astype(float)
                r = np.where(self.kind == _F64, raw, np.where(self.kind == _F32, single, away))
        decoded = r * self.scale + self.offset if shifted else r * self.scale
        if mode == "mixed":
            decoded = np.where(self.kind == _BOOL, (r != 0).astype(float), decoded)
        out: FloatArray = np.minimum(np.maximum(decoded, self.lo), self.hi)
        return out / self.factor if self._scaled_unit else out

    @cached_property
    def _shifted(self) -> bool:
        return bool(np.any(self.offset != 0.0))

    @cached_property
    def _scaled_unit(self) -> bool:
        return bool(np.any(self.factor != 1.0))

    @cached_property
    def _held_mode(self) -> str:
        """``f64`` or ``int`` when every element is of that kind (fewer operations), else
        ``mixed``."""
        if np.all(self.kind == _F64):
            return "f64"
        if np.all((self.kind == _WRAP) | (self.kind == _INT)):
            return "int"
        return "mixed"


def _kind(spec: PointSpec) -> int:
    if spec.type == "bool":
        return _BOOL
    if spec.bit is not None:
        return _BIT
    if spec.type == "f64":
        return _F64
    if spec.type == "f32":
        return _F32
    _bits, signed = _INT_BITS[spec.type]
    return _WRAP if spec.kind == "counter" and not signed else _INT
