"""The algorithm contract, the way lidR passes ``csf()`` or ``lmf()`` to a generic step.

Every algorithm is a small frozen dataclass, registered in one *family* with
:func:`algorithm`; a family is one protocol, the method each of its members implements:

========  ==============================================  =====================
family    method                                          members
========  ==============================================  =====================
ground    ``mask(x, y, z) -> bool[]``  ground points      csf
noise     ``mask(x, y, z) -> bool[]``  outliers           ivf, sor
dtm       ``idw`` (the IDW part), ``triangulated``,       tin, knnidw
          ``within(buffer)``
chm       ``surfaces(points, grid) -> (peaks, surface)``  pitfree, p2r
          (tops are found on the peaks, crowns on the
          surface), ``rasterize`` (the surface),
          ``smoothed(surface, points, grid)`` (the CHM)
trees     ``locate(chm) -> {"x", "y", "height"}``         lmf
crowns    ``segment(z, markers, res) -> int32[,]``        watershed, dalponte2016
========  ==============================================  =====================

Each parameter is declared with :func:`param` (default, description, bounds).  That one
declaration validates the object when it is made (``lmf(shape="triangle")`` is refused),
generates the OGC process inputs (:func:`input_description`) and the command line's
flags (:func:`add_flags`), and turns JSON back into objects (:func:`build`), so adding an
algorithm touches only the module that defines it.  Written here because no library
derives JSON Schema, argparse flags and validation from one dataclass declaration with
the nesting these objects use (``tin(fallback=knnidw())``, ``lmf(ws=crown_window())``).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Callable

from .errors import InvalidParameter

FAMILIES = {
    "ground": "Ground classification",
    "noise": "Noise filter",
    "dtm": "Terrain model",
    "chm": "Canopy height model",
    "trees": "Tree detection",
    "crowns": "Crown segmentation",
}
_REGISTRY: dict[str, dict[str, type]] = {f: {} for f in FAMILIES}
_DEFAULT: dict[str, str] = {}


@dataclass(frozen=True)
class Spec:
    """What a parameter accepts.  ``kind``: number, integer, boolean, choice, numbers
    (a list of numbers of ``length`` items, any when 0) or object (a parameter object,
    the field's default's class).  ``alternatives``: parameter-object classes accepted
    besides the kind (``lmf.ws``: a number or a ``crown_window``); ``python_only``: a
    callable is accepted from Python (not from JSON)."""

    doc: str
    kind: str = "number"
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple = ()
    length: int = 0
    nullable: bool = False
    alternatives: tuple[type, ...] = ()
    python_only: bool = False


def param(default: Any, doc: str, kind: str = "number", **spec: Any):
    """A dataclass field declaring one parameter (see :class:`Spec`)."""
    return field(default=default, metadata={"spec": Spec(doc, kind, **spec)})


class Parameters:
    """Base of algorithms and parameter objects: validated when made."""

    def __post_init__(self) -> None:
        for f in fields(self):
            spec = f.metadata.get("spec")
            if spec is not None:
                _check(f"{type(self).__name__}.{f.name}", getattr(self, f.name), spec, f.default)


def algorithm(family: str, *, default: bool = False) -> Callable[[type], type]:
    """Class decorator: make the class a frozen dataclass and register it in ``family``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}")

    def register(cls: type) -> type:
        cls = dataclass(frozen=True)(cls)
        cls.family = family
        _REGISTRY[family][cls.__name__] = cls
        if default:
            _DEFAULT[family] = cls.__name__
        return cls

    return register


def members(family: str) -> dict[str, type]:
    _load()
    return dict(_REGISTRY[family])


def _load() -> None:
    """Import the modules that define the algorithms (they register themselves)."""
    from . import crowns, ground, surface, terrain, trees  # noqa: F401


# --- validation -----------------------------------------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_number(name: str, v: Any, s: Spec) -> None:
    if not _is_number(v) or (s.kind == "integer" and int(v) != v):
        raise InvalidParameter(f"{name} must be {'an integer' if s.kind == 'integer' else 'a number'}, got {v!r}")
    if s.minimum is not None and (v <= s.minimum if s.exclusive_minimum else v < s.minimum):
        raise InvalidParameter(f"{name} must be {'>' if s.exclusive_minimum else '>='} {s.minimum}, got {v!r}")
    if s.maximum is not None and v > s.maximum:
        raise InvalidParameter(f"{name} must be <= {s.maximum}, got {v!r}")


def _check(name: str, v: Any, s: Spec, default: Any) -> None:
    if v is None and s.nullable:
        return
    if isinstance(v, s.alternatives) or (s.python_only and callable(v) and not isinstance(v, Parameters)):
        return
    if s.kind in ("number", "integer"):
        _check_number(name, v, s)
    elif s.kind == "boolean":
        if not isinstance(v, bool):
            raise InvalidParameter(f"{name} must be true or false, got {v!r}")
    elif s.kind == "choice":
        if v not in s.choices:
            raise InvalidParameter(f"{name} must be one of {', '.join(map(str, s.choices))}, got {v!r}")
    elif s.kind == "numbers":
        if not isinstance(v, tuple) or not v or (s.length and len(v) != s.length):
            raise InvalidParameter(f"{name} must be a tuple of {s.length or 'one or more'} numbers, got {v!r}")
        for x in v:
            _check_number(name, x, s)
    elif s.kind == "object":
        if not isinstance(v, type(default)):
            raise InvalidParameter(f"{name} must be a {type(default).__name__}, got {v!r}")


# --- JSON -------------------------------------------------------------------------------------


def describe(obj: Any, named: bool = True) -> Any:
    """An algorithm or parameter object as JSON (``{"algorithm": name, ...}`` for an algorithm
    when ``named``; parameter objects nested in it carry no name)."""
    if is_dataclass(obj):
        out = {"algorithm": type(obj).__name__} if named and hasattr(type(obj), "family") else {}
        for f in fields(obj):
            v = getattr(obj, f.name)
            if "spec" in f.metadata and (is_dataclass(v) or not callable(v)):  # a Python callable has no JSON
                out[f.name] = describe(v, named=False)
        return out
    if isinstance(obj, tuple):
        return [describe(v) for v in obj]
    return obj


def _from_json(cls: type, given: dict, where: str) -> Any:
    if not isinstance(given, dict):
        raise InvalidParameter(f"{where} must be an object, got {given!r}")
    known = {f.name: f for f in fields(cls) if "spec" in f.metadata}
    kwargs = {}
    for key, v in given.items():
        if key == "algorithm":
            continue
        f = known.get(key)
        if f is None:
            raise InvalidParameter(f"{where}: unknown parameter {key!r} (known: {', '.join(sorted(known))})")
        s: Spec = f.metadata["spec"]
        if isinstance(v, dict):
            target = s.alternatives[0] if s.alternatives else type(f.default)
            if not is_dataclass(target):
                raise InvalidParameter(f"{where}.{key} must not be an object")
            v = _from_json(target, v, f"{where}.{key}")
        elif isinstance(v, list):
            v = tuple(v)
        kwargs[key] = v
    return cls(**kwargs)


def build(family: str, given: Any) -> Any:
    """The algorithm described by ``given``: an object ``{"algorithm": name, param: value...}``
    (the family's default algorithm when ``algorithm`` is left out), a name, or None
    (the default with its defaults; for ``noise``, None turns the filter off)."""
    algos = members(family)
    if given is None:
        return None if family == "noise" else algos[_DEFAULT[family]]()
    if isinstance(given, str):
        given = {"algorithm": given}
    if not isinstance(given, dict):
        raise InvalidParameter(f"{family} must be an object with an 'algorithm' name, got {given!r}")
    name = given.get("algorithm", _DEFAULT[family])
    if name not in algos:
        raise InvalidParameter(f"unknown {family} algorithm {name!r} (known: {', '.join(algos)})")
    return _from_json(algos[name], given, f"{family}.{name}")


# --- JSON Schema (OGC process inputs) ----------------------------------------------------------


def _number_schema(s: Spec, integer: bool = False) -> dict:
    out: dict[str, Any] = {"type": "integer" if integer else "number"}
    if s.minimum is not None:
        out["exclusiveMinimum" if s.exclusive_minimum else "minimum"] = s.minimum
    if s.maximum is not None:
        out["maximum"] = s.maximum
    return out


def _field_schema(f) -> dict | None:
    s: Spec = f.metadata["spec"]
    if s.kind in ("number", "integer"):
        out = _number_schema(s, s.kind == "integer")
    elif s.kind == "boolean":
        out = {"type": "boolean"}
    elif s.kind == "choice":
        out = {"type": "string", "enum": list(s.choices)}
    elif s.kind == "numbers":
        out = {"type": "array", "items": _number_schema(s), "minItems": s.length or 1}
        if s.length:
            out["maxItems"] = s.length
    else:
        out = _object_schema(type(f.default))
    if s.nullable:
        out = {"oneOf": [out, {"type": "null"}]}
    if s.alternatives:
        out = {"oneOf": [out, *(_object_schema(a) for a in s.alternatives)]}
    out["description"] = s.doc
    out["default"] = describe(f.default, named=False)
    return out


def _object_schema(cls: type, name: str | None = None) -> dict:
    props = {f.name: _field_schema(f) for f in fields(cls) if "spec" in f.metadata}
    if name is not None:
        props = {"algorithm": {"type": "string", "const": name}, **props}
    out = {"type": "object", "title": name or cls.__name__, "properties": props, "additionalProperties": False}
    if cls.__doc__:
        out["description"] = " ".join(cls.__doc__.split("\n\n")[0].split())
    return out


def input_description(family: str) -> dict:
    """The OGC process input for ``family``: one object per algorithm, told apart by ``algorithm``."""
    algos = members(family)
    variants = [_object_schema(cls, name) for name, cls in algos.items()]
    for v in variants:  # the default may leave out its name; the others must give it
        if v["title"] == _DEFAULT[family]:
            v["properties"]["algorithm"] = {"type": "string", "enum": [_DEFAULT[family]]}
        else:
            v["required"] = ["algorithm"]
    schema: dict[str, Any] = variants[0] if len(variants) == 1 else {"oneOf": variants}
    if family == "noise":
        schema = {"oneOf": [*(schema["oneOf"] if "oneOf" in schema else [schema]), {"type": "null"}]}
    names = ", ".join(algos)
    return {"title": FAMILIES[family],
            "description": f"{FAMILIES[family]}: {{\"algorithm\": one of {names}, parameter: value...}}; "
                           f"left out: {_DEFAULT[family]} with its defaults"
                           + ("; null: no noise filter" if family == "noise" else ""),
            "minOccurs": 0, "maxOccurs": 1, "schema": schema}


# --- command line ---------------------------------------------------------------------------


def _flag_fields(family: str) -> dict[str, Any]:
    """The parameters of a family's algorithms that a flag can set (same name: one flag)."""
    out: dict[str, Any] = {}
    for cls in members(family).values():
        for f in fields(cls):
            s = f.metadata.get("spec")
            if s is not None and s.kind != "object":
                out.setdefault(f.name, s)
    return out


def add_flags(parser: argparse.ArgumentParser, family: str) -> None:
    """``--FAMILY NAME`` and ``--FAMILY-PARAM VALUE`` for every parameter of its algorithms."""
    group = parser.add_argument_group(FAMILIES[family].lower())
    group.add_argument(f"--{family}", choices=list(members(family)), default=None,
                       help=f"algorithm (default {_DEFAULT[family]})")
    for name, s in _flag_fields(family).items():
        opt = f"--{family}-{name.replace('_', '-')}"
        kw: dict[str, Any] = {"dest": f"{family}__{name}", "default": None, "help": s.doc, "metavar": name.upper()}
        if s.kind == "boolean":
            kw["type"] = lambda v: v.lower() in ("1", "true", "yes")
        elif s.kind == "choice":
            kw["choices"] = list(s.choices)
        elif s.kind == "numbers":
            kw.update(type=float, nargs=s.length or "+")
        else:
            kw["type"] = int if s.kind == "integer" else float
        group.add_argument(opt, **kw)


def from_flags(args: argparse.Namespace, family: str) -> Any:
    """The algorithm the flags of :func:`add_flags` describe (the default when none is given)."""
    given = {name: getattr(args, f"{family}__{name}") for name in _flag_fields(family)}
    given = {k: v for k, v in given.items() if v is not None}
    name = getattr(args, family) or _DEFAULT[family]
    return build(family, {"algorithm": name, **given})
