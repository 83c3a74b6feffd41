"""OPC-UA browse paths: the text format of ``PointSpec.browse_path``, parsed once, resolved in bulk.

Rule: a browse path starts at the Objects folder (``i=85``) and names one child per step,
``<namespace index>:<browse name>``, separated by ``/``::

    2:School/2:Classrooms/2:Temperature     Objects -> School -> Classrooms -> Temperature

Every step follows hierarchical references (``HierarchicalReferences`` and its subtypes, forward),
so ``Organizes``, ``HasComponent`` and ``HasProperty`` all work. The namespace index is required:
browse names differ between namespaces, and guessing one is how a point ends up on the wrong
node. A browse name containing ``/`` cannot be written in this format.

:func:`parse_browse_path` is pure and runs when the driver is built, so a malformed path is a
configuration error (``ValueError``) before anything touches the network. Resolution is one
TranslateBrowsePathsToNodeIds call for every path of a device, made once per connection (the
server may have been rebuilt since the last one); a path the server cannot resolve becomes an
:class:`~laterne.drivers.errors.UnresolvedBrowsePath` for that point only.
"""

from __future__ import annotations

import re

from asyncua import ua
from asyncua.ua.object_ids import ObjectIds

__all__ = ["BrowsePath", "browse_path_request", "format_browse_path", "parse_browse_path"]

#: one parsed browse path: the browse name of each step below the Objects folder
BrowsePath = tuple[ua.QualifiedName, ...]

_STEP = re.compile(r"^(?P<ns>\d+):(?P<name>[^/]+)$")


def parse_browse_path(text: str) -> BrowsePath:
    """The steps of ``text`` (``"2:School/2:Temperature"``) below the Objects folder.

    Raises
    ------
    ValueError
        empty path, empty step, a step without ``<namespace index>:``, or an index above 65535.
    """
    if not text:
        raise ValueError("empty browse path")
    steps: list[ua.QualifiedName] = []
    for step in text.split("/"):
        m = _STEP.match(step)
        if m is None:
            raise ValueError(
                f"browse path {text!r}: step {step!r} is not '<namespace index>:<browse name>'"
            )
        ns = int(m["ns"])
        if ns > 0xFFFF:
            raise ValueError(f"browse path {text!r}: namespace index {ns} is above 65535")
        steps.append(ua.QualifiedName(m["name"], ns))
    return tuple(steps)


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
