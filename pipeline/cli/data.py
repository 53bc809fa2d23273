"""``loglines dlq``, ``backfill``, ``robots``, ``es``, ``schedule``, ``reap``, ``query`` and
``report``: what is in Redis and Elasticsearch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import BinaryIO

import orjson
import redis

from pipeline.cli.common import load_config, queue_server, redis_client
from pipeline.core.keys import Keys
from pipeline.core.lifecycle import Flags
from pipeline.core.logsetup import safe
from pipeline.errors import ConfigError


def cmd_dlq(args: argparse.Namespace) -> int:
    from pipeline.core.keys import Keys
    from pipeline.ops import dlq

    cfg = load_config(args)
    servers = [rc.name for rc in cfg.servers()] if not args.redis else [args.redis]
    lists: list[DlqList] = []  # entries are numbered across all of them
    for server in servers:
        keys = Keys(cfg.redis[server].prefix) if server in cfg.redis else Keys()
        client = redis_client(cfg, server)
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
    from pipeline.core.lifecycle import install_signal_handlers
    from pipeline.sources.backfill import backfill

    cfg = load_config(args)
    flags = Flags()
    install_signal_handlers(flags)
    server = args.redis or queue_server(cfg, args.to)
    pushed = backfill(redis_client(cfg, server), Keys(cfg.redis[server].prefix), args.files, args.to,
                      args.service, flags, progress=not args.quiet)
    print(f"pushed {pushed} lines to {args.to}")
    return 0


def cmd_robots(args: argparse.Namespace) -> int:
    from pipeline.transforms import robots

    cfg = load_config(args)
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

    cfg = load_config(args)
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

    cfg = load_config(args)
    program = cfg.worker(args.name)
    if program.type != "schedule":
        raise ConfigError(f"[{args.name}] is a {program.type}, not a schedule", file=str(cfg.path))
    logsetup.setup(cfg.log_level)
    return 0 if schedule.run_and_report(cfg, program) else 1


def cmd_reap(args: argparse.Namespace) -> int:
    from pipeline.core.reaper import reap

    cfg = load_config(args)
    for rc in cfg.servers():
        result = reap(redis_client(cfg, rc.name), rc)
        print(f"[{rc.name}] requeued {result.requeued}, dead-lettered {result.dead_lettered}")
    return 0


def _output(path: str) -> BinaryIO:
    return open(path, "wb") if path and path != "-" else sys.stdout.buffer  # noqa: SIM115


def cmd_query(args: argparse.Namespace) -> int:
    from pipeline.query import analytics, events
    from pipeline.query.formats import Writer, default_columns, table
    from pipeline.query.params import selection, sorting
    from pipeline.query.shell import Progress, target

    cfg = load_config(args)
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

    cfg = load_config(args)
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
