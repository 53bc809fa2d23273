"""The ``loglines`` command."""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import orjson
import redis
from elasticsearch import ApiError

from pipeline import config as config_mod
from pipeline.config import Config
from pipeline.core.keys import Keys
from pipeline.core.lifecycle import Flags
from pipeline.core.logsetup import safe
from pipeline.errors import ConfigError, LoglinesError, PluginError

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest and getattr(args, "index", None) is not None and all(r.isdigit() for r in rest):
        args.index = [*args.index, *map(int, rest)]  # entry numbers after an option: dlq replay --failed 3
    elif rest:
        parser.error("unrecognized arguments: " + " ".join(rest))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (LoglinesError, FileNotFoundError) as exc:
        print(f"loglines: error: {exc}", file=sys.stderr)
        return 1
    except redis.RedisError as exc:
        print(f"loglines: error: Redis: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"loglines: error: Elasticsearch: {exc.meta.status} {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _load(args: argparse.Namespace, warn: bool = False) -> Config:
    cfg = config_mod.load(args.config)
    if warn:
        for _, warning in cfg.warnings:
            print(f"loglines: warning: {warning}", file=sys.stderr)
    return cfg


def _client(cfg: Config, server: str = "redis") -> redis.Redis:
    from pipeline.core.connection import connect

    if server not in cfg.redis:
        raise ConfigError(f"no section [{server}] (Redis servers: {', '.join(cfg.redis)})",
                          file=str(cfg.path))
    return connect(cfg.redis[server])


def _queue_server(cfg: Config, queue: str) -> str:
    """The Redis server a queue lives on: the one of the workers that read it (or push to it)."""
    from pipeline.monitor.status import program_queues

    found = {p.redis for p in cfg.programs.values() if p.type and queue in program_queues(p)}
    if len(found) > 1:
        raise ConfigError(f"queue {queue!r} is on several Redis servers ({', '.join(sorted(found))}): "
                          "name one with --redis", file=str(cfg.path))
    return found.pop() if found else "redis"


# -- commands ------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.config or os.environ.get("LOGLINES_CONFIG") or config_mod.DEFAULT_PATH)
    if not path.exists():
        from pipeline.config.starter import starter_config

        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(starter_config(secrets.token_urlsafe(24)))
        print(f"wrote {path} (console password inside; file mode 0600)")
    else:
        print(f"{path} exists: left unchanged (remove it first for a new starter config)")
    cfg = config_mod.load(path)
    secret = cfg.supervisor.password_file
    if secret is not None and not secret.exists():
        secret.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
        print(f"wrote a new console password to {secret} (mode 0600)")
    return 0


def _load_plugins(cfg: Config) -> None:
    """Load every worker's plugin as the worker will: a broken one fails here, naming it."""
    from pipeline import registry

    for program in cfg.programs.values():
        loader = registry.get(program.type).plugin if program.type else None
        if loader is not None:
            try:
                loader(cfg, program)
            except PluginError as exc:
                raise PluginError(f"[{program.name}]: {exc}") from None


def cmd_check(args: argparse.Namespace) -> int:
    from pipeline import registry

    cfg = _load(args, warn=True)
    _load_plugins(cfg)
    notes = _check_servers(cfg)
    for program in cfg.programs.values():
        hook = registry.get(program.type).check if program.type else None
        notes += [f"warning: {line}" for line in hook(cfg, program)] if hook is not None else []
    if os.geteuid() == 0:
        notes += [f"warning: [{p.name}] runs as root (supervisord runs as root and the section sets "
                  "no 'user'): set user = an unprivileged account" for p in cfg.programs.values()
                  if not p.user]
    for line in notes:
        print(f"loglines: {line}", file=sys.stderr)
    errors, warnings = _check_graph(cfg)
    warnings += sum(1 for line in notes if line.startswith("warning:")) + len(cfg.warnings)
    if errors:
        print(f"{cfg.path}: {_count(errors, 'error')} above", file=sys.stderr)
        return 1
    workers = [p.name for p in cfg.programs.values() if p.type]
    print(f"{cfg.path}: OK ({len(workers)} workers: {', '.join(workers) or 'none'})"
          + (f"; {_count(warnings, 'warning')} above" if warnings else ""))
    return 0


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _refuse_graph_errors(cfg: Config, enabled: set[str] | None = None) -> None:
    errors, _ = _check_graph(cfg, enabled)
    if errors:
        raise ConfigError(f"{_count(errors, 'error')} in the pipeline's queues (above): nothing was "
                          "started or changed", file=str(cfg.path))


def _check_graph(cfg: Config, enabled: set[str] | None = None) -> tuple[int, int]:
    """Say what is wrong with the pipeline's queues, ``enabled`` (default: as linked now) being
    the sections supervisord runs; (errors, warnings)."""
    from pipeline.config import graph
    from pipeline.ops.supervisord import enabled_programs

    problems = graph.check(cfg, enabled_programs(cfg) if enabled is None else enabled)
    for problem in problems:
        print(f"loglines: {'error' if problem.error else 'warning'}: {problem.message}", file=sys.stderr)
    errors = sum(1 for p in problems if p.error)
    return errors, len(problems) - errors


def _check_servers(cfg: Config) -> list[str]:
    """What each Redis server of the pipeline would mean for the guarantees (warnings); an
    evicting or too old server is an error."""
    from dataclasses import replace

    from pipeline.core.connection import CONNECTION_ERRORS, UnfitServer, check_server, connect

    out = []
    for rc in cfg.servers():
        try:
            client = connect(replace(rc, socket_timeout=2.0, block_timeout=1.0))
            out += [f"warning: [{rc.name}]: {w}" for w in check_server(client)]
        except UnfitServer as exc:
            raise ConfigError(str(exc), file=str(cfg.path), section=rc.name) from None
        except CONNECTION_ERRORS as exc:
            if rc.embedded:
                out.append(f"[{rc.name}]: the embedded Redis is not running (loglines up starts it)")
            else:
                out.append(f"warning: [{rc.name}]: not reachable now ({exc}); its settings are "
                           "checked again when the workers start")
    return out


def cmd_supervisord_config(args: argparse.Namespace) -> int:
    from pipeline.ops.supervisord import generate

    result = generate(_load(args))
    for path in result.files:
        print(f"wrote {path}")
    for name in result.enabled:
        print(f"enabled {name}")
    return 0


def cmd_enable(args: argparse.Namespace, enabled: bool = True) -> int:
    from pipeline.ops.control import supervisord_pid, update
    from pipeline.ops.supervisord import enabled_programs, generate, set_enabled

    cfg = _load(args)
    running = supervisord_pid(cfg) is not None
    if running:
        _load_plugins(cfg)
        now = enabled_programs(cfg)
        _refuse_graph_errors(cfg, now | {args.name} if enabled else now - {args.name})
    if args.name in cfg.programs:
        generate(cfg)  # the program files as loglines.cfg says now (links are never touched)
    changed = set_enabled(cfg, args.name, enabled)
    print(f"{args.name}: {'enabled' if enabled else 'disabled'}{'' if changed else ' already'}")
    if not running:
        print("supervisord is not running: `loglines up` starts what is enabled")
        return 0
    for line in update(cfg, start=args.name if enabled else "").lines():
        print(line)
    return 0


def cmd_disable(args: argparse.Namespace) -> int:
    return cmd_enable(args, enabled=False)


def cmd_reload(args: argparse.Namespace) -> int:
    """Regenerate from loglines.cfg and apply it to the running supervisord."""
    from pipeline.ops.control import supervisord_pid

    cfg = _load(args, warn=True)
    _load_plugins(cfg)
    _refuse_graph_errors(cfg)
    pid = supervisord_pid(cfg)
    _apply(cfg, running=pid is not None)
    return 0


def _apply(cfg: Config, running: bool) -> None:
    """Generate the files and, when supervisord runs, have it take them (links made by hand
    included)."""
    from pipeline.ops.control import update
    from pipeline.ops.supervisord import generate

    for name in generate(cfg).enabled:
        print(f"enabled {name} (new)")
    if not running:
        print("supervisord is not running: `loglines up` starts it with this configuration")
        return
    for line in update(cfg).lines():
        print(line)


def _supervisor_bin(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


#: How long ``up`` waits for supervisord to answer after starting it.
UP_TIMEOUT = 30.0


def cmd_up(args: argparse.Namespace) -> int:
    from pipeline.core.lifecycle import install_signal_handlers
    from pipeline.ops.control import supervisord_pid
    from pipeline.ops.supervisord import generate, paths

    cfg = _load(args, warn=True)
    _load_plugins(cfg)
    _refuse_graph_errors(cfg)
    pid = supervisord_pid(cfg)
    if pid is not None:
        print(f"already running (pid {pid}); applying {cfg.path}")
        _apply(cfg, running=True)
        return 0
    _ports_free(cfg)
    generate(cfg)
    command = [_supervisor_bin("supervisord"), "-c", str(paths(cfg)["conf"])]
    if args.foreground:
        flags = Flags()
        install_signal_handlers(flags)  # Ctrl-C reaches supervisord too; SIGTERM is passed on
        proc = subprocess.Popen(command + ["-n"])
        if _wait_up(cfg, lambda: proc.poll() is not None, flags):
            _say_up(cfg, args.show_password)
        while proc.poll() is None:
            if flags.stop:
                proc.terminate()
                flags.stop = False
            time.sleep(0.2)
        return proc.returncode
    started = subprocess.run(command, check=False).returncode
    if started != 0:
        raise LoglinesError(f"supervisord did not start (exit status {started}); its log is "
                            f"{paths(cfg)['logdir'] / 'supervisord.log'}")
    if not _wait_up(cfg, lambda: False, None):
        raise LoglinesError(f"supervisord did not answer within {UP_TIMEOUT:g} s; its log is "
                            f"{paths(cfg)['logdir'] / 'supervisord.log'}")
    _say_up(cfg, args.show_password)
    return 0


def _wait_up(cfg: Config, exited: Callable[[], bool], flags: Flags | None) -> bool:
    """Wait until supervisord answers (False: it exited, a stop was asked, or time ran out)."""
    from pipeline.ops.control import is_running

    deadline = time.monotonic() + UP_TIMEOUT
    while time.monotonic() < deadline and not exited() and not (flags is not None and flags.stop):
        if is_running(cfg):
            return True
        time.sleep(0.1)
    return False


def _say_up(cfg: Config, show_password: bool) -> None:
    from pipeline.ops.control import supervisord_pid

    sup = cfg.supervisor
    print(f"supervisord is running (pid {supervisord_pid(cfg)}); `loglines status` shows the workers")
    print(f"web console: http://{sup.host}:{sup.port}/  user: {sup.username}  "
          f"password: {_where_password(cfg) if not show_password else sup.resolved_password()}",
          flush=True)


def _ports_free(cfg: Config) -> None:
    """The console's port, and an embedded Redis's TCP port, must be free before supervisord
    starts: say which is taken and which key moves it."""
    import errno
    import socket

    wanted = [(cfg.supervisor.host, cfg.supervisor.port, "[supervisor] port")]
    wanted += [("127.0.0.1", rc.port, f"[{rc.name}] port") for rc in cfg.redis.values()
               if rc.embedded and rc.port]
    for host, port, key in wanted:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as supervisord binds
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                shown = f"[{host}]" if ":" in host else host
                raise LoglinesError(f"{shown}:{port} is in use: set `{key}`") from None


def _where_password(cfg: Config) -> str:
    """Where the console password is (it is not printed: terminals and CI logs keep output)."""
    sup = cfg.supervisor
    if sup.password:
        return f"'password' in [supervisor] of {cfg.path}"
    return f"in {sup.password_file} (--show-password prints it)"


def _stop_time(cfg: Config) -> float:
    """The longest supervisord may take to stop: it stops one program after another, each
    within its stopwaitsecs (an embedded Redis within 60 s)."""
    return float(sum(p.stopwaitsecs for p in cfg.programs.values())
                 + 60 * sum(1 for rc in cfg.redis.values() if rc.embedded) + 10)


def cmd_down(args: argparse.Namespace) -> int:
    from pipeline.ops.control import alive, rpc, supervisord_pid

    cfg = _load(args)
    pid = supervisord_pid(cfg)
    if pid is None:
        print("supervisord is not running")
        return 0
    rpc(cfg).shutdown()
    timeout = args.timeout if args.timeout is not None else _stop_time(cfg)
    print(f"stopping supervisord (pid {pid}) and every worker ...", flush=True)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        print(f"loglines: error: supervisord (pid {pid}) is still stopping after {timeout:g} s: "
              "`loglines status` shows what is left", file=sys.stderr)
        return 1
    print("stopped")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from pipeline import registry
    from pipeline.core import logsetup
    from pipeline.core.lifecycle import Flags, install_signal_handlers
    from pipeline.transforms import robots

    cfg = _load(args)
    program = cfg.worker(args.name)
    log = logsetup.setup(cfg.log_level)
    for section, warning in cfg.warnings:
        if section == program.name:
            log.warning("%s", warning)
    if robots.override_path(cfg.var_dir).exists():
        os.environ[robots.OVERRIDE_ENV] = str(robots.override_path(cfg.var_dir))
    flags = Flags()
    install_signal_handlers(flags)
    return registry.get(program.type).run(cfg, program, flags)


def cmd_status(args: argparse.Namespace) -> int:
    from pipeline.monitor import status

    cfg = _load(args)
    result = status.collect(cfg, {rc.name: _client(cfg, rc.name) for rc in cfg.servers()})
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() if args.json else status.render(result))
    return 0 if all(s["reachable"] for s in result["redis"].values()) else 1


def cmd_dlq(args: argparse.Namespace) -> int:
    from pipeline.core.keys import Keys
    from pipeline.ops import dlq

    cfg = _load(args)
    servers = [rc.name for rc in cfg.servers()] if not args.redis else [args.redis]
    lists: list[DlqList] = []  # entries are numbered across all of them
    for server in servers:
        keys = Keys(cfg.redis[server].prefix) if server in cfg.redis else Keys()
        client = _client(cfg, server)
        lists.append((server, client, keys, keys.failed if args.failed else keys.dead_letters))
    several = len(lists) > 1
    if args.action == "list":
        number = 0
        for server, client, _, list_key in lists:
            for entry in dlq.entries(client, list_key):
                where = f"[{server}] " if several else ""
                print(f"{number:>5}  {where}{safe(entry.get('time', '?'), 40)}  "
                      f"{safe(entry.get('queue', '?'), 60):<14} {safe(entry.get('worker', '?'), 80):<30} "
                      f"{str(entry.get('reason', ''))[:120]!r}")
                number += 1
        if not number:
            print("no failed tracker requests" if args.failed else "no dead letters")
    elif args.action == "show":
        for index in args.index or [0]:
            for _, client, _, list_key, local in _locate(lists, [index]):
                at = (local or [0])[0]
                for entry in dlq.entries(client, list_key, at, at):
                    print(orjson.dumps(entry, option=orjson.OPT_INDENT_2).decode())
    elif args.action == "replay":
        if not args.all and not args.index:
            raise ConfigError("name the entries to replay (numbers from 'dlq list') or use --all")
        count = 0
        for _, client, keys, list_key, local in _locate(lists, None if args.all else args.index):
            count += dlq.replay(client, keys, list_key, local, args.to)
        print(f"replayed {count} entr{'y' if count == 1 else 'ies'}")
    elif args.action == "purge":
        if not args.yes:
            raise ConfigError("purge deletes every entry: add --yes to confirm")
        print(f"purged {sum(dlq.purge(client, list_key) for _, client, _, list_key in lists)} entries")
    return 0


DlqList = tuple[str, "redis.Redis", "Keys", str]  # server, client, keys, list key


def _locate(lists: list[DlqList], indexes: list[int] | None
            ) -> list[tuple[str, redis.Redis, Keys, str, list[int] | None]]:
    """Global entry numbers -> (server, client, keys, list key, local numbers or None for all)."""
    out: list[tuple[str, redis.Redis, Keys, str, list[int] | None]] = []
    start = 0
    for server, client, keys, list_key in lists:
        length = int(client.llen(list_key))
        if indexes is None:
            out.append((server, client, keys, list_key, None))
        else:
            local = [i - start for i in indexes if start <= i < start + length]
            if local:
                out.append((server, client, keys, list_key, local))
        start += length
    return out


def cmd_backfill(args: argparse.Namespace) -> int:
    from pipeline.core.keys import Keys
    from pipeline.core.lifecycle import Flags, install_signal_handlers
    from pipeline.sources.backfill import backfill

    cfg = _load(args)
    flags = Flags()
    install_signal_handlers(flags)
    server = args.redis or _queue_server(cfg, args.to)
    pushed = backfill(_client(cfg, server), Keys(cfg.redis[server].prefix), args.files, args.to,
                      args.service, flags, progress=not args.quiet)
    print(f"pushed {pushed} lines to {args.to}")
    return 0


def cmd_robots(args: argparse.Namespace) -> int:
    from pipeline.transforms import robots

    cfg = _load(args)
    try:
        count = robots.install(Path(args.file), cfg.var_dir)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print(f"installed {count} robot patterns to {robots.override_path(cfg.var_dir)}; "
          "restart the parser and tracker workers to use them")
    return 0


def cmd_es(args: argparse.Namespace) -> int:
    from pipeline.ops import esops
    from pipeline.sinks.esindexer import client

    cfg = _load(args)
    indexers = {n: p.options for n, p in cfg.programs.items() if p.type == "esindexer"}
    if not indexers:
        raise ConfigError("no [worker_*] section with type = esindexer to take the connection from",
                          file=str(cfg.path))
    name = args.worker or next(iter(indexers))
    if name not in indexers:
        raise ConfigError(f"no esindexer named {name!r} (esindexers: {', '.join(indexers)})", file=str(cfg.path))
    es = client(indexers[name])
    if args.action == "setup":
        print(esops.check(es))
        for line in esops.setup(es, indexers):
            print(f"template {line}")
    elif args.action == "migrate":
        folder = Path(args.dir) if args.dir else cfg.base_dir / "migrations"
        done = esops.migrate(es, folder)
        print("\n".join(f"applied {m}" for m in done) or "nothing to apply")
    elif args.action == "snapshot":
        if not args.repository:
            raise ConfigError("snapshot needs --repository NAME")
        if args.register:
            esops.register_repository(es, args.repository, args.register)
        if args.what == "create":
            snap = esops.snapshot_create(es, args.repository, args.name, args.indices)
            print(f"snapshot {snap['snapshot']}: {snap['state']}, {len(snap.get('indices', []))} indices")
        elif args.what == "list":
            for snap in esops.snapshot_list(es, args.repository):
                print(f"{snap['snapshot']}  {snap['state']}  {snap.get('start_time', '')}  "
                      f"{len(snap.get('indices', []))} indices")
        else:
            status = esops.snapshot_status(es, args.repository, args.name)
            print(f"{status['snapshot']}: {status['state']}")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from pipeline.core import logsetup
    from pipeline.ops import schedule

    cfg = _load(args)
    program = cfg.worker(args.name)
    if program.type != "schedule":
        raise ConfigError(f"[{args.name}] is a {program.type}, not a schedule", file=str(cfg.path))
    logsetup.setup(cfg.log_level)
    return 0 if schedule.run_and_report(cfg, program) else 1


def cmd_reap(args: argparse.Namespace) -> int:
    from pipeline.core.reaper import reap

    cfg = _load(args)
    for rc in cfg.servers():
        result = reap(_client(cfg, rc.name), rc)
        print(f"[{rc.name}] requeued {result.requeued}, dead-lettered {result.dead_lettered}")
    return 0


def _output(path: str) -> BinaryIO:
    return open(path, "wb") if path and path != "-" else sys.stdout.buffer  # noqa: SIM115


def cmd_query(args: argparse.Namespace) -> int:
    from pipeline.query import analytics, events
    from pipeline.query.formats import Writer, default_columns, table
    from pipeline.query.params import selection, sorting
    from pipeline.query.shell import Progress, target

    cfg = _load(args)
    where = target(cfg, args.api, args.esindexer)
    src = where.src
    params: dict[str, list[str]] = {}
    for pair in args.filters:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"{pair!r}: filters are FIELD=VALUE (status=200|304, bytes=1000..)")
        params.setdefault(name, []).append(value)
    for name, value in (("range", args.range), ("from", args.since), ("to", args.until), ("q", args.text)):
        if value:
            params[name] = [value]
    if args.counted:
        params["counted"] = ["yes"]
    days = where.api.max_range_days if where.api else 100_000
    sel = selection(params, (), None if args.delete else days, set(src.fields()))
    if args.count or args.top or args.unique:
        if args.top:
            result = analytics.top(src, sel, args.top, args.n)
        elif args.unique:
            result = analytics.unique(src, sel, args.unique, 40_000, args.interval, args.tz)
        elif args.interval or args.by:
            result = analytics.count(src, sel, args.interval, args.by, args.n, args.tz)
        else:
            print(events.count(src, sel))
            return 0
        out = _output(args.output)
        out.write(table(args.format, result["columns"], result["rows"]) if args.format in ("csv", "tsv")
                  else orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        out.flush()
        return 0
    if args.delete:
        if not sel.narrowed and not (args.range or args.since or args.until):
            raise ConfigError("a delete names what it deletes: FIELD=VALUE, -q, or a time range")
        if not args.dry_run and not args.yes:
            raise ConfigError(f"this deletes {events.count(src, sel):,} events: add --yes (or --dry-run)")
        audit = where.api.audit_index if where.api else "loglines-audit"
        result = events.delete(src, sel, events.shell_user(), audit, args.dry_run)
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return 0 if result.get("status", "done") == "done" else 1
    fields = [f.strip() for f in args.fields.split(",") if f.strip()]
    writer = Writer(args.format, default_columns(args.format, src.template, fields))
    progress = Progress("events", min(events.count(src, sel), args.limit or 10**12), args.quiet)
    out = _output(args.output)
    try:
        order = sorting(args.sort, src.time_field)
        for name, _ in order:
            src.aggregatable("sort", name)
        for page in events.export(src, sel, 2000, args.limit, fields, order):
            out.write(writer.rows(page))
            progress.update(writer.count)
        out.write(writer.end())
    finally:
        progress.finish()
        if out is not sys.stdout.buffer:
            out.close()
        else:
            out.flush()
    if args.output and args.output != "-":
        print(f"wrote {writer.count:,} events to {args.output}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.query import reports, sushi, tabular, usage
    from pipeline.query.api import counter_settings
    from pipeline.query.shell import Progress, target

    cfg = _load(args)
    where = target(cfg, args.api, args.esindexer)
    settings = counter_settings(where.api)
    months = where.api.max_report_months if where.api else 1200
    params = {"customer_id": [settings.customer_id], "begin_date": [args.begin], "end_date": [args.end]}
    try:
        wanted = sushi.request(args.report, params, settings, months)
    except sushi.SushiError as exc:
        raise ConfigError(f"{exc.code} {exc.message}: {exc.data}") from None
    progress = Progress("aggregation buckets read", quiet=args.quiet)
    made = usage.collect(where.src, wanted.begin, wanted.end, progress.update)
    progress.finish()
    report = reports.build(wanted, settings, made)
    body = orjson.dumps(sushi.to_json(report), option=orjson.OPT_INDENT_2) + b"\n" if args.format == "json" \
        else tabular.render(report, args.format)
    out = _output(args.output)
    out.write(body)
    if out is sys.stdout.buffer:
        out.flush()
    else:
        out.close()
    for exception in report.exceptions:
        print(f"loglines: {exception.text()}", file=sys.stderr)
    if not args.quiet:
        print(f"{report.request.report.id}: {len(report.rows)} rows, {made.double_clicks} double clicks removed, "
              f"{made.buckets:,} buckets in {made.seconds:.1f} s", file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loglines", description="Reliable, plugin-driven usage-log pipeline.")
    parser.add_argument("-c", "--config", help="config file (default: $LOGLINES_CONFIG or ./loglines.cfg)")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def add(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(func=func)
        return cmd

    add("init", cmd_init, "write a starter loglines.cfg with a generated console password")
    add("check", cmd_check, "validate loglines.cfg and load every plugin")
    add("supervisord-config", cmd_supervisord_config,
        "write supervisord.conf and workers_available/*.conf (never touches your links)")
    add("enable", cmd_enable, "link a worker into workers_enabled/").add_argument("name")
    add("disable", cmd_disable, "unlink a worker from workers_enabled/").add_argument("name")
    up = add("up", cmd_up, "generate the config and start supervisord")
    up.add_argument("--foreground", action="store_true", help="stay in the foreground (Ctrl-C stops all)")
    up.add_argument("--show-password", action="store_true", help="print the console password")
    add("reload", cmd_reload, "regenerate from loglines.cfg and apply it to the running supervisord "
        "(new, changed, enabled and disabled workers)")
    down = add("down", cmd_down, "stop supervisord and every worker, and wait until they stopped")
    down.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                      help="give up waiting after this long (default: the sum of the stopwaitsecs)")
    add("worker", cmd_worker, "run one worker in the foreground (what supervisord runs)").add_argument("name")
    add("status", cmd_status, "workers, heartbeats, queues, in-flight and dead letters").add_argument(
        "--json", action="store_true", help="machine-readable output")
    dlq = add("dlq", cmd_dlq, "inspect, replay or purge the dead-letter list")
    dlq.add_argument("action", choices=["list", "show", "replay", "purge"])
    dlq.add_argument("index", nargs="*", type=int, help="entry numbers (from 'dlq list')")
    dlq.add_argument("--all", action="store_true", help="replay every entry")
    dlq.add_argument("--to", default="", help="replay into this queue instead of the original")
    dlq.add_argument("--yes", action="store_true", help="confirm purge")
    dlq.add_argument("--failed", action="store_true",
                     help="the tracker's failed-requests list instead of the dead letters")
    dlq.add_argument("--redis", default="", metavar="SECTION",
                     help="only this Redis server (default: every server the config uses)")
    backfill = add("backfill", cmd_backfill, "push existing or rotated-away logs (resumable)")
    backfill.add_argument("files", nargs="+")
    backfill.add_argument("--to", required=True, help="queue to push to")
    backfill.add_argument("--service", default="backfill", help="service name for the lines")
    backfill.add_argument("--quiet", action="store_true", help="no progress bar")
    backfill.add_argument("--redis", default="", metavar="SECTION",
                          help="the Redis server of the queue (default: that of the workers reading it)")
    robots_cmd = add("robots", cmd_robots, "replace the COUNTER robots list: robots update FILE")
    robots_cmd.add_argument("action", choices=["update"])
    robots_cmd.add_argument("file", help="a COUNTER_Robots_list.json")
    es_cmd = add("es", cmd_es, "Elasticsearch: setup (templates, connection check), migrate, snapshot")
    es_cmd.add_argument("action", choices=["setup", "migrate", "snapshot"])
    es_cmd.add_argument("what", nargs="?", choices=["create", "list", "status"], default="list",
                        help="for snapshot: create, list or status")
    es_cmd.add_argument("name", nargs="?", default="", help="snapshot name (create, status)")
    es_cmd.add_argument("--worker", default="", help="the esindexer section whose connection to use")
    es_cmd.add_argument("--dir", default="", help="migrations folder (default: migrations/ next to the config)")
    es_cmd.add_argument("--repository", default="", help="snapshot repository name")
    es_cmd.add_argument("--register", default="", metavar="LOCATION",
                        help="register the repository as a filesystem repository at LOCATION first")
    es_cmd.add_argument("--indices", default="", help="indices to snapshot (default: all)")
    add("schedule", cmd_schedule, "run a schedule worker's task once, now, with its report").add_argument("name")
    add("reap", cmd_reap, "return the in-flight batches of dead workers to their queues now")
    query = add("query", cmd_query, "events from Elasticsearch: export, count, top values, timeline, delete")
    query.add_argument("filters", nargs="*", metavar="FIELD=VALUE",
                       help="kind=download, status=200|304 (any of), bytes=1000.. (a range)")
    query.add_argument("--range", default="", help="TODAY, 1D, 7D, 30D (the last N days), 12H")
    query.add_argument("--from", dest="since", default="", metavar="TIME",
                       help="2026-01-15T10:00:00Z, 2026-01-15, 2026-01, now-7d (default: max_range_days ago)")
    query.add_argument("--to", dest="until", default="", metavar="TIME", help="end (a day or month: included)")
    query.add_argument("-q", dest="text", default="", metavar="TEXT", help="free text")
    query.add_argument("--counted", action="store_true", help="only what COUNTER counts (status, kind, robots)")
    query.add_argument("--format", choices=["ndjson", "json", "csv", "tsv"], default="ndjson")
    query.add_argument("--fields", default="", help="fields to export, comma-separated (CSV/TSV columns)")
    query.add_argument("--limit", type=int, default=0, help="export at most N events")
    query.add_argument("-o", "--output", default="", metavar="FILE", help="write here (default: stdout)")
    query.add_argument("--sort", default="", help="fields to sort by, - for descending (default: time)")
    query.add_argument("--count", action="store_true",
                       help="how many (with --interval and --by: per interval and value)")
    query.add_argument("--interval", default="", choices=["", "hour", "day", "week", "month"],
                       help="with --count or --unique: per interval")
    query.add_argument("--by", default="", metavar="FIELD", help="with --count: split by the values of FIELD")
    query.add_argument("--top", default="", metavar="FIELD", help="the most frequent values of FIELD")
    query.add_argument("--unique", default="", metavar="FIELD", help="distinct values of FIELD (approximate)")
    query.add_argument("--n", type=int, default=10, help="values --top and --by show")
    query.add_argument("--tz", default="UTC", help="time zone of the intervals")
    query.add_argument("--delete", action="store_true", help="delete the selected events (recorded in the audit index)")
    query.add_argument("--dry-run", action="store_true", help="with --delete: only count")
    query.add_argument("--yes", action="store_true", help="confirm --delete")
    query.add_argument("--api", default="", metavar="SECTION", help="the api section whose settings to use")
    query.add_argument("--esindexer", default="", metavar="SECTION", help="the esindexer section to read")
    query.add_argument("--quiet", action="store_true", help="no progress bar")
    report = add("report", cmd_report, "a COUNTER 5.1 report (PR, PR_P1, IR, IR_A1) from Elasticsearch")
    report.add_argument("report", choices=["pr", "pr_p1", "ir", "ir_a1"])
    report.add_argument("--begin", required=True, metavar="YYYY-MM", help="first month")
    report.add_argument("--end", required=True, metavar="YYYY-MM", help="last month (included)")
    report.add_argument("--format", choices=["tsv", "csv", "json"], default="tsv")
    report.add_argument("-o", "--output", default="", metavar="FILE", help="write here (default: stdout)")
    report.add_argument("--api", default="", metavar="SECTION", help="the api section whose settings to use")
    report.add_argument("--esindexer", default="", metavar="SECTION", help="the esindexer section to read")
    report.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser
