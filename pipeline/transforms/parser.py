"""The parser worker: runs a plugin on every item of a batch and fans the records out.

Records go to every queue in ``pushto``; items the plugin does not want (empty result, or a
record failing ``accept``) go to ``other_queue`` when one is set. An item the plugin raises
on goes to the dead-letter list with the plugin's name and the traceback; the rest of the batch
flows on. All of it is acknowledged in one transaction.
"""

from __future__ import annotations

import difflib
import logging
import reprlib
import signal
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from pipeline.config import Config, ProgramConfig
from pipeline.config import datatypes as dt
from pipeline.config.options import key as option
from pipeline.core import message
from pipeline.core.lifecycle import Flags
from pipeline.core.queue import Consumer, Delivery, Outcome
from pipeline.core.worker import Handler, run_consumer
from pipeline.errors import ConfigError
from pipeline.plugin import Plugin
from pipeline.plugin import load as load_plugin
from pipeline.registry import Component, Section


@dataclass(frozen=True)
class ParserOptions:
    listento: str = option(dt.name, "queue the raw lines come from")
    pushto: tuple[str, ...] = option(dt.name_list, "queue(s) each parsed record goes to (fan-out)")
    plugin: str = option(dt.nonempty, "plugin: built-in short name, plugins/ module or dotted path")
    other_queue: str = option(dt.name, "queue for items the plugin does not want", "")
    accept: tuple[str, ...] = option(dt.string_list, "only records with field=value (value|value) go to pushto", ())
    plugin_timeout_s: float = option(dt.number(0), "per-item time limit for the plugin; 0: none", 0.0)

log = logging.getLogger(__name__)

CARRIED = frozenset(("service", "src", "off", "logline"))  # item fields every record keeps


class PluginTimeout(Exception):
    pass


def plugin_for(cfg: Config, program: ProgramConfig[ParserOptions]) -> Plugin:
    opts: ParserOptions = program.options
    plugin = load_plugin(opts.plugin, cfg.plugin_dirs, cfg.plugin_options(program.name))
    check_accept(cfg, program, plugin)
    return plugin


def check_accept(cfg: Config, program: ProgramConfig[ParserOptions], plugin: Plugin) -> None:
    """``accept`` against the fields and values the plugin declares (its ``FIELDS``): a field it
    never makes or a value it never gives would send every record to ``other_queue``."""
    if plugin.fields is None:
        return
    known: dict[str, frozenset[str] | None] = {**dict.fromkeys(CARRIED), **plugin.fields}
    names = sorted(k for k in known if k != "*")
    for rule, (field, values) in zip(program.options.accept, accept_rules(program.options), strict=True):
        if field not in known:
            if "*" in known:
                continue  # records carry their input's fields too: any field may be there
            raise ConfigError(f"plugin {plugin.name} makes no field {field!r} ({_near(field, names)}"
                              f"its fields: {', '.join(names)})", file=str(cfg.path),
                              section=program.name, key="accept", value=rule)
        allowed = known[field]
        unknown = sorted(values - allowed) if allowed is not None else []
        if allowed is not None and unknown:
            raise ConfigError(f"plugin {plugin.name} never gives {field} the value {unknown[0]!r} "
                              f"({_near(unknown[0], sorted(allowed))}it gives: "
                              f"{', '.join(map(repr, sorted(allowed)))})", file=str(cfg.path),
                              section=program.name, key="accept", value=rule)


def _near(word: str, known: list[str]) -> str:
    near = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f"did you mean {near[0]!r}? " if near else ""


def accept_rules(opts: ParserOptions) -> list[tuple[str, frozenset[str]]]:
    rules = []
    for rule in opts.accept:
        field, _, values = rule.partition("=")
        rules.append((field.strip(), frozenset(v.strip() for v in values.split("|"))))
    return rules


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt a plugin call that hangs. The one handler that raises: it must interrupt."""
    if seconds <= 0:
        yield
        return

    def expired(signum: int, frame: FrameType | None) -> None:
        raise PluginTimeout(f"plugin took longer than {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _item_of(record: dict[str, Any]) -> dict[str, Any]:
    """What a dead letter keeps of a record that cannot be encoded: the line it came from."""
    return {k: record[k] for k in CARRIED if k in record} or {"unencodable": reprlib.repr(record)}


def make_processor(
    plugin: Plugin, opts: ParserOptions, worker: str, max_bytes: int = 1 << 20
) -> Callable[[list[message.Element], str], Outcome]:
    """What the worker does with a delivery's elements: runs of lines through the plugin's
    ``parse_batch`` when it has one (no item made per line), everything else item by item."""
    parse, batch, rules, other_queue = plugin.parse, plugin.parse_batch, accept_rules(opts), opts.other_queue
    timeout = opts.plugin_timeout_s
    refused_batch: list[str] = []  # why parse_batch last raised (logged once per process)

    def one(item: message.Item, source: str, records: list[dict[str, Any]], others: list[Any],
            dead: list[bytes]) -> None:
        try:
            if timeout:
                with time_limit(timeout):
                    record = parse(item)
            else:
                record = parse(item)
        except Exception as exc:
            dead.append(message.dead_letter(
                reason=f"plugin {plugin.name} raised {type(exc).__name__}: {exc}",
                worker=worker, queue=source, item=item,
                detail=traceback.format_exc(limit=4)))
            return
        if not record:
            others.append(item)
            return
        if type(record) is not dict:
            record = dict(record)
        for key in CARRIED:
            if key not in record and key in item:
                record[key] = item[key]
        if rules and not all(str(record.get(f)) in allowed for f, allowed in rules):
            others.append(record)
            return
        records.append(record)

    def run_of(run: message.Run, source: str, records: list[dict[str, Any]], others: list[Any],
               dead: list[bytes]) -> None:
        assert batch is not None
        lines = run.lines
        try:
            if timeout:
                with time_limit(timeout):
                    results = batch(lines)
            else:
                results = batch(lines)
            if len(results) != len(lines):
                raise ValueError(f"parse_batch gave {len(results)} results for {len(lines)} lines")
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            if why not in refused_batch:
                refused_batch[:] = [why]
                log.warning("%s: plugin %s's parse_batch raised %s; that run done line by line",
                            worker, plugin.name, why)
            for item in run.items():
                one(item, source, records, others, dead)
            return
        service, src = run.service, run.src
        add = records.append
        for off, line, record in zip(run.offsets(), lines, results, strict=False):
            if type(record) is not dict or not record:
                item = {"service": service, "src": src, "off": off, "logline": line}
                if isinstance(record, BaseException):
                    dead.append(message.dead_letter(
                        reason=f"plugin {plugin.name} raised {type(record).__name__}: {record}",
                        worker=worker, queue=source, item=item))
                    continue
                if not record:
                    others.append(item)
                    continue
                record = dict(record)  # a mapping of another kind
            if "service" not in record:
                record["service"] = service
            if "src" not in record:
                record["src"] = src
            if "off" not in record:
                record["off"] = off
            if "logline" not in record:
                record["logline"] = line
            if not rules or all(str(record.get(f)) in allowed for f, allowed in rules):
                add(record)
            else:
                others.append(record)

    def process(elements: list[message.Element], source: str) -> Outcome:
        records: list[dict[str, Any]] = []
        others: list[Any] = []
        dead: list[bytes] = []
        count = 0
        for element in elements:
            if type(element) is message.Run:
                count += len(element.lines)
                if batch is not None:
                    run_of(element, source, records, others, dead)
                else:
                    for item in element.items():
                        one(item, source, records, others, dead)
            else:
                count += 1
                one(element, source, records, others, dead)  # type: ignore[arg-type]
        pushes = []
        out = 0  # records passed on, each copy counted
        if records:
            payloads, bad = message.pack(records, max_bytes)
            pushes = [(queue, payload) for queue in opts.pushto for payload in payloads]
            out += (len(records) - len(bad)) * len(opts.pushto)
            dead += [message.dead_letter(reason=f"plugin {plugin.name} made a record that {why}",
                                         worker=worker, queue=source, item=_item_of(record))
                     for record, why in bad]
        if others and other_queue:
            payloads, bad = message.pack(others, max_bytes)
            pushes += [(other_queue, payload) for payload in payloads]
            out += len(others) - len(bad)
            dead += [message.dead_letter(reason=f"an item for {other_queue} {why}", worker=worker,
                                         queue=source, item=_item_of(record)) for record, why in bad]
        if dead:
            log.warning("%s: %d item(s) dead-lettered by plugin %s", worker, len(dead), plugin.name)
        return Outcome(pushes=pushes, dead=dead, count=count, out=out)

    return process


def run(cfg: Config, program: ProgramConfig[ParserOptions], flags: Flags) -> int:
    opts: ParserOptions = program.options
    plugin = plugin_for(cfg, program)

    def make_handler(consumer: Consumer, _flags: Flags) -> Handler:
        process = make_processor(plugin, opts, consumer.id, consumer.cfg.message_bytes)

        def handle(delivery: Delivery) -> Outcome:
            return process(delivery.elements, opts.listento)

        return handle

    return run_consumer(cfg, program, opts.listento, make_handler, flags, work_ahead=True)


def prepare(values: dict[str, Any], section: Section) -> dict[str, Any]:
    for rule in values["accept"]:
        if "=" not in rule:
            raise section.error("expected field=value or field=value1|value2", "accept", rule)
    return values


COMPONENT = Component(
    "parser", "runs a plugin on every item and fans the records out", ParserOptions, run,
    reads=("listento",), writes=("pushto", "other_queue"), plugin=plugin_for, plugin_options=True,
    aliases={"repository_plugin": "plugin"}, prepare=prepare)
