"""Loading parser plugins and checking them against the plugin contract at load time.

A plugin is a Python module with either or both of

* ``parseline(jmsg) -> dict`` — the original contract: ``jmsg`` is the JSON text of the item
  (``{"service": ..., "logline": ...}`` plus its id fields); returns the fields it extracted;
* ``parse(item) -> dict | None`` — the faster form: receives the item as a dict.

* ``parse_batch(lines) -> list`` — the fastest form, for the lines of a run (consecutive
  plain lines of one file, as the watcher ships them): it returns one entry per line, a record,
  None ("not for me") or an exception instance (that line is dead-lettered with it). The worker
  adds each record's carried fields (``service``, ``src``, ``off``, ``logline``) itself. Should
  it raise, the run is done again line by line with ``parse`` (so one bad line costs the run's
  speed, never the other lines); items that are not lines of a run always go to ``parse``.

and optionally ``get_openurl_params(c, worker_section, pl) -> dict`` (the tracker's hook) and
``make_parser(options) -> parse`` (and ``make_batch_parser(options) -> parse_batch``) with
``OPTIONS = {name: description}`` for plugins that take ``opt_<name>`` keys from their worker's
section. An empty result means "not for me". A plugin with only the batch form gets ``parse``
made from it (the item's ``logline`` as a run of one).

A plugin may declare the fields of its records, ``FIELDS = {"kind": {"download", "item"},
"time": None, ...}``: each field with the values it takes (``None``: any value), and the key
``"*"`` when records may carry fields of their input too. A parser's ``accept`` is checked
against it at load, so ``accept = knd=download`` or ``kind=downloads`` fails ``loglines check``
instead of sending every record to ``other_queue``.

A plugin is named by a built-in short name (``accesslog``), a module in a ``plugins/`` folder,
or any importable dotted path. A missing function or a wrong signature fails at load, naming
the plugin, the function and the expected signature.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from pipeline.errors import PluginError

ParseFn = Callable[[dict[str, Any]], Mapping[str, Any] | None]
#: the lines of a run -> per line: a record, None (not wanted) or the exception it raised
BatchFn = Callable[[list[str]], Sequence[Mapping[str, Any] | BaseException | None]]
#: field -> the values it takes (None: any); the key "*" says records carry other fields too
Fields = Mapping[str, frozenset[str] | None]

_SIGNATURES = {
    "parseline": ("jmsg",),
    "parse": ("item",),
    "get_openurl_params": ("c", "worker_section", "pl"),
    "make_parser": ("options",),
    "parse_batch": ("lines",),
    "make_batch_parser": ("options",),
}


@dataclass(frozen=True)
class Plugin:
    name: str
    module: ModuleType
    parse: ParseFn
    get_openurl_params: Callable[..., Mapping[str, Any] | None] | None
    fields: Fields | None = None  # what the plugin declares its records hold (FIELDS)
    parse_batch: BatchFn | None = None  # the batch form, for runs of lines


def load(spec: str, plugin_dirs: Sequence[Path] = (), options: Mapping[str, str] | None = None) -> Plugin:
    module = _import(spec, plugin_dirs)
    for function, params in _SIGNATURES.items():
        if hasattr(module, function):
            _check_signature(spec, module, function, params)
    options = dict(options or {})
    declared = getattr(module, "OPTIONS", {})
    for key in options:
        if key not in declared:
            allowed = ", ".join(f"opt_{k}" for k in declared) or "none"
            raise PluginError(f"plugin {spec!r} takes no option 'opt_{key}' (it takes: {allowed})")
    batch = _made(spec, module, "make_batch_parser", options) or getattr(module, "parse_batch", None)
    if hasattr(module, "make_parser"):
        parse = _made(spec, module, "make_parser", options)
    elif hasattr(module, "parse"):
        parse = module.parse
    elif hasattr(module, "parseline"):
        parseline = module.parseline

        def parse(item: dict[str, Any]) -> Mapping[str, Any] | None:
            record: Mapping[str, Any] | None = parseline(orjson.dumps(item).decode("utf-8"))
            return record
    elif batch is not None:
        parse = _one_of(batch)
    elif hasattr(module, "get_openurl_params"):
        parse = _passthrough
    else:
        raise PluginError(
            f"plugin {spec!r} ({getattr(module, '__file__', '?')}) defines none of "
            "parseline(jmsg), parse(item), parse_batch(lines), make_parser(options)"
        )
    return Plugin(spec, module, parse, getattr(module, "get_openurl_params", None),
                  _fields(spec, getattr(module, "FIELDS", None)), batch)


def _made(spec: str, module: ModuleType, factory: str, options: Mapping[str, str]) -> Any:
    """What ``make_parser`` or ``make_batch_parser`` makes of the options (None: no such)."""
    if not hasattr(module, factory):
        return None
    try:
        made = getattr(module, factory)(options)
    except (ValueError, TypeError) as exc:
        raise PluginError(f"plugin {spec!r}: bad option: {exc}") from None
    if not callable(made):
        raise PluginError(f"plugin {spec!r}: {factory}(options) must return a function")
    return made


def _one_of(batch: BatchFn) -> ParseFn:
    """``parse(item)`` made of a batch-only plugin: the item's line as a run of one."""

    def parse(item: dict[str, Any]) -> Mapping[str, Any] | None:
        result = batch([item["logline"]])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    return parse


def _fields(spec: str, declared: object) -> Fields | None:
    """A plugin's ``FIELDS``, checked: field names to None or a collection of strings."""
    if declared is None:
        return None
    shape = "FIELDS must map field names to None or a set of the values the field takes"
    if not isinstance(declared, Mapping):
        raise PluginError(f"plugin {spec!r}: {shape}")
    fields: dict[str, frozenset[str] | None] = {}
    for name, values in declared.items():
        if not isinstance(name, str) or isinstance(values, str | bytes) or not (
                values is None or isinstance(values, set | frozenset | list | tuple)
                and all(isinstance(v, str) for v in values)):
            raise PluginError(f"plugin {spec!r}: {shape} (not {name!r}: {values!r})")
        fields[name] = None if values is None else frozenset(values)
    return fields


def _passthrough(item: dict[str, Any]) -> dict[str, Any]:
    return item


def _in_folder(spec: str, plugin_dirs: Sequence[Path]) -> Path | None:
    """The file of a plugin in a plugins folder: ``mine`` is ``mine.py`` of one, and
    ``plugins.mine`` (the original form) the file ``mine.py`` of the folder ``plugins/``."""
    head, _, rest = spec.partition(".")
    for directory in plugin_dirs:
        if not rest:
            candidate = directory / f"{spec}.py"
        elif directory.name == head:
            candidate = directory.joinpath(*rest.split(".")).with_suffix(".py")
        else:
            continue
        if candidate.is_file():
            return candidate
    return None


def _module_name(spec: str, plugin_dirs: Sequence[Path]) -> str:
    """The importable name of a plugin not in a plugins folder: a built-in's, or ``spec``."""
    if "." not in spec and importlib.util.find_spec(f"pipeline.plugins.{spec}") is not None:
        return f"pipeline.plugins.{spec}"
    for directory in plugin_dirs:  # so that "plugins.mine" resolves next to loglines.cfg
        parent = str(directory.parent)
        if parent not in sys.path:
            sys.path.append(parent)
    return spec


def source_file(spec: str, plugin_dirs: Sequence[Path] = ()) -> Path | None:
    """The file ``load`` takes a plugin from, found without running it (None: not found)."""
    found = _in_folder(spec, plugin_dirs)
    if found is not None:
        return found
    try:  # a dotted name imports its packages, whose code may raise anything
        module_spec = importlib.util.find_spec(_module_name(spec, plugin_dirs))
    except Exception:  # not found or broken: loading it says so, naming the plugin
        return None
    origin = module_spec.origin if module_spec is not None else None
    return Path(origin) if origin and Path(origin).is_file() else None


def _import(spec: str, plugin_dirs: Sequence[Path]) -> ModuleType:
    found = _in_folder(spec, plugin_dirs)
    if found is not None:
        return _import_file(spec.replace(".", "_"), found)
    name = _module_name(spec, plugin_dirs)
    if name != spec:
        return importlib.import_module(name)
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        where = ", ".join(str(d) for d in plugin_dirs) or "no plugin folder"
        raise PluginError(
            f"plugin {spec!r} not found: not a built-in ({', '.join(builtins())}), "
            f"not a module in {where}, not importable ({exc})"
        ) from None
    except Exception as exc:
        raise PluginError(f"plugin {spec!r} failed to import: {type(exc).__name__}: {exc}") from None


def builtins() -> list[str]:
    """The short names of the built-in plugins."""
    import pkgutil

    from pipeline import plugins

    return sorted(m.name for m in pkgutil.iter_modules(plugins.__path__) if not m.name.startswith("_"))


def _import_file(spec: str, path: Path) -> ModuleType:
    name = f"loglines_plugin_{spec}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise PluginError(f"plugin {spec!r}: cannot load {path}")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise PluginError(f"plugin {spec!r} ({path}) failed to import: {type(exc).__name__}: {exc}") from None
    sys.modules[name] = module
    return module


def _check_signature(spec: str, module: ModuleType, function: str, params: tuple[str, ...]) -> None:
    target = getattr(module, function)
    expected = f"{function}({', '.join(params)})"
    if not callable(target):
        raise PluginError(f"plugin {spec!r}: {function} is not a function (expected {expected})")
    try:
        inspect.signature(target).bind(*params)
    except TypeError:
        raise PluginError(
            f"plugin {spec!r}: {function}{inspect.signature(target)} does not match the contract "
            f"{expected}"
        ) from None
    except ValueError:
        return  # builtins without a signature: trust them
