"""OPC-UA addresses as text: NodeIds and browse paths, parsed without the OPC-UA library.

Rule: pure and dependency-free, so the site validator can refuse a malformed ``node`` or
``browse_path`` with file and line *before* anything starts, and the driver builds its
library objects from the very same parse. A parse either returns a frozen value or raises
:class:`AddressError` (a ``ValueError``) saying what is wrong; never ``None``.

NodeId text (OPC UA Part 6, 5.3.1.10)::

    [ns=<namespace index>;|nsu=<namespace URI>;]<kind>=<identifier>

    i=2258                          numeric (UInt32), namespace 0
    ns=2;s=School.Room1.Temperature string
    ns=3;g=09087e75-8e5e-499b-954f-f2a9603db28a   GUID
    ns=1;b=M/RbKBsRVkePCePcx24oRA==  opaque (ByteString, base64)
    nsu=urn:vendor:plc;s=Temp       namespace given by its URI, resolved at connect

The URI form is stable across server restarts and versions (an index is the position of the
URI in the server's namespace array, which may change); the driver looks the URI up in the
server's namespace array after every connect.

Browse path text (steps from the Objects folder, each ``<namespace index>:<browse name>``)::

    2:School/2:Classrooms/2:Temperature
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "AddressError",
    "BrowseStep",
    "NodeAddress",
    "parse_browse_path",
    "parse_node_id",
]

IdKind = Literal["i", "s", "g", "b"]

_UINT16_MAX = 0xFFFF
_UINT32_MAX = 0xFFFF_FFFF


class AddressError(ValueError):
    """A NodeId or browse path that does not follow the OPC-UA text format."""


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """A parsed NodeId. Exactly one of ``namespace_index`` and ``namespace_uri`` is set
    (``namespace_index`` is 0 when the text names no namespace). ``identifier`` is an ``int``
    for ``i``, the text for ``s``, the canonical lower-case GUID for ``g`` and the decoded
    bytes for ``b``."""

    kind: IdKind
    identifier: int | str | bytes
    namespace_index: int | None = 0
    namespace_uri: str | None = None

    def with_index(self, index: int) -> NodeAddress:
        """The same node with its namespace URI resolved to the server's ``index``."""
        return NodeAddress(self.kind, self.identifier, index, None)


@dataclass(frozen=True, slots=True)
class BrowseStep:
    """One step of a browse path: a browse name in a namespace (by index)."""

    namespace_index: int
    name: str


_NS = re.compile(r"^ns=(?P<ns>[^;]*);(?P<rest>.*)$", re.DOTALL)
_NSU = re.compile(r"^nsu=(?P<uri>[^;]*);(?P<rest>.*)$", re.DOTALL)
_ID = re.compile(r"^(?P<kind>[a-z]+)=(?P<value>.*)$", re.DOTALL)
_STEP = re.compile(r"^(?P<ns>[^:]*):(?P<name>.*)$", re.DOTALL)


def _uint(text: str, what: str, limit: int) -> int:
    if not text.isascii() or not text.isdigit():
        raise AddressError(f"{what} {text!r} is not a non-negative integer")
    n = int(text)
    if n > limit:
        raise AddressError(f"{what} {n} is above {limit}")
    return n


def parse_node_id(text: str) -> NodeAddress:
    """Parse ``text`` as an OPC-UA NodeId.

    Raises
    ------
    AddressError
        empty text, a namespace index that is not an integer in 0..65535, an empty namespace
        URI, an identifier kind other than ``i``, ``s``, ``g``, ``b``, or an identifier that does
        not fit its kind (``i=abc``, a malformed GUID, invalid base64, an empty string).
    """
    if not text:
        raise AddressError("empty NodeId")
    ns_index: int | None = 0
    ns_uri: str | None = None
    rest = text
    if m := _NSU.match(text):
        ns_uri, rest = m["uri"], m["rest"]
        if not ns_uri:
            raise AddressError(f"NodeId {text!r}: empty namespace URI after 'nsu='")
        ns_index = None
    elif m := _NS.match(text):
        try:
            ns_index = _uint(m["ns"], "namespace index", _UINT16_MAX)
        except AddressError as exc:
            raise AddressError(f"NodeId {text!r}: {exc}") from None
        rest = m["rest"]
    elif text.startswith(("ns=", "nsu=")):
        raise AddressError(f"NodeId {text!r}: the namespace must end with ';'")
    m = _ID.match(rest)
    if m is None:
        raise AddressError(
            f"NodeId {text!r} is not '[ns=<index>;]<i|s|g|b>=<identifier>' "
            "(e.g. 'ns=2;s=Room1.Temperature' or 'i=2258')"
        )
    kind, value = m["kind"], m["value"]
    identifier: int | str | bytes
    if kind == "i":
        try:
            identifier = _uint(value, "numeric identifier", _UINT32_MAX)
        except AddressError as exc:
            raise AddressError(f"NodeId {text!r}: {exc}") from None
    elif kind == "s":
        if not value:
            raise AddressError(f"NodeId {text!r}: empty string identifier")
        identifier = value
    elif kind == "g":
        try:
            identifier = str(uuid.UUID(value))
        except ValueError:
            raise AddressError(f"NodeId {text!r}: {value!r} is not a GUID") from None
    elif kind == "b":
        try:
            identifier = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise AddressError(f"NodeId {text!r}: {value!r} is not base64") from None
    else:
        raise AddressError(
            f"NodeId {text!r}: identifier kind {kind!r} is not one of i (numeric), s (string), "
            "g (GUID), b (opaque)"
        )
    return NodeAddress(kind, identifier, ns_index, ns_uri)  # type: ignore[arg-type]


def parse_browse_path(text: str) -> tuple[BrowseStep, ...]:
    """The steps of ``text`` (``"2:School/2:Temperature"``) below the Objects folder.

    Raises
    ------
    AddressError
        empty path, empty step, a step without ``<namespace index>:``, a namespace index that is
        not an integer in 0..65535, or an empty browse name.
    """
    if not text:
        raise AddressError("empty browse path")
    steps: list[BrowseStep] = []
    for step in text.split("/"):
        m = _STEP.match(step)
        if m is None or not m["ns"]:
            raise AddressError(
                f"browse path {text!r}: step {step!r} is not '<namespace index>:<browse name>' "
                "(the namespace index is required, e.g. '2:Temperature')"
            )
        try:
            ns = _uint(m["ns"], "namespace index", _UINT16_MAX)
        except AddressError as exc:
            raise AddressError(f"browse path {text!r}: step {step!r}: {exc}") from None
        if not m["name"]:
            raise AddressError(f"browse path {text!r}: step {step!r} has an empty browse name")
        steps.append(BrowseStep(ns, m["name"]))
    return tuple(steps)
