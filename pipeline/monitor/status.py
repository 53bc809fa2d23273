"""``loglines status``: workers, heartbeats, queues (messages and items), in-flight and
dead-letter counts, rates, a watcher's files and a tracker's outcomes; and, when supervisord or
a Redis server is not there, what to do about it.

:func:`collect` is the one collector: ``loglines status`` renders it, and the monitor's
``/metrics``, health checks, alerts and status page are all made from what it returns, so they
never disagree."""

from __future__ import annotations

import time
from typing import Any

import redis

from pipeline import registry
from pipeline.config import Config, ProgramConfig
from pipeline.core.connection import CONNECTION_ERRORS, UnfitServer, check_server
from pipeline.core.keys import Keys
from pipeline.core.logsetup import safe
from pipeline.core.message import count_items
from pipeline.core.stats import figures as stats_figures
from pipeline.core.stats import outcome_field
from pipeline.monitor import figures
from pipeline.ops.control import process_states, supervisord_pid
from pipeline.ops.supervisord import paths

#: Messages and bytes of one queue read at most to count its items; beyond, an estimate.
SAMPLE_MESSAGES = 1000
SAMPLE_BYTES = 16 * 1024 * 1024
RATE_MINUTES = 5


def collect(cfg: Config, clients: dict[str, redis.Redis]) -> dict[str, Any]:
    """Everything ``loglines status`` shows, from every Redis server of the pipeline (``clients``:
    section name -> client) and from supervisord."""
    queues: dict[str, int] = {}
    items: dict[str, dict[str, Any]] = {}
    consumers: dict[str, dict[str, Any]] = {}
    totals: dict[str, int] = {}
    recent: dict[str, int] = {}
    beats: dict[str, float] = {}
    servers: dict[str, dict[str, Any]] = {}
    states = process_states(cfg)
    now = time.time()
    minute = int(now // 60)
    for server, client in clients.items():
        keys = Keys(cfg.redis[server].prefix)
        try:
            mine = {name: 0 for name in configured_queues(cfg, server)}
            queue_head = keys.queue("")
            for key in sorted(client.scan_iter(match=_escape(queue_head) + "*", count=1000)):
                mine[key.decode()[len(queue_head):]] = client.llen(key)
            for name, length in mine.items():
                shown = name if name not in queues else f"{name} ({server})"
                queues[shown] = length
                count, estimate = queue_items(client, keys.queue(name), length)
                items[shown] = {"items": count, "estimate": estimate}
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
            mine_sections = [n for n, p in cfg.programs.items() if p.type and p.redis == server]
            for section, age in figures.heartbeat_ages(client, keys, mine_sections, now).items():
                beats[section] = max(age, beats.get(section, 0.0))
            for k, v in client.hgetall(keys.stats).items():
                totals[k.decode()] = totals.get(k.decode(), 0) + int(v)
            for m in range(minute - RATE_MINUTES, minute + 1):  # the current minute too
                for who, count in client.hgetall(keys.rate(m)).items():
                    recent[who.decode()] = recent.get(who.decode(), 0) + int(count)
            try:
                problems = check_server(client)
            except UnfitServer as exc:
                problems = [f"ERROR: {exc}"]
            servers[server] = {"dead_letters": int(client.llen(keys.dead_letters)),
                               "failed": int(client.llen(keys.failed)), "warnings": problems,
                               "reachable": True, **_cluster_place(client, keys)}
        except CONNECTION_ERRORS as exc:
            servers[server] = {"dead_letters": 0, "failed": 0, "warnings": [], "reachable": False,
                               "error": safe(exc), "hint": _unreachable(cfg, server, states)}
    # minutes before this one, and this one as far as it went
    window = RATE_MINUTES * 60 + (now - minute * 60)
    workers = {}
    for name, program in cfg.programs.items():
        procs = {k: v for k, v in (states or {}).items() if k.split(":")[0] == name}
        counters, histograms = stats_figures(totals, name)
        worker: dict[str, Any] = {
            "type": program.type or "program",
            "processes": {k.split(":")[1]: v["statename"] for k, v in procs.items()},
            "items_total": totals.get(name, 0),
            "items_per_second_5min": round(recent.get(name, 0) / window, 2),
            # for the monitor: what the worker passed on, its other counters and histograms
            # (``core.stats``), how long ago its loop last turned (None: no live process)
            "items_out_total": counters.get("items_out", 0),
            "counters": counters,
            "histograms": histograms,
            "heartbeat_age_s": beats.get(name),
        }
        component = registry.get(program.type) if program.type else None
        if component is not None and component.outcomes:
            worker["outcomes"] = {o: totals.get(outcome_field(name, o), 0) for o in component.outcomes}
        client = clients.get(program.redis)
        if component is not None and component.status is not None and client is not None \
                and servers.get(program.redis, {}).get("reachable"):
            try:
                worker.update(component.status(cfg, program, client))
                if "files" in worker:  # a watcher's: how long its oldest unshipped line waits
                    worker["unshipped_age_s"] = figures.unshipped_ages(
                        client, Keys(cfg.redis[program.redis].prefix), name, worker["files"], now)
            except CONNECTION_ERRORS:
                pass
        workers[name] = worker
    return {
        "collected_at": round(now, 3),
        "supervisord": "running" if states is not None else "not running",
        "supervisord_pid": supervisord_pid(cfg) if states is not None else None,
        # every supervisord program (the embedded Redis too): ``group:name`` -> its state
        "processes": {k: v["statename"] for k, v in (states or {}).items()},
        "workers": workers,
        "consumers": consumers,
        "queues": queues,
        "queue_items": items,
        "in_flight": sum(c["in_flight"] for c in consumers.values()),
        "dead_letters": sum(s["dead_letters"] for s in servers.values()),
        "failed": sum(s["failed"] for s in servers.values()),
        "redis": servers,
    }


def queue_items(client: redis.Redis, key: str, length: int) -> tuple[int, bool]:
    """The items in a queue's messages, and whether that is an estimate: at most
    :data:`SAMPLE_MESSAGES` messages or :data:`SAMPLE_BYTES` bytes are read from its head, and
    the rest is reckoned at their average."""
    seen = total = size = 0
    while seen < min(length, SAMPLE_MESSAGES) and size < SAMPLE_BYTES:
        chunk = client.lrange(key, seen, min(seen + 100, SAMPLE_MESSAGES) - 1)
        if not chunk:
            break
        seen += len(chunk)
        size += sum(map(len, chunk))
        total += sum(map(count_items, chunk))
    if seen >= length or not seen:
        return total, False
    return round(total * length / seen), True


def _cluster_place(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """On a Redis Cluster: the slot of the pipeline's hash tag and the master serving it."""
    if not hasattr(client, "get_node_from_key"):
        return {}
    from redis.crc import key_slot

    node = client.get_node_from_key(keys.dead_letters)
    return {"slot": int(key_slot(keys.dead_letters.encode())), "node": f"{node.host}:{node.port}"}


def _unreachable(cfg: Config, server: str, states: dict[str, dict[str, Any]] | None) -> str:
    """What to do about a Redis server that does not answer."""
    rc = cfg.redis[server]
    if rc.embedded and states is None:
        return "not running: `loglines up` starts it (with supervisord)"
    if rc.embedded:
        state = states.get(f"{server}:{server}", {}).get("statename", "not in supervisord") if states else "?"
        return (f"the embedded Redis does not answer (supervisord says {state}): see "
                f"{paths(cfg)['logdir'] / (server + '.log')}")
    return ("not reachable: start that server or correct the section's url; the workers wait "
            "for it and go on when it answers")


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


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)


def render(status: dict[str, Any]) -> str:
    if status["supervisord"] == "running":
        pid = status.get("supervisord_pid")
        head = "supervisord: running" + (f" (pid {pid})" if pid else "")
    else:
        head = "supervisord: not running: `loglines up` starts it"
    out = [head, "", "WORKER                 TYPE        STATE           ITEMS     /s(5m)"]
    for name, w in status["workers"].items():
        state = ",".join(sorted(set(w["processes"].values()))) or "-"
        out.append(f"{name:<22} {w['type']:<11} {state:<15} {w['items_total']:>9} {w['items_per_second_5min']:>9}")
    for name, w in status["workers"].items():
        for target, t in w.get("targets", {}).items():
            state = t["state"] + (f" until {t['until']}" if "until" in t else "")
            out.append(f"{name} -> {safe(target, 30)} ({safe(t['url'], 60)}): {state}; queue {t['queue']}, spool "
                       f"{t['spool_batches']} batches / {t['spool_bytes']} bytes (oldest {t['spool_oldest_age_s']} s), "
                       f"sent {t['sent']}, dropped {t['dropped']}")
        if "outcomes" in w:
            told = [f"{k.replace('_', ' ')} {v}" for k, v in w["outcomes"].items()]
            if "retrying" in w:
                told.append(f"retrying {'~' if w.get('retrying_estimate') else ''}{w['retrying']} "
                            "(in the failed list)")
            out.append(f"{name}: " + ", ".join(told))
    files = [(name, f) for name, w in status["workers"].items() for f in w.get("files", ())]
    waiting = [(name, p) for name, w in status["workers"].items() for p in w.get("waiting_for", ())]
    if files or waiting:
        out += ["", "FILE                                               WATCHER           OFFSET       SIZE        LAG"]
        out += [f"{safe(f['path'], 200):<50} {name:<15} {f['offset']:>10} {_number(f['size']):>10} "
                f"{_number(f['lag']):>10}" for name, f in files]
        out += [f"{safe(p, 200):<50} {name:<15} waiting: no file matches it yet" for name, p in waiting]
    out += ["", "QUEUE                  MESSAGES      ITEMS"]
    # names read from Redis are anyone's who can write there: escaped, so none forges a line
    counted = status.get("queue_items", {})
    rows = []
    for q, n in status["queues"].items():
        its = counted.get(q, {})
        shown = ("~" if its.get("estimate") else "") + str(its.get("items", "-"))
        rows.append(f"{safe(q, 60):<22} {n:>8} {shown:>10}")
    out += rows or ["(none)"]
    if any(i.get("estimate") for i in counted.values()):
        out.append(f"(~: estimated from the first {SAMPLE_MESSAGES} messages)")
    out += ["", "CONSUMER                                   QUEUE          ALIVE  IN-FLIGHT"]
    for cid, c in status["consumers"].items():
        out.append(f"{safe(cid, 80):<42} {safe(c['queue'], 60):<14} {'yes' if c['alive'] else 'NO':<6} "
                   f"{c['in_flight']:>9}")
    for server, info in status.get("redis", {}).items():
        if "slot" in info:
            out.append(f"[{server}]: the pipeline's keys are in slot {info['slot']}, served by {info['node']}")
        if not info.get("reachable", True):
            out += [f"[{server}]: {info['hint']} ({info['error']})"]
        out += [f"[{server}]: {w}" for w in info.get("warnings", [])]
    out += ["", f"in flight: {status['in_flight']}   dead letters: {status['dead_letters']}   "
                f"failed tracker requests: {status['failed']}"]
    return "\n".join(out)
