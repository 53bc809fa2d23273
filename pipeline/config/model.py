"""The frozen objects ``loglines.cfg`` is read into.

The keys of ``[loglines]``, ``[supervisor]``, ``[redis]`` and the program keys are fields
declared with :func:`~pipeline.config.options.key`; the other fields are what the loader
works out from them (a Redis URL from ``host``/``port``, the embedded server's socket, …).
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pipeline.config import datatypes as dt
from pipeline.config.options import key
from pipeline.errors import ConfigError

O = TypeVar("O")  # noqa: E741 - a worker type's options


def new_parser() -> configparser.ConfigParser:
    # inline "; comments" as supervisord reads them (a ';' after whitespace starts a comment)
    parser = configparser.ConfigParser(interpolation=None, strict=True, inline_comment_prefixes=(";",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    return parser


@dataclass(frozen=True)
class PathsConfig:
    """``[loglines]``."""

    var: str = key(dt.nonempty, "folder for state, sockets and logs", "var")
    plugins: tuple[str, ...] = key(dt.string_list, "folders searched for plugins", ("plugins",))
    log_level: str = key(dt.choice("debug", "info", "warning", "error"), "log level of the workers", "info")
    watchdog_s: int = key(dt.integer(10, 86400), "a worker whose loop has not turned this long says "
                                                 "so (and its heartbeat shows it)", 120)
    external_queues: tuple[str, ...] = key(dt.name_list, "queues programs of your own push to or "
                                                         "read from (check does not miss the other end)", ())


@dataclass(frozen=True)
class SupervisorConfig:
    """``[supervisor]``: the supervisord web console."""

    host: str = key(dt.nonempty, "address the console listens on", "127.0.0.1")
    port: int = key(dt.console_port, "console port (also supervisord's HOST:PORT and :PORT)", 9001)
    username: str = key(dt.nonempty, "console user", "admin")
    password: str = key(str, "console password", "")
    password_file: Path | None = key(Path, "file holding the console password", None)

    def resolved_password(self) -> str:
        """The console password: from ``password``, else from ``password_file`` if it exists."""
        if self.password:
            return self.password
        if self.password_file is not None and self.password_file.exists():
            return self.password_file.read_text().strip()
        return ""


@dataclass(frozen=True)
class RedisConfig:
    """``[redis]`` or ``[redis_X]``: one Redis server and how workers use it."""

    url: str = key(dt.redis_url, "redis://, rediss://, unix:// or redis+sentinel:// URL", "")
    host: str = key(dt.nonempty, "host of an existing server (the original form)", "")
    port: int = key(dt.port, "its port; for the embedded server, a TCP port instead of a socket", 0)
    db: int = key(dt.integer(0, 15), "database number", 0)
    password: str = key(str, "password of the server", "")
    embedded: bool = key(dt.boolean, "run a private redis-server under supervisord (default "
                                     "when neither url nor host is set)", True)
    prefix: str = key(dt.name, "hash tag of every key: pipelines with different prefixes share "
                               "nothing", "loglines")
    socket_timeout: float = key(dt.number(0.5), "seconds before a silent server counts as stalled", 5.0)
    block_timeout: float = key(dt.number(0.05), "seconds a blocking pop waits (below socket_timeout)", 1.0)
    heartbeat_ttl: int = key(dt.integer(3, 3600), "seconds without a heartbeat before a worker's "
                                                   "batch is reaped", 30)
    max_recoveries: int = key(dt.integer(1, 100), "recoveries from dying workers before a batch "
                                                  "is dead-lettered", 3)
    max_payload_bytes: int = key(dt.byte_size, "largest message a consumer decodes", 16 * 1024 * 1024)
    message_bytes: int = key(dt.byte_size, "messages a worker pushes are split at about this size",
                             1024 * 1024)
    server: str = key(dt.nonempty, "redis-server binary for the embedded server", "")
    appendfsync: str = key(dt.choice("always", "everysec", "no"), "the embedded server's "
                                                                   "appendfsync", "everysec")
    maxmemory: str = key(dt.nonempty, "the embedded server's maxmemory (noeviction)", "")
    min_replicas: int = key(dt.integer(0, 16), "replicas that must have a commit before it counts "
                                               "as done (WAIT); 0: the master's word", 0)
    min_replicas_timeout_ms: int = key(dt.integer(10, 60_000), "how long a commit waits for them", 1000)
    # worked out by the loader
    name: str = "redis"
    unix_socket: Path | None = None
    #: the embedded server on a TCP port gets a generated password, kept in this 0600 file
    secret_file: Path | None = None

    def resolved_password(self) -> str:
        """``password``, else the embedded server's generated one (once it exists)."""
        if self.password:
            return self.password
        if self.secret_file is not None and self.secret_file.exists():
            return self.secret_file.read_text().strip()
        return ""

    def connection_url(self) -> str:
        if self.url:
            return self.url
        if self.embedded and self.unix_socket is not None:
            return f"unix://{self.unix_socket}?db={self.db}"
        return f"redis://127.0.0.1:{self.port}/{self.db}"


@dataclass(frozen=True)
class ProgramConfig(Generic[O]):
    """A supervisord program: a built-in worker (``type`` set) or a plain ``command``; the keys
    every program section may set."""

    command: str = key(dt.nonempty, "the program to run (a plain program, or an original script)", "")
    numprocs: int = key(dt.integer(1, 64), "processes of this program", 1)
    user: str = key(dt.nonempty, "run as this user", "")
    stdout_logfile: str = key(dt.nonempty, "where its output goes", "")
    stderr_logfile: str = key(dt.nonempty, "where its errors go (default: with the output)", "")
    autostart: bool = key(dt.boolean, "start with supervisord", True)
    autorestart: str = key(dt.choice("true", "false", "unexpected"), "restart when it exits", "true")
    startsecs: int = key(dt.integer(0, 3600), "seconds up before it counts as started", 1)
    startretries: int = key(dt.integer(0, 1000), "start attempts before FATAL", 10)
    enabled: bool = key(dt.boolean, "link it into workers_enabled/ when first generated", True)
    stopwaitsecs: int = key(dt.integer(1, 3600), "seconds to stop before SIGKILL", 30)
    priority: int = key(dt.integer(0, 999), "start order (lower first)", 100)
    directory: str = key(dt.nonempty, "working directory", "")
    environment: str = key(dt.nonempty, "KEY=value,... for the program", "")
    redis: str = key(dt.name, "the [redis_X] section this worker uses", "redis")
    shared_queue: bool = key(dt.boolean, "this worker shares the queue it reads with other sections' "
                                         "workers on purpose: each message reaches one of them", False)
    # worked out by the loader
    name: str = ""
    type: str = ""  # "" for a plain program
    options: O = None  # type: ignore[assignment]  # a plain program has none


@dataclass(frozen=True)
class Config:
    path: Path
    base_dir: Path
    var_dir: Path
    plugin_dirs: tuple[Path, ...]
    log_level: str
    supervisor: SupervisorConfig
    redis: dict[str, RedisConfig]
    programs: dict[str, ProgramConfig[Any]] = field(default_factory=dict)
    #: (section, message): what the file says that loglines accepts but does not use (keys of the
    #: original system), printed by ``check`` and ``up`` and logged by the section's worker.
    warnings: tuple[tuple[str, str], ...] = ()
    #: The file as read at load: what original plugins receive as ``c`` (never read again).
    parser: configparser.ConfigParser = field(default_factory=new_parser, compare=False, repr=False)
    watchdog_s: int = 120
    #: queues of programs of your own (``[loglines] external_queues``)
    external_queues: tuple[str, ...] = ()

    def worker(self, name: str) -> ProgramConfig[Any]:
        program = self.programs.get(name)
        if program is None or not program.type:
            known = ", ".join(n for n, p in self.programs.items() if p.type) or "none"
            raise ConfigError(f"no worker named {name!r} (workers: {known})", file=str(self.path))
        return program

    def workers(self, kind: str) -> dict[str, ProgramConfig[Any]]:
        """The workers of one type, by section name."""
        return {n: p for n, p in self.programs.items() if p.type == kind}

    def redis_for(self, program: ProgramConfig[Any]) -> RedisConfig:
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
