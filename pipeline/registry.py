"""The worker types: one :class:`Component` per ``type =``, declared in its own module.

A component says everything the rest of loglines needs to know about a worker type: its
options (the keys of its section), how it runs, whether it is a single process, which of its
keys name the queues it reads and writes, whether it loads a plugin, and the original script
it replaces. The config loader, ``loglines check``, ``loglines status``, the supervisord
generator and ``loglines worker`` all read this registry: adding a worker type is one new
module with a ``COMPONENT`` and one line in :data:`BUILTIN`.
"""

from __future__ import annotations

import builtins
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import redis

    from pipeline.config.model import Config, ProgramConfig, RedisConfig
    from pipeline.core.lifecycle import Flags

#: The modules of the built-in worker types, in the order their types are listed in docs.
BUILTIN = (
    "pipeline.sources.watcher",
    "pipeline.transforms.parser",
    "pipeline.transforms.broker",
    "pipeline.sinks.filelogger",
    "pipeline.sinks.tracker",
    "pipeline.sinks.esindexer",
    "pipeline.ops.schedule",
    "pipeline.sources.http",
    "pipeline.sinks.forward",
    "pipeline.monitor.monitor",
    "pipeline.query.api",
)


class Section(Protocol):
    """What a component's ``prepare`` hook may use of the section being loaded."""

    name: str
    items: dict[str, str]

    def error(self, message: str, key: str | None = None, value: str | None = None) -> Exception: ...

    def resolve(self, value: str) -> str: ...


Runner = Callable[["Config", "ProgramConfig[Any]", "Flags"], int]


@dataclass(frozen=True)
class Component:
    type: str  # the value of ``type =``
    doc: str  # one line: what it does
    options: builtins.type[Any]  # frozen dataclass of its keys, declared with config.options.key()
    run: Runner  # runs the worker until a stop is requested; the exit status
    single_process: bool = False  # keeps per-process state: numprocs must be 1
    reads: tuple[str, ...] = ()  # option keys naming the queues it consumes
    writes: tuple[str, ...] = ()  # option keys naming the queues it pushes to
    #: loads (and so checks) the worker's plugin, for ``loglines check`` and start-up
    plugin: Callable[[Config, ProgramConfig[Any]], object] | None = None
    plugin_options: bool = False  # its section may carry opt_<name> keys for the plugin
    original_command: str = ""  # the original system's script this type replaces
    aliases: Mapping[str, str] = field(default_factory=dict)  # original key name -> key
    #: finishes the values read from a section (paths resolved, cross-key checks)
    prepare: Callable[[dict[str, Any], Section], dict[str, Any]] | None = None
    #: option keys (seconds) of calls that block the worker: each must end well within
    #: ``stopwaitsecs``, or supervisord kills the worker in the middle of one
    blocking: tuple[str, ...] = ()
    #: checks the options against the worker's Redis settings (sizes that must fit in a message)
    validate: Callable[[Any, RedisConfig, Section], None] | None = None
    #: option keys naming what only one worker of this type may use (a file logger's file)
    exclusive: tuple[str, ...] = ()
    #: what ``loglines check`` says about the worker's surroundings as they are now (warnings:
    #: a log file that is not there yet)
    check: Callable[[Config, ProgramConfig[Any]], list[str]] | None = None
    #: what ``loglines status`` shows of the worker beyond its counts (a watcher's files), from
    #: the worker's Redis server
    status: Callable[[Config, ProgramConfig[Any], redis.Redis], dict[str, Any]] | None = None
    #: what it counts of each batch besides the items (``Outcome.tally``), shown by ``status``
    outcomes: tuple[str, ...] = ()

    def queues(self, options: object) -> list[str]:
        """The queue names this worker's options name, read first, then written."""
        return _names(options, (*self.reads, *self.writes))

    def read_queues(self, options: object) -> list[str]:
        return _names(options, self.reads)

    def written_queues(self, options: object) -> list[str]:
        return _names(options, self.writes)


def _names(options: object, attrs: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    for attr in attrs:
        value = getattr(options, attr, "")
        for name in (value,) if isinstance(value, str) else value:
            if name and name not in names:
                names.append(name)
    return names


_registry: dict[str, Component] = {}


def register(component: Component) -> Component:
    """Make a worker type known (the built-ins register themselves; a test may add one)."""
    _registry[component.type] = component
    return component


def unregister(type_name: str) -> None:
    _registry.pop(type_name, None)


def components() -> dict[str, Component]:
    """Every known worker type, by its ``type`` value (imports the built-in modules once)."""
    if not _loaded:
        for module in BUILTIN:
            register(importlib.import_module(module).COMPONENT)
        _loaded.append(True)
    return _registry


def get(type_name: str) -> Component:
    return components()[type_name]


def original_commands() -> dict[str, str]:
    """Script name of the original system -> the type that replaces it."""
    return {c.original_command: t for t, c in components().items() if c.original_command}


_loaded: list[bool] = []


def resolve_paths(values: dict[str, Any], section: Section, *names: str) -> None:
    """Make the named path keys (a string or a tuple of strings) absolute, relative to the
    config file."""
    for name in names:
        value = values[name]
        if isinstance(value, str):
            values[name] = section.resolve(value) if value else value
        else:
            values[name] = tuple(section.resolve(v) for v in value)

