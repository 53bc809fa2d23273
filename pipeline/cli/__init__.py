"""The ``loglines`` command: its arguments, and what it answers when a command fails."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import redis
from elasticsearch import ApiError

from pipeline.cli.configure import (
    cmd_check,
    cmd_disable,
    cmd_enable,
    cmd_init,
    cmd_reload,
    cmd_supervisord_config,
)
from pipeline.cli.data import (
    cmd_backfill,
    cmd_dlq,
    cmd_es,
    cmd_query,
    cmd_reap,
    cmd_report,
    cmd_robots,
    cmd_schedule,
)
from pipeline.cli.running import cmd_down, cmd_status, cmd_up, cmd_worker
from pipeline.core.logsetup import safe
from pipeline.errors import LoglinesError

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
        print(f"loglines: error: Redis: {safe(exc, 2000)}", file=sys.stderr)  # it may echo keys
        return 1
    except ApiError as exc:
        print(f"loglines: error: Elasticsearch: {exc.meta.status} {safe(exc.message, 2000)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


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
