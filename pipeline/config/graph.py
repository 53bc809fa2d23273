"""The pipeline as queues between workers: who pushes to each queue, who reads it, and what
``loglines check`` says about it.

Each worker type's component names the keys holding the queues it reads and writes, so the
graph comes from the registry. A queue is a Redis list on one server: ``access`` on ``[redis]``
and ``access`` on ``[redis_b]`` are two queues. What is wrong:

* two sections reading one queue split it (each message reaches only one of them), unless each
  says the split is meant (``shared_queue = yes``); the processes of one section
  (``numprocs``) share their queue as they should;
* a worker pushing to the queue it reads sends its messages round forever;
* a queue pushed to that nothing reads piles up, one read that nothing pushes to stays empty
  (often a typo: ``download`` and ``downloads``), unless ``[loglines] external_queues`` says an
  outside program is at the other end;
* a queue whose readers (or writers) are all disabled (no link in ``workers_enabled/``) piles up
  (or stays empty) the same way until one is enabled.

The first two are errors; the others are warnings.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import dataclass

from pipeline import registry
from pipeline.config.model import Config


@dataclass(frozen=True)
class Problem:
    error: bool  # an error stops check, up and reload; a warning is said
    message: str


@dataclass
class _Queue:
    name: str
    server: str  # the [redis] section it is on
    readers: list[str]
    writers: list[str]


def queues(cfg: Config) -> list[_Queue]:
    """Every queue a worker reads or pushes to, with its readers and writers (section names)."""
    found: dict[tuple[str, str, str], _Queue] = {}
    for program in cfg.programs.values():
        if not program.type:
            continue
        component = registry.get(program.type)
        rc = cfg.redis_for(program)
        for names, role in ((component.read_queues(program.options), "readers"),
                            (component.written_queues(program.options), "writers")):
            for name in names:
                # two [redis_X] sections naming one server and prefix hold the same lists
                queue = found.setdefault((rc.connection_url(), rc.prefix, name),
                                         _Queue(name, rc.name, [], []))
                getattr(queue, role).append(program.name)
    return list(found.values())


def check(cfg: Config, enabled: Collection[str] | None = None) -> list[Problem]:
    """What is wrong with the pipeline's queues: errors first, then warnings; with ``enabled``
    (the sections supervisord runs), also the queues only disabled workers would serve."""
    graph = queues(cfg)
    several_servers = len({q.server for q in graph}) > 1
    external = set(cfg.external_queues)
    out: list[Problem] = []

    def called(queue: _Queue) -> str:
        return f"`{queue.name}`" + (f" on [{queue.server}]" if several_servers else "")

    for queue in graph:
        for name in sorted(set(queue.readers) & set(queue.writers)):
            out.append(Problem(True, f"[{name}] reads and pushes to queue {called(queue)}: its "
                                     "messages would come back to it forever"))
        readers = _unique(queue.readers)
        if len(readers) > 1:
            unmeant = [n for n in readers if not cfg.programs[n].shared_queue]
            if unmeant:
                out.append(Problem(True, f"queue {called(queue)} is read by {_and(readers)}: each "
                                         "message reaches only one of them; use a broker `fanout` or "
                                         "chain them (if each message is meant for only one of them, "
                                         f"set `shared_queue = yes` in {_and(unmeant)})"))
        elif readers and cfg.programs[readers[0]].shared_queue:
            out.append(Problem(False, f"[{readers[0]}] says shared_queue = yes, but no other section "
                                      f"reads queue {called(queue)}"))
    for queue in graph:
        if queue.name in external:
            continue
        if queue.writers and not queue.readers:
            near = _near(queue, [q for q in graph if q.readers and not q.writers])
            hint = f" (did you mean `{near.name}`, read by {_and(near.readers)}?)" if near else ""
            out.append(Problem(False, f"queue {called(queue)} is pushed to by {_and(_unique(queue.writers))} "
                                      f"and read by no worker: its messages pile up in Redis{hint}; "
                                      "if a program of your own reads it, name it in "
                                      "`[loglines] external_queues`"))
        elif queue.readers and not queue.writers:
            near = _near(queue, [q for q in graph if q.writers and not q.readers])
            hint = f" (did you mean `{near.name}`, pushed to by {_and(near.writers)}?)" if near else ""
            out.append(Problem(False, f"queue {called(queue)} is read by {_and(_unique(queue.readers))} "
                                      f"and pushed to by no worker: nothing will arrive{hint}; if a "
                                      "program of your own pushes to it, name it in "
                                      "`[loglines] external_queues`"))
        elif enabled is not None:
            out += _disabled_end(queue, enabled, called(queue))
    used = {q.name for q in graph}
    for name in cfg.external_queues:
        if name not in used:
            out.append(Problem(False, f"`[loglines] external_queues` names `{name}`, which no worker "
                                      "reads or pushes to"))
    return sorted(out, key=lambda p: not p.error)


def _disabled_end(queue: _Queue, enabled: Collection[str], called: str) -> list[Problem]:
    readers, writers = _unique(queue.readers), _unique(queue.writers)
    readers_on, writers_on = [n for n in readers if n in enabled], [n for n in writers if n in enabled]
    if writers_on and not readers_on:
        return [Problem(False, f"queue {called} is read only by {_and(readers)}, not enabled (no link in "
                               f"workers_enabled/): what {_and(writers_on)} pushes piles up in Redis "
                               f"until it is (`loglines enable {readers[0]}`)")]
    if readers_on and not writers_on:
        return [Problem(False, f"queue {called} is pushed to only by {_and(writers)}, not enabled (no "
                               f"link in workers_enabled/): nothing arrives for {_and(readers_on)} "
                               f"until it is (`loglines enable {writers[0]}`)")]
    return []


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _near(queue: _Queue, candidates: list[_Queue]) -> _Queue | None:
    same_server = {q.name: q for q in candidates if q.server == queue.server}
    match = difflib.get_close_matches(queue.name, list(same_server), n=1, cutoff=0.7)
    return same_server[match[0]] if match else None

