"""``loglines status``: workers, heartbeats, queues, in-flight and dead-letter counts, rates."""

from __future__ import annotations

import time
from typing import Any

import redis

from pipeline import registry
from pipeline.config import Config, ProgramConfig
from pipeline.core.connection import UnfitServer, check_server
from pipeline.core.keys import Keys
from pipeline.core.logsetup import safe
from pipeline.ops.control import process_states


def collect(cfg: Config, clients: dict[str, redis.Redis]) -> dict[str, Any]:
    """Everything ``loglines status`` shows, from every Redis server of the pipeline (``clients``:
    section name -> client) and from supervisord."""
    queues: dict[str, int] = {}
    consumers: dict[str, dict[str, Any]] = {}
    totals: dict[str, int] = {}
    recent: dict[str, int] = {}
    servers: dict[str, dict[str, Any]] = {}
    minute = int(time.time() // 60)
    for server, client in clients.items():
        keys = Keys(cfg.redis[server].prefix)
        mine = {name: 0 for name in configured_queues(cfg, server)}
        queue_head = keys.queue("")
        for key in sorted(client.scan_iter(match=_escape(queue_head) + "*", count=1000)):
            mine[key.decode()[len(queue_head):]] = client.llen(key)
        for name, length in mine.items():
            queues[name if name not in queues else f"{name} ({server})"] = length
        for cid, qkey in client.hgetall(keys.consumers).items():
            consumer = cid.decode()
            ttl = client.ttl(keys.heartbeat(consumer))
            consumers[consumer] = {
                "queue": keys.queue_name(qkey.decode()),
                "redis": server,
                "alive": ttl > 0,
                "heartbeat_ttl": max(ttl, 0),
                "in_flight": client.llen(keys.inflight(consumer)),
            }
        for k, v in client.hgetall(keys.stats).items():
            totals[k.decode()] = totals.get(k.decode(), 0) + int(v)
        for m in range(minute - 5, minute):
            for worker, count in client.hgetall(keys.rate(m)).items():
                recent[worker.decode()] = recent.get(worker.decode(), 0) + int(count)
        try:
            problems = check_server(client)
        except UnfitServer as exc:
            problems = [f"ERROR: {exc}"]
        servers[server] = {"dead_letters": int(client.llen(keys.dead_letters)),
                           "failed": int(client.llen(keys.failed)), "warnings": problems}
    states = process_states(cfg)
    workers = {}
    for name, program in cfg.programs.items():
        procs = {k: v for k, v in (states or {}).items() if k.split(":")[0] == name}
        workers[name] = {
            "type": program.type or "program",
            "processes": {k.split(":")[1]: v["statename"] for k, v in procs.items()},
            "items_total": totals.get(name, 0),
            "items_per_second_5min": round(recent.get(name, 0) / 300, 2),
        }
        component = registry.get(program.type) if program.type else None
        if component is not None and component.report is not None and program.redis in clients:
            workers[name] |= component.report(clients[program.redis], Keys(cfg.redis[program.redis].prefix),
                                              program)
    return {
        "supervisord": "running" if states is not None else "not running",
        "workers": workers,
        "consumers": consumers,
        "queues": queues,
        "in_flight": sum(c["in_flight"] for c in consumers.values()),
        "dead_letters": sum(s["dead_letters"] for s in servers.values()),
        "failed": sum(s["failed"] for s in servers.values()),
        "redis": servers,
    }


def program_queues(program: ProgramConfig[Any]) -> list[str]:
    """The queues a worker reads from or pushes to (none for a plain program)."""
    return registry.get(program.type).queues(program.options) if program.type else []


def configured_queues(cfg: Config, server: str = "redis") -> list[str]:
    names: list[str] = []
    for program in cfg.programs.values():
        if program.type and program.redis == server:
            names += [n for n in program_queues(program) if n not in names]
    return names


def _escape(pattern: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in pattern)


def render(status: dict[str, Any]) -> str:
    out = [f"supervisord: {status['supervisord']}", "", "WORKER                 TYPE        STATE           ITEMS     /s(5m)"]
    for name, w in status["workers"].items():
        state = ",".join(sorted(set(w["processes"].values()))) or "-"
        out.append(f"{name:<22} {w['type']:<11} {state:<15} {w['items_total']:>9} {w['items_per_second_5min']:>9}")
    for name, w in status["workers"].items():
        for target, t in w.get("targets", {}).items():
            state = t["state"] + (f" until {t['until']}" if "until" in t else "")
            out.append(f"{name} -> {safe(target, 30)} ({safe(t['url'], 60)}): {state}; queue {t['queue']}, spool "
                       f"{t['spool_batches']} batches / {t['spool_bytes']} bytes (oldest {t['spool_oldest_age_s']} s), "
                       f"sent {t['sent']}, dropped {t['dropped']}")
    out += ["", "QUEUE                  LENGTH"]
    # names read from Redis are anyone's who can write there: escaped, so none forges a line
    out += [f"{safe(q, 60):<22} {n:>6}" for q, n in status["queues"].items()] or ["(none)"]
    out += ["", "CONSUMER                                   QUEUE          ALIVE  IN-FLIGHT"]
    for cid, c in status["consumers"].items():
        out.append(f"{safe(cid, 80):<42} {safe(c['queue'], 60):<14} {'yes' if c['alive'] else 'NO':<6} "
                   f"{c['in_flight']:>9}")
    for server, info in status.get("redis", {}).items():
        out += [f"[{server}]: {w}" for w in info.get("warnings", [])]
    out += ["", f"in flight: {status['in_flight']}   dead letters: {status['dead_letters']}   "
                f"failed tracker requests: {status['failed']}"]
    return "\n".join(out)
