"""The API's error answers, one shape each: 404 naming what exists, 422 as FastAPI's own.

Rule: an unknown id is ``404 {"detail": "unknown device 'x'; known: a, b"}`` (at most
``MAX_KNOWN_IDS`` ids, then "… and N more"; a point: ``unknown point 'p' of device 'x'; known:
...``); a bad combination of query parameters is a 422 shaped exactly like FastAPI's validation
errors (``{"detail": [{"loc", "msg", "type"}, ...]}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError

__all__ = ["MAX_KNOWN_IDS", "by_id", "invalid_query", "not_found"]

#: ids listed in a 404 message before "… and N more"
MAX_KNOWN_IDS = 50


def not_found(kind: str, wanted: str, known: Sequence[str], of: str = "") -> HTTPException:
    """404 naming what was asked and what exists: ``unknown device 'x'; known: a, b``.

    ``of`` qualifies the id, e.g. ``" of device 'ctr-1'"`` for a point.
    """
    shown = ", ".join(known[:MAX_KNOWN_IDS]) if known else "(none)"
    if len(known) > MAX_KNOWN_IDS:
        shown += f", … and {len(known) - MAX_KNOWN_IDS} more"
    return HTTPException(status_code=404, detail=f"unknown {kind} {wanted!r}{of}; known: {shown}")


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


_V = TypeVar("_V", bound=_HasId)


def by_id(kind: str, wanted: str, items: Sequence[_V]) -> _V:
    """The item with id ``wanted``, else the 404 that names the known ids."""
    for item in items:
        if item.id == wanted:
            return item
    raise not_found(kind, wanted, [i.id for i in items])


def invalid_query(name: str, message: str, value: object) -> RequestValidationError:
    """A 422 shaped exactly like FastAPI's own validation errors."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", name), "msg": message, "input": value}]
    )
