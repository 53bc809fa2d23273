"""How a configuration key is declared: its converter, a description and (if optional) a default.

Every section's keys are fields of a frozen dataclass declared with :func:`key`: the worker
types' options (each in its component's module), ``[redis]``, ``[supervisor]``, ``[loglines]``
and the program keys any worker or process takes (:mod:`pipeline.config.model`). The loader
reads a section by its class's schema, so a key is spelled once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, Field, field, fields
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
def key(convert: Callable[[str], T], doc: str) -> T: ...
@overload
def key(convert: Callable[[str], T], doc: str, default: T) -> T: ...


def key(convert: Callable[[str], Any], doc: str, default: Any = MISSING) -> Any:
    """A configuration key: its converter (from :mod:`pipeline.config.datatypes`), a
    one-line description (for errors and docs) and, if optional, its default."""
    return field(default=default, metadata={"convert": convert, "doc": doc})


def schema(options_type: type) -> dict[str, Field[Any]]:
    """Key name -> dataclass field, for the fields declared with :func:`key`."""
    return {f.name: f for f in fields(options_type) if "convert" in f.metadata}


def required(options_type: type) -> list[str]:
    return [name for name, f in schema(options_type).items() if f.default is MISSING]


def describe(options_type: type) -> list[tuple[str, str, str]]:
    """(key, default shown as text, description) of every key, for docs and ``--help``."""
    out = []
    for name, f in schema(options_type).items():
        default = "required" if f.default is MISSING else repr(f.default)
        out.append((name, default, str(f.metadata["doc"])))
    return out
