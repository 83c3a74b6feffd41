"""The reference of every site-file field, generated from the schema so it cannot drift.

Rule: pure (no I/O): :func:`render_reference` walks the pydantic models of
:class:`~laterne.models.site.SiteConfig` from the top, in field order, and renders one markdown
table per model (field, type with its constraints, default, description) under the YAML path
where the model appears (``segments[].bands[]``, ``profiles.<name>.points.<name>``). Units are
in the field names and descriptions. ``scripts/config-reference`` writes the result to
``docs/configuration.md``, and a test fails when that file differs from it.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .site import PointRef, SiteConfig

__all__ = ["Section", "render_reference", "sections"]

_HEADER = """\
# Site configuration reference

<!-- Generated from the schema (models/site.py) by scripts/config-reference; do not edit. -->

Every field of a site file, with its type, default and unit, generated from the schema in
`models/site.py` (`scripts/config-reference` rewrites this file; a test fails when it is out of
date). A site file is one YAML document saved as UTF-8, at most 20 MB; `laterne validate FILE`
checks every field and every reference and names file, line and field of each problem. Units
are in the field names (`_s` seconds, `_ms` milliseconds, `_pct` percent, `_w` watts, `_c` °C,
`_m2` m², `_veh_h` vehicles per hour, `_days`, `_minutes`) or in brackets in the description.
A field marked *required* has no default; *not set* means the feature is off unless given.
A `device.point` is a reference to a point of a device: the device's `id` and the name of one
of the points of its profile.
"""


@dataclass(frozen=True)
class Section:
    """One model as it appears in the file: where (YAML path), which model, its fields."""

    path: str
    model: type[BaseModel]
    title: str


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models (other than point references) an annotation refers to, in order."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [] if annotation is PointRef else [annotation]
    out: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        out += _models_in(arg)
    return out


def _child_path(path: str, name: str, annotation: Any) -> str:
    """The YAML path below ``path.name`` at which the models of ``annotation`` appear."""
    here = f"{path}.{name}" if path else name
    origin = get_origin(annotation)
    if origin is Annotated:
        return _child_path(path, name, get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _child_path(path, name, args[0]) if len(args) == 1 else here
    if origin is list:
        return here + "[]"
    if origin is dict:
        return here + ".<name>"
    return here


def _title(model: type[BaseModel]) -> str:
    titles = {
        "ModbusProfile": "Modbus profile",
        "OpcUaProfile": "OPC-UA profile",
        "ModbusPoint": "Modbus point",
        "OpcUaPoint": "OPC-UA point",
        "ModbusEndpoint": "Modbus TCP endpoint",
        "OpcUaEndpoint": "OPC-UA endpoint",
    }
    return titles.get(model.__name__, "")


def sections() -> list[Section]:
    """Every model of the site schema, depth first in field order, each once."""
    out: list[Section] = []
    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel], path: str) -> None:
        if model in seen:
            return
        seen.add(model)
        out.append(Section(path, model, _title(model)))
        for name, field in model.model_fields.items():
            child = _child_path(path, name, field.annotation)
            for sub in _models_in(field.annotation):
                walk(sub, child)

    walk(SiteConfig, "")
    return out


# ------------------------------------------------------------------------------ cells


def _type_name(annotation: Any, paths: dict[type[BaseModel], str]) -> str:
    origin = get_origin(annotation)
    if annotation is PointRef:
        return "`device.point`"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        title = _title(annotation)
        return f"{title} (`{paths[annotation]}`)" if title else f"mapping (`{paths[annotation]}`)"
    if origin is Annotated:
        return _type_name(get_args(annotation)[0], paths)
    if origin is Literal:
        return " \\| ".join(f"`{_yaml(v)}`" for v in get_args(annotation))
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return " or ".join(_type_name(a, paths) for a in args)
    if origin is list:
        return f"list of {_type_name(get_args(annotation)[0], paths)}"
    if origin is dict:
        return f"mapping of name → {_type_name(get_args(annotation)[1], paths)}"
    if annotation in (str, int, float, bool):
        return {str: "text", int: "integer", float: "number", bool: "`true` \\| `false`"}[
            annotation
        ]
    return f"`{getattr(annotation, '__name__', annotation)}`"


def _constraints(field: FieldInfo) -> Iterator[str]:
    for m in field.metadata:
        if isinstance(m, at.Ge):
            yield f"≥ {_num(m.ge)}"
        elif isinstance(m, at.Gt):
            yield f"> {_num(m.gt)}"
        elif isinstance(m, at.Le):
            yield f"≤ {_num(m.le)}"
        elif isinstance(m, at.Lt):
            yield f"< {_num(m.lt)}"
        elif isinstance(m, at.MinLen):
            yield f"at least {m.min_length}"
        elif isinstance(m, at.MaxLen):
            yield f"at most {m.max_length}"
        elif getattr(m, "pattern", None):
            yield f"matches `{m.pattern}`"


def _num(v: Any) -> str:
    return f"{v:,}".replace(",", " ") if isinstance(v, int) and abs(v) >= 10_000 else f"{v:g}"


def _yaml(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _default(field: FieldInfo, paths: dict[type[BaseModel], str]) -> str:
    if field.is_required():
        return "*required*"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "*not set*"
    if isinstance(value, BaseModel):
        return f"defaults of `{paths[type(value)]}`"
    if isinstance(value, list | dict) and not value:
        return "empty"
    if isinstance(value, str) and value == "":
        return '`""`'
    return f"`{_yaml(value)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _doc(model: type[BaseModel]) -> str:
    """The first paragraph of the model's docstring, ``rst`` literals as markdown ones."""
    doc = inspect.getdoc(model) or ""
    if model.__doc__ is None or doc == inspect.getdoc(BaseModel):
        return ""
    first = doc.split("\n\n")[0].replace("\n", " ")
    return first.replace("``", "`")


def render_reference() -> str:
    """``docs/configuration.md``: every section, every field, in schema order."""
    secs = sections()
    paths = {s.model: s.path or "(top level)" for s in secs}
    out = [_HEADER]
    for sec in secs:
        heading = f"`{sec.path}`" if sec.path else "Top level"
        if sec.title:
            heading += f" — {sec.title}"
        out.append(f"\n## {heading}\n")
        doc = _doc(sec.model)
        if doc:
            out.append(f"\n{doc}\n")
        out.append("\n| field | type | default | description |\n|---|---|---|---|\n")
        for name, field in sec.model.model_fields.items():
            kind = _type_name(field.annotation, paths)
            limits = ", ".join(_constraints(field))
            if limits:
                kind += f"; {limits}"
            row = [f"`{name}`", kind, _default(field, paths), _cell(field.description or "")]
            out.append("| " + " | ".join(row) + " |\n")
    return "".join(out)
