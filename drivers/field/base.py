"""The one seam between the runtime and field devices: the :class:`DeviceClient` protocol.

Rule: the runtime talks to every device, Modbus or OPC-UA, real or emulated, through these four
members and nothing else. ``read`` returns a reading for every point of the profile or raises a
:class:`~laterne.drivers.field.errors.DriverError`; ``write`` returns the value read back or raises
one.
Neither ever returns ``None`` for a failure.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from laterne.models.values import PointReading

__all__ = ["DeviceClient"]


@runtime_checkable
class DeviceClient(Protocol):
    """A connection to one field device, as the runtime sees it."""

    @property
    def device_id(self) -> str:
        """The device's id in the site configuration."""
        ...

    async def read(self, now: datetime) -> dict[str, PointReading]:
        """Read every point of the device's profile.

        ``now`` (aware UTC) stamps the readings. A point whose value is impossible (outside its
        min/max, NaN, bad status) comes back with quality FAULTY and value NaN; if the device as a
        whole cannot be read, a ``DriverError`` is raised instead.
        """
        ...

    async def write(self, point: str, value: float) -> float:
        """Write ``value`` (engineering units) to ``point``; return the value read back.

        Raises ``NotWritable``, ``OutOfBounds`` or ``EncodeError`` before sending anything,
        ``WriteMismatch`` if the read-back differs, and any other ``DriverError`` on failure.
        """
        ...

    async def close(self) -> None:
        """Release the connection. The client may be used again afterwards (it reconnects)."""
        ...
