"""``loglines.cfg`` read once into frozen objects.

Sections by role prefix, as in the original system: ``[supervisor]``, ``[redis]`` (and
``[redis_X]``), ``[process_*]`` (plain programs), ``[logger_*]`` and ``[worker_*]`` (workers;
``type =`` says which built-in runs, or an original ``command = ./script.py`` implies it), and
an optional ``[loglines]`` for paths. Each section is read by the schema of its class (see
:mod:`pipeline.config.options`); a worker type's class comes from the registry of components.
Anything wrong stops start-up with a :class:`ConfigError` naming file, section, key, value and
what was expected: an unknown key first (with the nearest known one), then a missing one.
"""

from __future__ import annotations

import configparser
import difflib
import os
from collections.abc import Iterable
from dataclasses import MISSING
from pathlib import Path
from typing import Any

from pipeline import registry
from pipeline.config import datatypes as dt
from pipeline.config.model import (
    Config,
    PathsConfig,
    ProgramConfig,
    RedisConfig,
    SupervisorConfig,
    new_parser,
)
from pipeline.config.options import schema
from pipeline.errors import ConfigError

DEFAULT_PATH = "loglines.cfg"
UNIX_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin

#: Keys the original system's scripts read that mean nothing here any more: accepted with one
#: warning at start-up saying what replaces them.
OBSOLETE_PROGRAM_KEYS = {
    "idletime": "consumers block on their queue instead of polling it: not needed any more",
    "fanout_status_queue": "the broker copies a batch to every fanout queue in one transaction: "
                           "not needed any more",
    "process_name": "loglines names the processes itself (worker ids depend on it): ignored",
    "redirect_stderr": "stderr goes to stdout_logfile unless stderr_logfile is set: ignored",
}
OBSOLETE_SECTIONS = {
    "queues": "queue keys are {<[redis] prefix>}:q:<name>; the section is not needed any more",
}


class _Section:
    """Reads typed values from one section, naming file/section/key/value on error."""

    def __init__(self, path: Path, parser: configparser.ConfigParser, name: str,
                 warnings: list[tuple[str, str]]) -> None:
        self.path, self.name = path, name
        self.items: dict[str, str] = dict(parser.items(name)) if parser.has_section(name) else {}
        self.warnings = warnings

    def obsolete(self, keys: dict[str, str]) -> None:
        """Drop keys of the original system that mean nothing now, with one warning each."""
        for key in [k for k in self.items if k in keys]:
            del self.items[key]
            self.warnings.append((self.name, f"file {str(self.path)!r}, section [{self.name}], "
                                             f"key {key!r}: {keys[key]}"))

    def error(self, message: str, key: str | None = None, value: str | None = None) -> ConfigError:
        return ConfigError(message, file=str(self.path), section=self.name, key=key, value=value)

    def resolve(self, value: str) -> str:
        return str(_resolve(self.path.parent, value))

    def subset(self, keys: Iterable[str]) -> _Section:
        """This section with only ``keys`` (to read a worker's options and its program keys
        apart)."""
        part = _Section(self.path, new_parser(), self.name, self.warnings)
        part.items = {k: self.items[k] for k in keys}
        return part

    def read(self, cls: type[Any], prefix: str = "", **fixed: Any) -> dict[str, Any]:
        """The converted values of ``cls``'s keys found here (defaults for the others), plus
        ``fixed``; an unknown key, then a missing required one, is an error."""
        keys = schema(cls)
        self.reject_unknown(set(keys), prefix)
        values: dict[str, Any] = {}
        for name, fld in keys.items():
            if name in fixed:
                continue
            if name not in self.items:
                if fld.default is MISSING:
                    raise self.error("required key is missing", key=name)
                values[name] = fld.default
                continue
            raw = self.items[name]
            try:
                values[name] = fld.metadata["convert"](raw)
            except ValueError as exc:
                raise self.error(str(exc), key=name, value=raw) from None
        return values | fixed

    def reject_unknown(self, allowed: set[str], prefix: str = "") -> None:
        for key in self.items:
            if key not in allowed and not (prefix and key.startswith(prefix)):
                near = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
                hint = f"did you mean {near[0]!r}? " if near else ""
                raise self.error(
                    f"unknown key ({hint}allowed: " + ", ".join(sorted(allowed)) + ")", key=key
                )


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate ``loglines.cfg``; raise :class:`ConfigError` on any problem."""
    cfg_path = Path(path or os.environ.get("LOGLINES_CONFIG") or DEFAULT_PATH).absolute()
    parser = new_parser()
    try:
        with open(cfg_path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise ConfigError("file not found (create one with 'loglines init')", file=str(cfg_path)) from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"not a valid INI file: {exc}", file=str(cfg_path)) from None

    base = cfg_path.parent
    warnings: list[tuple[str, str]] = []

    def section(name: str) -> _Section:
        return _Section(cfg_path, parser, name, warnings)

    paths = PathsConfig(**section("loglines").read(PathsConfig))
    var_dir = _resolve(base, paths.var)
    supervisor = _supervisor(section("supervisor"), base)
    redis = {
        name: _redis(section(name), var_dir)
        for name in ["redis"] + [s for s in parser.sections() if s.startswith("redis_")]
    }
    programs: dict[str, ProgramConfig[Any]] = {}
    for name in parser.sections():
        if name.startswith(("process_", "logger_", "worker_")):
            programs[name] = _program(section(name), base, redis)
        elif name in OBSOLETE_SECTIONS:
            warnings.append((name, f"file {str(cfg_path)!r}, section [{name}]: {OBSOLETE_SECTIONS[name]}"))
        elif name not in ("loglines", "supervisor", "redis") and not name.startswith("redis_"):
            raise ConfigError(
                "unknown section (expected [supervisor], [redis], [redis_*], [process_*], "
                "[logger_*], [worker_*] or [loglines])",
                file=str(cfg_path),
                section=name,
            )
    _check_exclusive(cfg_path, programs)
    return Config(cfg_path, base, var_dir, tuple(_resolve(base, p) for p in paths.plugins),
                  paths.log_level, supervisor, redis, programs, tuple(warnings), parser,
                  watchdog_s=paths.watchdog_s, external_queues=paths.external_queues)


def _check_exclusive(path: Path, programs: dict[str, ProgramConfig[Any]]) -> None:
    """What only one worker may use (a file logger's output file): two sections naming it would
    cut each other's acknowledged lines."""
    owners: dict[tuple[str, str, str], str] = {}
    for name, program in programs.items():
        if not program.type:
            continue
        for key in registry.get(program.type).exclusive:
            value = os.path.realpath(str(getattr(program.options, key)))
            other = owners.setdefault((program.type, key, value), name)
            if other != name:
                raise ConfigError(f"[{other}] already writes {value}: two {program.type}s on one "
                                  "file cut each other's lines", file=str(path), section=name,
                                  key=key, value=str(getattr(program.options, key)))


def _resolve(base: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def _supervisor(sec: _Section, base: Path) -> SupervisorConfig:
    values = sec.read(SupervisorConfig)
    if values["password_file"] is not None:
        values["password_file"] = _resolve(base, str(values["password_file"]))
    # 'port' takes supervisord's forms: PORT, HOST:PORT or :PORT (the original loglines.cfg had
    # 127.0.0.1:9001); the console stays on loopback unless 'host' opens it on purpose
    port_host = dt.host_port(sec.items["port"])[0] if "port" in sec.items else ""
    host = sec.items.get("host", "").strip()
    if port_host and host and port_host != host:
        raise sec.error(f"names host {port_host!r} but 'host' says {host!r}: give the host once",
                        "port", sec.items["port"])
    if port_host and not host:
        if not dt.is_loopback(port_host):
            raise sec.error("the web console listens on this machine only unless you open it on "
                            f"purpose: set 'host = {port_host}' to listen there", "port",
                            sec.items["port"])
        values["host"] = port_host
    return SupervisorConfig(**values)


def _redis(sec: _Section, var_dir: Path) -> RedisConfig:
    values = sec.read(RedisConfig, name=sec.name)
    url, host, port, db = values["url"], values["host"], values["port"], values["db"]
    if "embedded" not in sec.items:
        values["embedded"] = not url and not host
    embedded = values["embedded"]
    if embedded and (url or host):
        raise sec.error("an embedded Redis takes no url or host", "embedded", "yes")
    if not embedded and not url:
        if not host:
            raise sec.error("required: url, host, or embedded = yes", "url")
        values["url"] = f"redis://{host}:{port or 6379}/{db}"
    if embedded and port:  # loopback is open to every local user: a password it must have
        values["secret_file"] = var_dir / f"{sec.name}.secret"
    if embedded and not port:
        values["unix_socket"] = socket = var_dir / "redis.sock"
        if len(str(socket)) > UNIX_SOCKET_MAX:
            raise sec.error(
                f"the embedded Redis socket path {str(socket)!r} is too long for a unix "
                "socket; set 'port' to use 127.0.0.1 instead, or a shorter [loglines] var",
                "embedded",
                "yes",
            )
    if values["message_bytes"] * 2 > values["max_payload_bytes"]:
        raise sec.error(f"must be at most half of max_payload_bytes ({values['max_payload_bytes']}): "
                        "a message a worker pushes must always be one its consumers take",
                        "message_bytes", sec.items.get("message_bytes", str(values["message_bytes"])))
    if values["min_replicas"] and values["min_replicas_timeout_ms"] / 1000 >= values["socket_timeout"]:
        raise sec.error(f"must be below socket_timeout ({values['socket_timeout']} s): WAIT blocks",
                        "min_replicas_timeout_ms", str(values["min_replicas_timeout_ms"]))
    if values["block_timeout"] >= values["socket_timeout"]:
        raise sec.error(
            f"must be below socket_timeout ({values['socket_timeout']}) or a blocking pop looks "
            "like a stalled server",
            "block_timeout",
            str(values["block_timeout"]),
        )
    return RedisConfig(**values)


def _program(sec: _Section, base: Path, redis: dict[str, RedisConfig]) -> ProgramConfig[Any]:
    sec.obsolete(OBSOLETE_PROGRAM_KEYS)
    components = registry.components()
    kind = sec.items.get("type", "").strip().lower()
    command = sec.items.get("command", "").strip()
    if not kind and command:
        kind = registry.original_commands().get(os.path.basename(command.split()[0]), "")
        if kind:
            command = ""  # the original script is replaced by the built-in worker
    if sec.name.startswith("process_") and kind:
        raise sec.error("a [process_*] section is a plain program and takes no type", "type", kind)
    if not kind and not command:
        raise sec.error("a worker needs 'type' (" + " | ".join(components) + ") or a 'command'", "type")
    component = components.get(kind) if kind else None
    if kind and component is None:
        near = difflib.get_close_matches(kind, list(components), n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise sec.error(f"unknown worker type ({hint}expected one of: " + ", ".join(components) + ")",
                        "type", kind)

    program_keys = set(schema(ProgramConfig)) | {"type"}
    prefix = "opt_" if component is not None and component.plugin_options else ""
    if component is not None:
        for alias, target in component.aliases.items():
            if alias in sec.items and target not in sec.items:
                sec.items[target] = sec.items.pop(alias)
        sec.reject_unknown(program_keys | set(schema(component.options)), prefix)
    elif sec.name.startswith("process_"):
        sec.reject_unknown(program_keys)
    # else: a [worker_*] or [logger_*] running a script of its own, which reads its own keys from
    # loglines.cfg as the original scripts did: they are the script's, not ours to refuse
    options = None
    if component is not None:
        values = sec.subset(k for k in sec.items if k not in program_keys).read(component.options, prefix)
        if component.prepare is not None:
            values = component.prepare(values, sec)
        options = component.options(**values)
    own = sec.subset(k for k in sec.items if k in program_keys and k != "type")
    values = own.read(ProgramConfig, name=sec.name, type=kind, options=options)
    values["command"] = command
    if values["redis"] not in redis:
        raise sec.error(f"no section [{values['redis']}]", "redis", values["redis"])
    for name in ("stdout_logfile", "stderr_logfile", "directory"):
        if values[name]:
            values[name] = str(_resolve(base, values[name]))
    if component is not None and component.single_process and values["numprocs"] != 1:
        raise sec.error(f"a {kind} keeps per-process state and runs as one process", "numprocs",
                        str(values["numprocs"]))
    if component is not None:
        rcfg = redis[values["redis"]]
        _check_blocking(sec, component, options, rcfg, values["stopwaitsecs"])
        if component.validate is not None:
            component.validate(options, rcfg, sec)
    return ProgramConfig(**values)


#: Seconds a worker needs after its longest blocking call to hand back its batch and leave.
STOP_MARGIN = 5.0


def _check_blocking(sec: _Section, component: registry.Component, options: Any, rcfg: RedisConfig,
                    stopwaitsecs: int) -> None:
    """Every call a worker may be blocked in must end well within ``stopwaitsecs``: otherwise
    supervisord kills it mid-call, and a healthy batch counts a recovery towards poison."""
    limits = {name: float(getattr(options, name)) for name in component.blocking}
    limits[f"socket_timeout of [{rcfg.name}]"] = rcfg.socket_timeout
    for name, seconds in limits.items():
        if seconds + STOP_MARGIN > stopwaitsecs:
            key = name if name in component.blocking else "stopwaitsecs"
            raise sec.error(f"{name} ({seconds:g} s) must end at least {STOP_MARGIN:g} s within "
                            f"stopwaitsecs ({stopwaitsecs} s), or supervisord kills the worker in "
                            "the middle of it: lower it or raise stopwaitsecs", key,
                            sec.items.get(key, str(seconds if key == name else stopwaitsecs)))

