"""``loglines.cfg`` read once into frozen objects.

Sections by role prefix, as in the original system: ``[supervisor]``, ``[redis]`` (and
``[redis_X]``), ``[process_*]`` (plain programs), ``[logger_*]`` and ``[worker_*]`` (workers;
``type =`` says which built-in runs, or an original ``command = ./script.py`` implies it), and
an optional ``[loglines]`` for paths. Anything wrong stops start-up with a :class:`ConfigError`
naming file, section, key, value and what was expected.
"""

from __future__ import annotations

import configparser
import difflib
import os
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import datatypes as dt
from pipeline.config.options import (
    ALIASES,
    ORIGINAL_COMMANDS,
    PLUGIN_OPTIONS,
    SINGLE_PROCESS,
    WORKER_TYPES,
    schema,
)
from pipeline.errors import ConfigError

DEFAULT_PATH = "loglines.cfg"
UNIX_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin

PROGRAM_KEYS = {
    "command": dt.nonempty,
    "numprocs": dt.integer(1, 64),
    "user": dt.nonempty,
    "stdout_logfile": dt.nonempty,
    "stderr_logfile": dt.nonempty,
    "autostart": dt.boolean,
    "autorestart": dt.choice("true", "false", "unexpected"),
    "startsecs": dt.integer(0, 3600),
    "startretries": dt.integer(0, 1000),
    "enabled": dt.boolean,
    "stopwaitsecs": dt.integer(1, 3600),
    "priority": dt.integer(0, 999),
    "directory": dt.nonempty,
    "environment": dt.nonempty,
    "redis": dt.name,
}

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


@dataclass(frozen=True)
class SupervisorConfig:
    host: str = "127.0.0.1"
    port: int = 9001
    username: str = "admin"
    password: str = ""
    password_file: Path | None = None

    def resolved_password(self) -> str:
        """The console password: from ``password``, else from ``password_file`` if it exists."""
        if self.password:
            return self.password
        if self.password_file is not None and self.password_file.exists():
            return self.password_file.read_text().strip()
        return ""


@dataclass(frozen=True)
class RedisConfig:
    name: str = "redis"
    embedded: bool = True
    url: str = ""
    unix_socket: Path | None = None
    port: int = 0
    db: int = 0
    password: str = ""
    prefix: str = "loglines"
    socket_timeout: float = 5.0
    block_timeout: float = 1.0
    heartbeat_ttl: int = 30
    max_recoveries: int = 3
    max_payload_bytes: int = 64 * 1024 * 1024
    server: str = ""
    appendfsync: str = "everysec"
    maxmemory: str = ""

    def connection_url(self) -> str:
        if self.url:
            return self.url
        if self.embedded and self.unix_socket is not None:
            return f"unix://{self.unix_socket}?db={self.db}"
        return f"redis://127.0.0.1:{self.port}/{self.db}"


@dataclass(frozen=True)
class ProgramConfig:
    """A supervisord program: a built-in worker (``type`` set) or a plain ``command``."""

    name: str
    type: str  # "" for a plain program
    command: str = ""
    numprocs: int = 1
    user: str = ""
    stdout_logfile: str = ""
    stderr_logfile: str = ""
    autostart: bool = True
    autorestart: str = "true"
    startsecs: int = 1
    startretries: int = 10
    enabled: bool = True
    stopwaitsecs: int = 30
    priority: int = 100
    directory: str = ""
    environment: str = ""
    redis: str = "redis"
    options: Any = None


@dataclass(frozen=True)
class Config:
    path: Path
    base_dir: Path
    var_dir: Path
    plugin_dirs: tuple[Path, ...]
    log_level: str
    supervisor: SupervisorConfig
    redis: dict[str, RedisConfig]
    programs: dict[str, ProgramConfig] = field(default_factory=dict)
    #: (section, message): what the file says that loglines accepts but does not use (keys of the
    #: original system), printed by ``check`` and ``up`` and logged by the section's worker.
    warnings: tuple[tuple[str, str], ...] = ()
    #: The file as read at load: what original plugins receive as ``c`` (never read again).
    parser: configparser.ConfigParser = field(default_factory=lambda: _new_parser(), compare=False,
                                              repr=False)

    def worker(self, name: str) -> ProgramConfig:
        program = self.programs.get(name)
        if program is None or not program.type:
            known = ", ".join(n for n, p in self.programs.items() if p.type) or "none"
            raise ConfigError(f"no worker named {name!r} (workers: {known})", file=str(self.path))
        return program

    def redis_for(self, program: ProgramConfig) -> RedisConfig:
        return self.redis[program.redis]

    def servers(self) -> list[RedisConfig]:
        """Every Redis server the pipeline uses: ``[redis]`` and each ``[redis_X]`` a program
        names, in file order."""
        used = {"redis"} | {p.redis for p in self.programs.values() if p.type}
        return [rc for name, rc in self.redis.items() if name in used]

    def plugin_options(self, section: str) -> dict[str, str]:
        """A section's ``opt_<name>`` keys, as ``{name: value}``, for its plugin."""
        return {k[4:]: v for k, v in self.parser.items(section) if k.startswith("opt_")}

    def raw_parser(self) -> configparser.ConfigParser:
        """The file as a ``ConfigParser``, read once at load: what original plugins receive as
        ``c``."""
        return self.parser


def _new_parser() -> configparser.ConfigParser:
    # inline "; comments" as supervisord reads them (a ';' after whitespace starts a comment)
    parser = configparser.ConfigParser(interpolation=None, strict=True, inline_comment_prefixes=(";",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    return parser


class _Section:
    """Reads typed values from one section, naming file/section/key/value on error."""

    def __init__(self, path: Path, parser: configparser.ConfigParser, name: str,
                 warnings: list[tuple[str, str]] | None = None) -> None:
        self.path, self.name = path, name
        self.items = dict(parser.items(name)) if parser.has_section(name) else {}
        self.used: set[str] = set()
        self.warnings: list[tuple[str, str]] = warnings if warnings is not None else []

    def obsolete(self, keys: dict[str, str]) -> None:
        """Drop keys of the original system that mean nothing now, with one warning each."""
        for key in [k for k in self.items if k in keys]:
            del self.items[key]
            self.warnings.append((self.name, f"file {str(self.path)!r}, section [{self.name}], "
                                             f"key {key!r}: {keys[key]}"))

    def error(self, message: str, key: str | None = None, value: str | None = None) -> ConfigError:
        return ConfigError(message, file=str(self.path), section=self.name, key=key, value=value)

    def get(self, key: str, convert: Any, default: Any = MISSING) -> Any:
        self.used.add(key)
        if key not in self.items:
            if default is MISSING:
                raise self.error("required key is missing", key=key)
            return default
        raw = self.items[key]
        try:
            return convert(raw)
        except ValueError as exc:
            raise self.error(str(exc), key=key, value=raw) from None

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
    parser = _new_parser()
    try:
        with open(cfg_path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise ConfigError("file not found (create one with 'loglines init')", file=str(cfg_path)) from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"not a valid INI file: {exc}", file=str(cfg_path)) from None

    base = cfg_path.parent
    warnings: list[tuple[str, str]] = []
    top = _Section(cfg_path, parser, "loglines", warnings)
    top.reject_unknown({"var", "plugins", "log_level"})
    var_dir = _resolve(base, top.get("var", dt.nonempty, "var"))
    plugin_dirs = tuple(_resolve(base, p) for p in top.get("plugins", dt.string_list, ("plugins",)))
    log_level = top.get("log_level", dt.choice("debug", "info", "warning", "error"), "info")

    supervisor = _supervisor(_Section(cfg_path, parser, "supervisor", warnings), base)
    redis = {
        name: _redis(_Section(cfg_path, parser, name, warnings), var_dir)
        for name in ["redis"] + [s for s in parser.sections() if s.startswith("redis_")]
    }
    programs: dict[str, ProgramConfig] = {}
    for name in parser.sections():
        if name.startswith(("process_", "logger_", "worker_")):
            programs[name] = _program(_Section(cfg_path, parser, name, warnings), base, redis)
        elif name in OBSOLETE_SECTIONS:
            warnings.append((name, f"file {str(cfg_path)!r}, section [{name}]: {OBSOLETE_SECTIONS[name]}"))
        elif name not in ("loglines", "supervisor", "redis") and not name.startswith("redis_"):
            raise ConfigError(
                "unknown section (expected [supervisor], [redis], [redis_*], [process_*], "
                "[logger_*], [worker_*] or [loglines])",
                file=str(cfg_path),
                section=name,
            )
    return Config(cfg_path, base, var_dir, plugin_dirs, log_level, supervisor, redis, programs,
                  tuple(warnings), parser)


def _resolve(base: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def _supervisor(sec: _Section, base: Path) -> SupervisorConfig:
    sec.reject_unknown({"host", "port", "username", "password", "password_file"})
    password_file = sec.get("password_file", dt.nonempty, "")
    # 'port' takes supervisord's forms: PORT, HOST:PORT or :PORT (the original loglines.cfg had
    # 127.0.0.1:9001); the console stays on loopback unless 'host' opens it on purpose
    port_host, port = sec.get("port", dt.host_port, ("", 9001))
    host = sec.get("host", dt.nonempty, "")
    if port_host and host and port_host != host:
        raise sec.error(f"names host {port_host!r} but 'host' says {host!r}: give the host once",
                        "port", sec.items["port"])
    if port_host and not host and not dt.is_loopback(port_host):
        raise sec.error("the web console listens on this machine only unless you open it on "
                        f"purpose: set 'host = {port_host}' to listen there", "port", sec.items["port"])
    return SupervisorConfig(
        host=host or port_host or "127.0.0.1",
        port=port,
        username=sec.get("username", dt.nonempty, "admin"),
        password=sec.get("password", str, ""),
        password_file=_resolve(base, password_file) if password_file else None,
    )


REDIS_KEYS = {"url", "host", "port", "db", "password", "embedded", "prefix", "socket_timeout",
              "block_timeout", "heartbeat_ttl", "max_recoveries", "max_payload_bytes", "server",
              "appendfsync", "maxmemory"}


def _redis(sec: _Section, var_dir: Path) -> RedisConfig:
    sec.reject_unknown(REDIS_KEYS)
    url = sec.get("url", dt.nonempty, "")
    host = sec.get("host", dt.nonempty, "")
    port = sec.get("port", dt.port, 0)
    db = sec.get("db", dt.integer(0, 15), 0)
    password = sec.get("password", str, "")
    embedded = sec.get("embedded", dt.boolean, not url and not host)
    if url and not url.startswith(("redis://", "rediss://", "unix://", "redis+sentinel://")):
        raise sec.error(
            "expected a redis://, rediss://, unix:// or redis+sentinel:// URL", "url", url
        )
    if embedded and (url or host):
        raise sec.error("an embedded Redis takes no url or host", "embedded", "yes")
    unix_socket = None
    if not embedded and not url:
        if not host:
            raise sec.error("required: url, host, or embedded = yes", "url")
        url = f"redis://{host}:{port or 6379}/{db}"
    if embedded and not port:
        unix_socket = var_dir / "redis.sock"
        if len(str(unix_socket)) > UNIX_SOCKET_MAX:
            raise sec.error(
                f"the embedded Redis socket path {str(unix_socket)!r} is too long for a unix "
                "socket; set 'port' to use 127.0.0.1 instead, or a shorter [loglines] var",
                "embedded",
                "yes",
            )
    socket_timeout = sec.get("socket_timeout", dt.number(0.5), 5.0)
    block_timeout = sec.get("block_timeout", dt.number(0.05), 1.0)
    if block_timeout >= socket_timeout:
        raise sec.error(
            f"must be below socket_timeout ({socket_timeout}) or a blocking pop looks like a "
            "stalled server",
            "block_timeout",
            str(block_timeout),
        )
    result = RedisConfig(
        name=sec.name,
        embedded=embedded,
        url=url,
        unix_socket=unix_socket,
        port=port,
        db=db,
        password=password,
        prefix=sec.get("prefix", dt.name, "loglines"),
        socket_timeout=socket_timeout,
        block_timeout=block_timeout,
        heartbeat_ttl=sec.get("heartbeat_ttl", dt.integer(3, 3600), 30),
        max_recoveries=sec.get("max_recoveries", dt.integer(1, 100), 3),
        max_payload_bytes=sec.get("max_payload_bytes", dt.byte_size, 64 * 1024 * 1024),
        server=sec.get("server", dt.nonempty, ""),
        appendfsync=sec.get("appendfsync", dt.choice("always", "everysec", "no"), "everysec"),
        maxmemory=sec.get("maxmemory", dt.nonempty, ""),
    )
    return result


def _program(sec: _Section, base: Path, redis: dict[str, RedisConfig]) -> ProgramConfig:
    sec.obsolete(OBSOLETE_PROGRAM_KEYS)
    kind = sec.get("type", dt.nonempty, "").lower()
    command = sec.get("command", dt.nonempty, "")
    if not kind and command:
        script = os.path.basename(command.split()[0])
        kind = ORIGINAL_COMMANDS.get(script, "")
        if kind:
            command = ""  # the original script is replaced by the built-in worker
    if sec.name.startswith("process_") and kind:
        raise sec.error("a [process_*] section is a plain program and takes no type", "type", kind)
    if not kind and not command:
        raise sec.error(
            "a worker needs 'type' (" + " | ".join(WORKER_TYPES) + ") or a 'command'", "type"
        )
    options_type = WORKER_TYPES.get(kind) if kind else None
    if kind and options_type is None:
        near = difflib.get_close_matches(kind, list(WORKER_TYPES), n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise sec.error(f"unknown worker type ({hint}expected one of: " + ", ".join(WORKER_TYPES) + ")",
                        "type", kind)
    allowed = set(PROGRAM_KEYS) | {"type"}
    if options_type is not None:
        for alias, target in ALIASES.items():
            if alias in sec.items and target not in sec.items:
                sec.items[target] = sec.items.pop(alias)
        allowed |= set(schema(options_type)) | set(ALIASES)
        sec.reject_unknown(allowed, prefix="opt_" if kind in PLUGIN_OPTIONS else "")
    elif sec.name.startswith("process_"):
        sec.reject_unknown(allowed)
    # else: a [worker_*] or [logger_*] running a script of its own, which reads its own keys
    # from loglines.cfg as the original scripts did: they are the script's, not ours to refuse

    common: dict[str, Any] = {}
    for name, convert in PROGRAM_KEYS.items():
        if name in sec.items and name != "command":
            common[name] = sec.get(name, convert)
    if common.get("redis", "redis") not in redis:
        raise sec.error(f"no section [{common['redis']}]", "redis", common["redis"])
    for name in ("stdout_logfile", "stderr_logfile", "directory"):
        if name in common:
            common[name] = str(_resolve(base, common[name]))

    options = None
    if options_type is not None:
        values = {}
        for name, fld in schema(options_type).items():
            values[name] = sec.get(name, fld.metadata["convert"], fld.default)
        values = _type_defaults(kind, sec, base, values)
        options = options_type(**values)
        if kind in SINGLE_PROCESS and common.get("numprocs", 1) != 1:
            raise sec.error(
                f"a {kind} keeps per-process state and runs as one process", "numprocs",
                str(common["numprocs"]),
            )
    return ProgramConfig(name=sec.name, type=kind, command=command, options=options, **common)


def _type_defaults(kind: str, sec: _Section, base: Path, values: dict[str, Any]) -> dict[str, Any]:
    if kind == "watcher":
        values["servicename"] = values["servicename"] or sec.name.split("_", 1)[-1]
        values["logfile"] = tuple(str(_resolve(base, p)) for p in values["logfile"])
        values["allowed_roots"] = tuple(str(_resolve(base, p)) for p in values["allowed_roots"])
        if not values["logfile"]:
            raise sec.error("expected at least one file or glob", "logfile", "")
    elif kind == "filelogger":
        values["logfile"] = str(_resolve(base, values["logfile"]))
    elif kind == "parser":
        for rule in values["accept"]:
            if "=" not in rule:
                raise sec.error("expected field=value or field=value1|value2", "accept", rule)
    return values
