"""OPC-UA addresses as asyncua objects: NodeIds and browse paths, built from the model's parse.

Rule: the text of a ``node`` or ``browse_path`` is parsed only by
:mod:`laterne.models.opcua_address` (pure, shared with the site validator); this module turns its
result into asyncua's ``NodeId``/``QualifiedName`` and back into text, and nothing else here
parses. So what the validator accepts is exactly what the driver uses.

A browse path starts at the Objects folder (``i=85``) and names one child per step,
``<namespace index>:<browse name>``, separated by ``/``::

    2:School/2:Classrooms/2:Temperature     Objects -> School -> Classrooms -> Temperature

Every step follows hierarchical references (``HierarchicalReferences`` and its subtypes, forward),
so ``Organizes``, ``HasComponent`` and ``HasProperty`` all work. The namespace index is required:
browse names differ between namespaces, and guessing one is how a point ends up on the wrong
node. A browse name containing ``/`` cannot be written in this format.

A NodeId given by namespace URI (``nsu=urn:vendor:plc;s=Temp``) has no index until it meets a
server: :func:`resolve_namespace` looks the URI up in that server's namespace array (read after
every connect, as a restarted server may number its namespaces differently), and only then
:func:`node_id` builds the NodeId.

Parsing is pure and runs when the driver is built, so a malformed address is a configuration
error (``ValueError``) before anything touches the network. Resolution of browse paths is one
TranslateBrowsePathsToNodeIds call for every path of a device, made once per connection; a path
the server cannot resolve, like a namespace URI it does not have, becomes an
:class:`~laterne.drivers.field.errors.UnresolvedAddress` for that point only.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence

from asyncua import ua
from asyncua.ua.object_ids import ObjectIds

from laterne.models.opcua_address import NodeAddress
from laterne.models.opcua_address import parse_browse_path as parse_browse_steps

from .errors import UnknownNamespace

__all__ = [
    "BrowsePath",
    "browse_path_request",
    "format_browse_path",
    "format_node_id",
    "node_id",
    "parse_browse_path",
    "resolve_namespace",
]

#: one parsed browse path: the browse name of each step below the Objects folder
BrowsePath = tuple[ua.QualifiedName, ...]

_NUMERIC = (ua.NodeIdType.TwoByte, ua.NodeIdType.FourByte, ua.NodeIdType.Numeric)


def parse_browse_path(text: str) -> BrowsePath:
    """The steps of ``text`` (``"2:School/2:Temperature"``) below the Objects folder.

    Raises
    ------
    ValueError
        (an :class:`~laterne.models.opcua_address.AddressError`) empty path, empty step, a step
        without ``<namespace index>:``, an index above 65535, or an empty browse name.
    """
    return tuple(ua.QualifiedName(s.name, s.namespace_index) for s in parse_browse_steps(text))


def browse_path_request(path: BrowsePath) -> ua.BrowsePath:
    """The TranslateBrowsePathsToNodeIds request item for ``path``, starting at Objects."""
    elements = []
    for name in path:
        el = ua.RelativePathElement()
        el.ReferenceTypeId = ua.NodeId(ua.Int32(ObjectIds.HierarchicalReferences))
        # asyncua annotates these as its Boolean class; on the wire they are plain bools
        el.IsInverse = False  # type: ignore[assignment]
        el.IncludeSubtypes = True  # type: ignore[assignment]
        el.TargetName = name
        elements.append(el)
    bp = ua.BrowsePath()
    bp.StartingNode = ua.NodeId(ua.Int32(ObjectIds.ObjectsFolder))
    bp.RelativePath = ua.RelativePath(Elements=elements)
    return bp


def format_browse_path(path: BrowsePath) -> str:
    """The text form of ``path`` (the inverse of :func:`parse_browse_path`)."""
    return "/".join(f"{q.NamespaceIndex}:{q.Name}" for q in path)


def resolve_namespace(
    address: NodeAddress, namespaces: Sequence[str], text: str, context: str = ""
) -> NodeAddress:
    """``address`` with its namespace URI replaced by its index in the server's ``namespaces``
    (the NamespaceArray, i=2255); an address given by index is returned as it is.

    Raises
    ------
    UnknownNamespace
        the URI is not in ``namespaces``; ``text`` (the NodeId as configured) names the node.
    """
    uri = address.namespace_uri
    if uri is None:
        return address
    try:
        index = list(namespaces).index(uri)
    except ValueError:
        raise UnknownNamespace(text, uri, namespaces, context) from None
    return address.with_index(index)


def node_id(address: NodeAddress) -> ua.NodeId:
    """asyncua's NodeId of ``address``, whose namespace must be an index.

    Raises
    ------
    ValueError
        the namespace is still a URI (resolve it with :func:`resolve_namespace` first).
    """
    ns = address.namespace_index
    if ns is None:
        raise ValueError(f"namespace {address.namespace_uri!r} is not resolved to an index")
    ident, index = address.identifier, ua.Int16(ns)
    if address.kind == "i":
        assert isinstance(ident, int)  # the parser's contract for each kind
        return ua.NodeId(ua.Int32(ident), index)  # asyncua picks 2-byte, 4-byte or numeric
    if address.kind == "s":
        assert isinstance(ident, str)
        return ua.NodeId(ua.String(ident), index, ua.NodeIdType.String)
    if address.kind == "g":
        assert isinstance(ident, str)
        return ua.NodeId(ua.Guid(ident), index, ua.NodeIdType.Guid)
    assert isinstance(ident, bytes)
    return ua.NodeId(ua.ByteString(ident), index, ua.NodeIdType.ByteString)


def format_node_id(nodeid: ua.NodeId, namespaces: Sequence[str] | None = None) -> str:
    """The text of ``nodeid``: ``ns=<index>;<kind>=<identifier>`` (no ``ns=`` for namespace 0),
    or with ``namespaces`` (the server's NamespaceArray) ``nsu=<uri>;<kind>=<identifier>``.
    Either parses back with :func:`~laterne.models.opcua_address.parse_node_id`.

    Raises
    ------
    ValueError
        ``namespaces`` is given but has no entry for the node's namespace index, or the NodeId
        has an identifier type that has no text form.
    """
    kind_ident = _identifier_text(nodeid)
    ns = int(nodeid.NamespaceIndex)
    if namespaces is not None:
        if ns >= len(namespaces):
            raise ValueError(f"namespace index {ns} is not in the server's namespace array")
        return f"nsu={namespaces[ns]};{kind_ident}"
    return f"ns={ns};{kind_ident}" if ns else kind_ident


def _identifier_text(nodeid: ua.NodeId) -> str:
    t, ident = nodeid.NodeIdType, nodeid.Identifier
    if t in _NUMERIC and isinstance(ident, int):
        return f"i={int(ident)}"
    if t is ua.NodeIdType.String and isinstance(ident, str):
        return f"s={ident}"
    if t is ua.NodeIdType.Guid and isinstance(ident, uuid.UUID):
        return f"g={ident}"
    if t is ua.NodeIdType.ByteString and isinstance(ident, bytes):
        return "b=" + base64.b64encode(ident).decode("ascii")
    raise ValueError(f"NodeId {nodeid!r} has no text form")
