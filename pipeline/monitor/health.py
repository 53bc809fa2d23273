"""The monitor's checks: what is wrong right now, from one collected status.

Each check names its rule and what it is about (``process_not_running:worker_es:worker_es``);
``/healthz`` answers 503 naming every failing one, and :mod:`pipeline.monitor.alerts` turns a
check failing for its rule's time (``*_for_s``) into an alert. What a rule must remember
between checks (the dead letters' count, a tracker's answers) is kept in Redis, so a restart of
the monitor forgets nothing.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import redis
from elastic_transport import ConnectionError as EsConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError

from pipeline.config import Config
from pipeline.core.keys import Keys
from pipeline.monitor.history import History
from pipeline.sinks.esindexer import client as es_client

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from pipeline.monitor.monitor import MonitorOptions

#: the rules, in the order the status page lists them
RULES = ("redis_unreachable", "supervisord_down", "process_not_running", "es_unreachable",
         "queue_over", "queue_growing", "dead_letters_grew", "watcher_lag", "tracker_failing",
         "disk_low", "heartbeat_stale")
#: supervisord states of a program that went wrong (STOPPED is an operator's doing)
BAD_STATES = ("BACKOFF", "FATAL", "EXITED", "UNKNOWN")


@dataclass(frozen=True)
class Check:
    id: str  # rule:subject, unique
    rule: str
    ok: bool
    summary: str  # one line for people: what and how much


def for_seconds(opts: MonitorOptions, rule: str) -> float:
    """How long a rule's check must fail before it is an alert."""
    return {"process_not_running": opts.process_down_for_s, "es_unreachable": opts.es_down_for_s,
            "tracker_failing": opts.tracker_failing_for_s}.get(rule, 0.0)


class Checker:
    def __init__(self, cfg: Config, opts: MonitorOptions, client: redis.Redis, keys: Keys,
                 history: History) -> None:
        self.cfg, self.opts, self.client, self.keys, self.history = cfg, opts, client, keys, history
        self.es: dict[str, Elasticsearch] = {}

    def run(self, status: dict[str, Any], now: float) -> list[Check]:
        """Every check of the enabled rules (passing ones too)."""
        memory = {k.decode(): orjson.loads(v) for k, v in self.client.hgetall(self.keys.monitor("checks")).items()}
        checks = [*self._servers(status), *self._processes(status), *self._elasticsearch(),
                  *self._queues(status, now), *self._dead_letters(status, memory, now),
                  *self._watchers(status), *self._trackers(status, memory), *self._disks(),
                  *self._heartbeats(status)]
        if memory:
            self.client.hset(self.keys.monitor("checks"), mapping={k: orjson.dumps(v) for k, v in memory.items()})
        return [c for c in checks if c.rule not in self.opts.disabled_rules]

    def _servers(self, status: dict[str, Any]) -> list[Check]:
        out = [Check(f"redis_unreachable:{name}", "redis_unreachable", s["reachable"],
                     f"Redis [{name}] " + ("answers" if s["reachable"] else f"does not answer: {s.get('error', '')}"))
               for name, s in status["redis"].items()]
        running = status["supervisord"] == "running"
        out.append(Check("supervisord_down", "supervisord_down", running,
                         "supervisord " + ("is running" if running else "does not answer")))
        return out

    def _processes(self, status: dict[str, Any]) -> list[Check]:
        return [Check(f"process_not_running:{key}", "process_not_running", state not in BAD_STATES,
                      f"process {key} is {state} in supervisord")
                for key, state in sorted(status.get("processes", {}).items())]

    def _elasticsearch(self) -> list[Check]:
        out = []
        for name, program in self.cfg.workers("esindexer").items():
            es = self.es.get(name)
            if es is None:
                timeout = min(5.0, program.options.request_timeout)
                es = self.es[name] = es_client(replace(program.options, request_timeout=timeout))
            up = answers(es)
            hosts = ", ".join(program.options.hosts)
            out.append(Check(f"es_unreachable:{name}", "es_unreachable", up,
                             f"Elasticsearch of {name} ({hosts}) " + ("answers" if up else "does not answer")))
        return out

    def _queues(self, status: dict[str, Any], now: float) -> list[Check]:
        out = []
        window = self.opts.queue_growing_for_s
        for name, length in status["queues"].items():
            out.append(Check(f"queue_over:{name}", "queue_over", length <= self.opts.queue_max_messages,
                             f"queue {name} holds {length} messages (queue_max_messages "
                             f"{self.opts.queue_max_messages})"))
            if window <= 0:
                continue
            points = self.history.series("queue", name, now - window)
            growing = False
            if len(points) >= 3 and now - points[0][0] >= window * 0.8:
                rise = points[-1][1] - points[0][1]
                growing = rise >= self.opts.queue_growth_min and slope(points) > 0
            out.append(Check(f"queue_growing:{name}", "queue_growing", not growing,
                             f"queue {name} grew to {length} messages over the last {window:g} s"
                             if growing else f"queue {name} is not growing ({length} messages)"))
        return out

    def _dead_letters(self, status: dict[str, Any], memory: dict[str, Any], now: float) -> list[Check]:
        count = int(status["dead_letters"])
        seen = memory.get("dead_letters", {"count": count, "grew_at": 0.0})
        grew_at = now if count > int(seen["count"]) else float(seen["grew_at"]) if count else 0.0
        memory["dead_letters"] = {"count": count, "grew_at": grew_at}
        grew = bool(grew_at) and now - grew_at < self.opts.dead_letters_window_s
        return [Check("dead_letters_grew", "dead_letters_grew", not grew,
                      f"dead letters grew to {count} (loglines dlq list)" if grew else f"{count} dead letters")]

    def _watchers(self, status: dict[str, Any]) -> list[Check]:
        out = []
        for name, w in status["workers"].items():
            ages = w.get("unshipped_age_s", {})
            for f in w.get("files", ()):
                lag, age = f["lag"] or 0, ages.get(f["path"]) or 0.0
                ok = lag <= self.opts.lag_max_bytes and age <= self.opts.lag_max_age_s
                out.append(Check(f"watcher_lag:{name}:{f['path']}", "watcher_lag", ok,
                                 f"{name} has {lag} bytes of {f['path']} to read, the oldest "
                                 f"waiting at least {age:.0f} s"))
        return out

    def _trackers(self, status: dict[str, Any], memory: dict[str, Any]) -> list[Check]:
        out = []
        for name, program in self.cfg.workers("tracker").items():
            counters = status["workers"].get(name, {}).get("counters", {})
            good = counters.get(f"tracker_responses:{program.options.success}", 0)
            bad = sum(n for k, n in counters.items() if k.startswith("tracker_responses:")) - good
            seen = memory.get(f"tracker:{name}", {"good": good, "bad": bad, "failing": False})
            failing = False if good > seen["good"] else True if bad > seen["bad"] else bool(seen["failing"])
            memory[f"tracker:{name}"] = {"good": good, "bad": bad, "failing": failing}
            out.append(Check(f"tracker_failing:{name}", "tracker_failing", not failing,
                             f"the tracker of {name} " + ("has answered no request since its last "
                                                          "failure" if failing else "takes requests")))
        return out

    def _disks(self) -> list[Check]:
        places = [self.cfg.var_dir] + [
            Path(p.options.spool_dir) if p.options.spool_dir else self.cfg.var_dir / "spool" / n
            for n, p in self.cfg.workers("forward").items()]
        out, seen = [], set()
        for place in places:
            while not place.exists() and place != place.parent:
                place = place.parent
            if place in seen:
                continue
            seen.add(place)
            free = shutil.disk_usage(place).free
            out.append(Check(f"disk_low:{place}", "disk_low", free >= self.opts.disk_min_free_bytes,
                             f"{free // 2**20} MiB free under {place} (disk_min_free_bytes "
                             f"{self.opts.disk_min_free_bytes // 2**20} MiB)"))
        return out

    def _heartbeats(self, status: dict[str, Any]) -> list[Check]:
        limit = self.opts.heartbeat_max_age_s
        return [Check(f"heartbeat_stale:{name}", "heartbeat_stale", w["heartbeat_age_s"] <= limit,
                      f"the loop of {name} last turned {w['heartbeat_age_s']:.0f} s ago")
                for name, w in status["workers"].items() if w.get("heartbeat_age_s") is not None]


def answers(es: Elasticsearch) -> bool:
    """Whether Elasticsearch answers (``_cluster/health``: what every node serves; an error
    status below 500 is an answer too)."""
    try:
        es.cluster.health()
    except (EsConnectionError, ConnectionTimeout):
        return False
    except ApiError as exc:
        return int(exc.meta.status) < 500
    return True


def slope(points: list[tuple[float, float]]) -> float:
    """The least-squares slope of (time, value) points, per second."""
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (v - mv) for t, v in points) / var if var else 0.0
