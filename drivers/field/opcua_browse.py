"""What an OPC-UA server really has: its endpoints, namespaces and the nodes below Objects.

Rule: read-only and bounded. :func:`browse_server` opens one session (with the same security and
credential handling as the driver), walks the hierarchy below the Objects folder breadth-first
to at most ``depth`` levels and ``max_nodes`` nodes, reads each variable's data type, access
level and current value, and closes the session. It never writes, never subscribes, and every
failure leaves as a :class:`~laterne.drivers.field.errors.DriverError` (the driver's own mapping:
:func:`~laterne.drivers.field.opcua_errors.map_opcua_exceptions`). Nothing here is used while a
site runs;
it exists so that a profile is written from what the server holds, not from a manual.

What is listed
--------------
Every Object and Variable reached by forward hierarchical references (``Organizes``,
``HasComponent``, ``HasProperty``, ...) from ``i=85``, except nodes in namespace 0: those are the
standard's own (the ``Server`` object with its diagnostics), never a plant's. A node reached by
two paths is listed once, under the first path found (breadth-first, so the shortest). Each
node comes with its NodeId in both text forms the site file accepts (``nsu=<uri>;...``, stable
across server restarts, and ``ns=<index>;...``) and its browse path in Laterne's format
(``2:School/2:Temperature``), or ``None`` if a browse name holds a ``/``, which that format
cannot express.

:func:`server_endpoints` answers without a session (GetEndpoints over an unsecured channel, as
every server allows): the security policies and modes offered and the server's certificate,
which a site can pin with ``server_certificate:``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import urlparse

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIdNames, ObjectIds

from laterne.models.site import OpcUaEndpoint

from .errors import BadStatus, DecodeError, SetupError
from .opcua_errors import map_opcua_exceptions
from .opcua_paths import format_node_id
from .opcua_security import apply_credentials, apply_security

__all__ = [
    "BrowseResult",
    "BrowsedNode",
    "ServerEndpoint",
    "browse_server",
    "check_url",
    "server_endpoints",
]

#: nodes per Browse or Read request: far below any server's operation limits
_BATCH = 200
#: longest text of a value in the listing [characters]
_VALUE_CHARS = 60
_NODE_CLASSES: dict[ua.NodeClass, Literal["object", "variable"]] = {
    ua.NodeClass.Object: "object",
    ua.NodeClass.Variable: "variable",
}
_MODES = {
    ua.MessageSecurityMode.None_: "none",
    ua.MessageSecurityMode.Sign: "sign",
    ua.MessageSecurityMode.SignAndEncrypt: "sign_and_encrypt",
}


@dataclass(frozen=True, slots=True)
class ServerEndpoint:
    """One endpoint a server offers: policy (``None``, ``Basic256Sha256``, ...), mode as the
    site file names it, and the server's certificate (DER; empty without security)."""

    security_policy: str
    security: str
    certificate: bytes

    @property
    def thumbprint(self) -> str:
        """SHA-1 of the certificate, as OPC-UA tools show it (``ab:cd:...``), or ``""``."""
        if not self.certificate:
            return ""
        return ":".join(f"{b:02x}" for b in hashlib.sha1(self.certificate).digest())


@dataclass(frozen=True, slots=True)
class BrowsedNode:
    """One Object or Variable below Objects. ``data_type``, ``value`` and ``writable`` are
    ``None`` for objects; ``value`` is the current value as text (or the Bad status' name)."""

    node_class: Literal["object", "variable"]
    node_id: str  # ns=<index>;...
    node_id_uri: str  # nsu=<namespace URI>;...
    browse_path: str | None  # None if a browse name holds "/"
    depth: int  # 1 = a child of Objects
    data_type: str | None = None
    value: str | None = None
    writable: bool | None = None


@dataclass(frozen=True, slots=True)
class BrowseResult:
    """What :func:`browse_server` found. ``truncated``: ``max_nodes`` was reached, or nodes
    remained below ``depth``."""

    url: str
    namespaces: tuple[str, ...]
    endpoints: tuple[ServerEndpoint, ...]
    nodes: tuple[BrowsedNode, ...]
    truncated: bool


def check_url(url: str) -> None:
    """Refuse what cannot be an OPC-UA endpoint URL before any connection is tried.

    Raises
    ------
    SetupError
        not ``opc.tcp://HOST:PORT[/path]``.
    """
    parts = urlparse(url)
    if parts.scheme != "opc.tcp" or not parts.hostname:
        raise SetupError(f"{url!r} is not an OPC-UA URL: expected opc.tcp://HOST:PORT/path")
    try:
        port = parts.port
    except ValueError:
        raise SetupError(f"{url!r}: the port is not a number in 0..65535") from None
    if port is None:
        raise SetupError(f"{url!r} names no port (OPC-UA's usual one is 4840)")


async def server_endpoints(url: str, timeout_s: float = 5.0) -> tuple[ServerEndpoint, ...]:
    """The endpoints ``url`` offers, by GetEndpoints over an unsecured channel (no session).

    Raises
    ------
    SetupError
        a malformed URL.
    DriverError
        the server cannot be reached or answers wrongly (mapped as in the driver).
    """
    check_url(url)
    client = Client(url, timeout=timeout_s)
    with map_opcua_exceptions(f"opcua {url}"):
        async with asyncio.timeout(timeout_s * 4):
            found = await client.connect_and_get_server_endpoints()
    return tuple(
        ServerEndpoint(
            security_policy=str(ep.SecurityPolicyUri or "").rpartition("#")[2] or "?",
            security=_MODES.get(ep.SecurityMode, str(ep.SecurityMode)),
            certificate=bytes(ep.ServerCertificate or b""),
        )
        for ep in found
    )


async def browse_server(
    endpoint: OpcUaEndpoint,
    *,
    depth: int = 3,
    max_nodes: int = 2000,
    timeout_s: float = 5.0,
    environ: Mapping[str, str] = os.environ,
    endpoints: tuple[ServerEndpoint, ...] | None = None,
) -> BrowseResult:
    """Connect to ``endpoint`` as the driver would, list what is below Objects, disconnect.

    ``endpoints`` is what :func:`server_endpoints` gave, if the caller asked already.

    Raises
    ------
    ValueError
        ``depth`` or ``max_nodes`` below 1.
    SetupError
        a malformed URL, an unreadable certificate or key, an unset credential variable.
    DriverError
        the server cannot be reached, refuses us (e.g. ``CertificateRejected``), or answers
        wrongly; mapped as in the driver.
    """
    if depth < 1 or max_nodes < 1:
        raise ValueError(f"depth ({depth}) and max_nodes ({max_nodes}) must be at least 1")
    url = endpoint.url
    check_url(url)
    ctx = f"opcua {url}"
    if endpoints is None:
        endpoints = await server_endpoints(url, timeout_s)
    client = Client(url, timeout=timeout_s)
    apply_credentials(client, endpoint, ctx, environ)
    secured = endpoint.security != "none"
    with map_opcua_exceptions(ctx):
        async with asyncio.timeout(timeout_s * 10):
            with map_opcua_exceptions(ctx):
                await apply_security(client, endpoint, ctx)
            with map_opcua_exceptions(ctx, opening_secure_channel=secured):
                await client.connect(auto_reconnect=False)
    try:
        with map_opcua_exceptions(ctx):
            walker = _Walker(client, ctx, max_nodes)
            namespaces = await walker.namespaces()
            nodes, truncated = await walker.walk(depth, namespaces)
    finally:
        with suppress(Exception):  # we have what we came for; a failing goodbye changes nothing
            async with asyncio.timeout(timeout_s * 2):
                await client.disconnect()
    return BrowseResult(url, tuple(namespaces), endpoints, tuple(nodes), truncated)


@dataclass
class _Found:
    nodeid: ua.NodeId
    node_class: Literal["object", "variable"]
    path: tuple[ua.QualifiedName, ...]


class _Walker:
    """Breadth-first Browse below Objects, then one batched Read of the variables."""

    def __init__(self, client: Client, ctx: str, max_nodes: int) -> None:
        self._client = client
        self._ctx = ctx
        self._max_nodes = max_nodes

    async def namespaces(self) -> list[str]:
        nid = ua.NodeId(ua.Int32(ObjectIds.Server_NamespaceArray))
        (dv,) = await self._read([(nid, AttributeIds.Value)])
        value = _good_value(dv, f"{self._ctx}: NamespaceArray")
        if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
            raise DecodeError(f"{self._ctx}: NamespaceArray is not a list of URIs: {value!r}")
        return list(value)

    async def walk(self, depth: int, namespaces: Sequence[str]) -> tuple[list[BrowsedNode], bool]:
        objects = ua.NodeId(ua.Int32(ObjectIds.ObjectsFolder))
        seen: set[ua.NodeId] = {objects}
        frontier: list[_Found] = [_Found(objects, "object", ())]
        found: list[tuple[_Found, int]] = []
        truncated = False
        for level in range(1, depth + 1):
            children: list[_Found] = []
            paths = {f.nodeid: f.path for f in frontier}
            for parent, refs in await self._browse(list(paths)):
                path = paths[parent]
                for ref in refs:
                    target = ref.NodeId  # asyncua decodes a local ExpandedNodeId as a NodeId
                    if getattr(target, "ServerIndex", 0) or target.NamespaceIndex == 0:
                        continue  # another server's node, or the standard's own
                    nid = ua.NodeId(target.Identifier, target.NamespaceIndex, target.NodeIdType)
                    if nid in seen or ref.NodeClass not in _NODE_CLASSES:
                        continue
                    if len(found) >= self._max_nodes:
                        truncated = True
                        break
                    seen.add(nid)
                    child = _Found(nid, _NODE_CLASSES[ref.NodeClass], (*path, ref.BrowseName))
                    children.append(child)
                    found.append((child, level))
            frontier = children
            if not frontier or truncated:
                break
        else:
            truncated = truncated or await self._has_children([f.nodeid for f in frontier])
        variables = [f.nodeid for f, _ in found if f.node_class == "variable"]
        details = await self._variables(variables)
        nodes = []
        for f, level in found:
            data_type, value, writable = details.get(f.nodeid, (None, None, None))
            nodes.append(
                BrowsedNode(
                    node_class=f.node_class,
                    node_id=format_node_id(f.nodeid),
                    node_id_uri=format_node_id(f.nodeid, namespaces),
                    browse_path=_path_text(f.path),
                    depth=level,
                    data_type=data_type,
                    value=value,
                    writable=writable,
                )
            )
        return nodes, truncated

    async def _browse(
        self, nodeids: Sequence[ua.NodeId]
    ) -> list[tuple[ua.NodeId, list[ua.ReferenceDescription]]]:
        """Forward hierarchical references to Objects and Variables of every node, following
        continuation points until each node's list is complete."""
        out: list[tuple[ua.NodeId, list[ua.ReferenceDescription]]] = []
        for start in range(0, len(nodeids), _BATCH):
            batch = list(nodeids[start : start + _BATCH])
            params = ua.BrowseParameters()
            params.RequestedMaxReferencesPerNode = ua.Counter(0)
            for nid in batch:
                desc = ua.BrowseDescription()
                desc.NodeId = nid
                desc.BrowseDirection = ua.BrowseDirection.Forward
                desc.ReferenceTypeId = ua.NodeId(ua.Int32(ObjectIds.HierarchicalReferences))
                desc.IncludeSubtypes = True
                desc.NodeClassMask = ua.UInt32(ua.NodeClass.Object | ua.NodeClass.Variable)
                desc.ResultMask = ua.UInt32(ua.BrowseResultMask.All)
                params.NodesToBrowse.append(desc)
            results = await self._client.uaclient.browse(params)
            if len(results) != len(batch):
                raise DecodeError(f"{self._ctx}: browsed {len(batch)}, got {len(results)}")
            for nid, result in zip(batch, results, strict=True):
                if not result.StatusCode.is_good():
                    continue  # a node we may not browse: leave it out, as a viewer would
                refs = list(result.References)
                point = result.ContinuationPoint
                while point:
                    nxt = ua.BrowseNextParameters()
                    nxt.ReleaseContinuationPoints = False
                    nxt.ContinuationPoints = [point]
                    (more,) = await self._client.uaclient.browse_next(nxt)
                    refs += list(more.References)
                    point = more.ContinuationPoint if more.StatusCode.is_good() else None
                out.append((nid, refs))
        return out

    async def _has_children(self, nodeids: Sequence[ua.NodeId]) -> bool:
        for _parent, refs in await self._browse(nodeids):
            for r in refs:
                if r.NodeId.NamespaceIndex and not getattr(r.NodeId, "ServerIndex", 0):
                    return True
        return False

    async def _variables(
        self, nodeids: Sequence[ua.NodeId]
    ) -> dict[ua.NodeId, tuple[str | None, str | None, bool | None]]:
        """Data type name, value text and writability of each variable."""
        attrs = (AttributeIds.DataType, AttributeIds.Value, AttributeIds.UserAccessLevel)
        reads = [(nid, a) for nid in nodeids for a in attrs]
        dvs = await self._read(reads)
        type_ids = {
            dv.Value.Value
            for dv in dvs[0 :: len(attrs)]
            if dv.Value is not None and isinstance(dv.Value.Value, ua.NodeId)
        }
        type_names = await self._type_names(type_ids)
        out: dict[ua.NodeId, tuple[str | None, str | None, bool | None]] = {}
        for i, nid in enumerate(nodeids):
            dt, value, access = dvs[i * len(attrs) : (i + 1) * len(attrs)]
            type_id = dt.Value.Value if dt.Value is not None else None
            type_name = type_names.get(type_id) if isinstance(type_id, ua.NodeId) else None
            level = access.Value.Value if access.Value is not None else None
            writable = (
                bool(level & ua.AccessLevel.CurrentWrite.mask) if isinstance(level, int) else None
            )
            out[nid] = (type_name, _value_text(value), writable)
        return out

    async def _type_names(self, type_ids: set[ua.NodeId]) -> dict[ua.NodeId, str]:
        names: dict[ua.NodeId, str] = {}
        custom = []
        for tid in type_ids:
            if tid.NamespaceIndex == 0 and isinstance(tid.Identifier, int):
                names[tid] = ObjectIdNames.get(tid.Identifier, f"i={tid.Identifier}")
            else:
                custom.append(tid)
        if custom:
            dvs = await self._read([(t, AttributeIds.BrowseName) for t in custom])
            for tid, dv in zip(custom, dvs, strict=True):
                value = dv.Value.Value if dv.Value is not None else None
                names[tid] = value.Name if isinstance(value, ua.QualifiedName) else str(tid)
        return names

    async def _read(self, items: Sequence[tuple[ua.NodeId, AttributeIds]]) -> list[ua.DataValue]:
        out: list[ua.DataValue] = []
        for start in range(0, len(items), _BATCH):
            params = ua.ReadParameters()
            for nid, attribute in items[start : start + _BATCH]:
                rv = ua.ReadValueId()
                rv.NodeId = nid
                rv.AttributeId = attribute
                params.NodesToRead.append(rv)
            got = await self._client.uaclient.read(params)
            if len(got) != len(params.NodesToRead):
                raise DecodeError(f"{self._ctx}: read {len(params.NodesToRead)}, got {len(got)}")
            out += got
        return out


def _good_value(dv: ua.DataValue, what: str) -> object:
    if dv.StatusCode is not None and not dv.StatusCode.is_good():
        raise BadStatus(dv.StatusCode.value, what)
    return dv.Value.Value if dv.Value is not None else None


def _path_text(path: Sequence[ua.QualifiedName]) -> str | None:
    if any("/" in str(q.Name) for q in path):
        return None
    return "/".join(f"{q.NamespaceIndex}:{q.Name}" for q in path)


def _value_text(dv: ua.DataValue) -> str:
    """A short text of a node's value, or the name of its Bad/Uncertain status."""
    if dv.StatusCode is not None and not dv.StatusCode.is_good():
        return f"<{dv.StatusCode.name}>"
    value = dv.Value.Value if dv.Value is not None else None
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value) if math.isfinite(value) else str(value)
    elif isinstance(value, ua.LocalizedText):
        text = repr(value.Text or "")
    elif isinstance(value, str):
        text = repr(value)
    elif isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, list):
        text = f"[{len(value)} values]"
    elif isinstance(value, bytes):
        text = f"<{len(value)} bytes>"
    else:
        text = str(value)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"
