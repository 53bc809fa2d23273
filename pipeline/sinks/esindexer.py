"""The Elasticsearch indexer: records into Elasticsearch exactly once.

Every document gets a deterministic ``_id`` (for a line's record, its service, source file
identity and byte offset, in the scheme its index uses: see :mod:`pipeline.sinks.esids`; for
records without those, a sha1 of the configured ``id_fields``, else of the whole record) and is
sent with op type ``create``, so a retry or a redelivery after a crash never makes a second
document: a 409 counts as delivered. Per-item results are read:
429/502/503/504 are retried (only those items) with capped exponential backoff and jitter; any
other rejection (a mapping or parse error) dead-letters that document with Elasticsearch's
reason. The batch is acknowledged only when every document is indexed, already there, or
dead-lettered; while Elasticsearch is down the worker holds the batches in hand and takes no
more. Small messages (an application's single records) that are queued are gathered into bulks
of up to ``batch_docs`` documents; with ``flush_ms`` the indexer also waits that long for more.

With ``bulks_in_flight`` above 1 (the default is 2), while Elasticsearch works on one bulk the
indexer takes the next batch queued, makes its bulk and sends it too, so that the node is never
idle waiting for us; batches are acknowledged in the order taken. A crash takes back every batch
in hand, and the ids make the redelivery of one already indexed a row of 409s, not a double.
The index a record goes to is its ``index`` pattern filled from its time
(:mod:`pipeline.sinks.indexnames`).
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from elastic_transport import ConnectionError as EsConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, Elasticsearch
from elasticsearch.serializer import OrjsonSerializer

from pipeline.config import Config, ProgramConfig
from pipeline.config import datatypes as dt
from pipeline.config.options import key as option
from pipeline.core import message
from pipeline.core.lifecycle import Flags
from pipeline.core.queue import Consumer, Delivery, Outcome
from pipeline.core.retry import Retry
from pipeline.core.stats import Stats
from pipeline.core.worker import Finish, Starter, run_consumer
from pipeline.registry import Component
from pipeline.sinks.esids import RETRYABLE, SCHEMES, IdSchemes, document_id
from pipeline.sinks.indexnames import index_name


@dataclass(frozen=True)
class EsIndexerOptions:
    listento: str = option(dt.name, "queue the records come from")
    index: str = option(dt.nonempty, "index name; strftime codes use the event's own time", "loglines-%Y.%m.%d")
    hosts: tuple[str, ...] = option(dt.string_list, "Elasticsearch URLs", ("http://127.0.0.1:9200",))
    username: str = option(str, "basic-auth user", "")
    password: str = option(str, "basic-auth password", "")
    api_key: str = option(str, "API key (instead of username/password)", "")
    ca_certs: str = option(str, "CA bundle for https", "")
    verify_certs: bool = option(dt.boolean, "verify the server's certificate", True)
    pipeline: str = option(str, "ingest pipeline applied to every document", "")
    batch_docs: int = option(dt.integer(1, 100_000), "documents per bulk request at most", 1000)
    batch_bytes: int = option(dt.byte_size, "bytes per bulk request at most", 5 * 1024 * 1024)
    flush_ms: int = option(dt.integer(0, 60_000), "how long to wait for more small messages to make a bulk "
                           "of (0: take what is queued, never wait)", 0)
    time_field: str = option(dt.nonempty, "record field with the event time (ISO 8601)", "time")
    id_fields: tuple[str, ...] = option(dt.string_list, "fields hashed into the id of records without a line id", ())
    max_age_days: int = option(dt.integer(1, 100_000), "records older than this go to <index>-out-of-range "
                               "(raise it to backfill older history into dated indices)", 400)
    max_ahead_days: int = option(dt.integer(0, 100_000), "records further ahead go there too", 2)
    request_timeout: float = option(dt.number(1), "seconds per bulk request (within stopwaitsecs)", 20.0)
    max_backoff: float = option(dt.number(1), "longest wait between retries, seconds", 60.0)
    template: str = option(dt.choice("none", "access", "kontext"),
                        "index template 'loglines es setup' installs for this index", "none")
    id_scheme: str = option(dt.choice(*SCHEMES), "ids of lines' records: ordered for new indices and sha1 "
                            "for those that hold sha1 ids (auto), or one scheme everywhere", "auto")
    bulks_in_flight: int = option(dt.integer(1, 8), "bulk requests sent before the first is answered (the next "
                                  "batch's is made and sent while the node works on one)", 2)

log = logging.getLogger(__name__)


def client(opts: EsIndexerOptions) -> Elasticsearch:
    kwargs: dict[str, Any] = {"request_timeout": opts.request_timeout, "max_retries": 0,
                              "verify_certs": opts.verify_certs, "serializer": OrjsonSerializer()}
    if opts.api_key:
        kwargs["api_key"] = opts.api_key
    elif opts.username:
        kwargs["basic_auth"] = (opts.username, opts.password)
    if opts.ca_certs:
        kwargs["ca_certs"] = opts.ca_certs
    return Elasticsearch(list(opts.hosts), **kwargs)


def status_label(status: int) -> str:
    """A status as a label value of bounded range: the code for those that matter, else its class."""
    return str(status) if status in (400, 404, 409, 413, 429, 500, 502, 503, 504) else f"{status // 100}xx"


#: A document's operation: its action and source lines (NDJSON), and whether the source got an
#: ``@timestamp`` added. The record itself is not kept (a bulk in flight holds its bytes only):
#: :func:`record_of` makes it again for the document Elasticsearch refuses.
Op = tuple[bool, bytes]


def record_of(op: Op) -> dict[str, Any]:
    """The record an operation was made of, as it came (for its dead letter)."""
    stamped, lines = op
    record: dict[str, Any] = orjson.loads(lines[lines.index(b"\n") + 1:])
    if stamped:
        record.pop("@timestamp", None)
    return record


class Background:
    """A call run in a thread of its own (a bulk request while the worker makes the next):
    :meth:`result` waits for it, then returns what it returned or raises what it raised."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.started = time.monotonic()
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), name="bulk", daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self._value = call()
        except BaseException as exc:  # handed to the worker's thread, raised there
            self._error = exc

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._value


class Indexer:
    def __init__(self, opts: EsIndexerOptions, es: Elasticsearch, flags: Flags, name: str,
                 stats: Stats | None = None) -> None:
        self.opts, self.es, self.flags, self.name = opts, es, flags, name
        self.stats = stats  # bulk latency and rejections, for the monitor
        self.ids = IdSchemes(es, opts.id_scheme, name, flags, opts.max_backoff)
        self._heads: dict[str, bytes] = {}  # index -> its action line's start (_head)

    def operations(self, records: list[dict[str, Any]]) -> tuple[list[Op], list[tuple[dict[str, Any], str]]]:
        """The operation of every record (:data:`Op`: the record is not kept, only its lines),
        and the records that cannot be encoded (with why): those are dead-lettered alone, the
        rest of the bulk goes on."""
        opts, dumps, ordered = self.opts, orjson.dumps, self.ids.ordered
        pattern, time_field, id_fields = opts.index, opts.time_field, opts.id_fields
        out = []
        bad = []
        for record in records:
            try:
                index = index_name(pattern, record, time_field, opts.max_age_days, opts.max_ahead_days)
                head = self._heads.get(index) or self._head(index)
                doc_id = document_id(record, id_fields, ordered(index))
                source = dumps(record)
            except (orjson.JSONEncodeError, TypeError, ValueError) as exc:
                bad.append((record, f"cannot be encoded as JSON: {exc}"))
                continue
            stamp = record.get(time_field)
            if "@timestamp" not in record and isinstance(stamp, str) and len(source) > 2:
                out.append((True, b"".join((head, dumps(doc_id), b"}}\n", source[:-1], b',"@timestamp":',
                                            dumps(stamp), b"}\n"))))
            else:
                out.append((False, b"".join((head, dumps(doc_id), b"}}\n", source, b"\n"))))
        return out, bad

    def _head(self, index: str) -> bytes:
        """The action line of a document of ``index`` up to its id: ``{"create":{...,"_id":``."""
        action: dict[str, Any] = {"_index": index}
        if self.opts.pipeline:
            action["pipeline"] = self.opts.pipeline
        if len(self._heads) > 4096:
            self._heads.clear()
        head = self._heads[index] = b'{"create":' + orjson.dumps(action)[:-1] + b',"_id":'
        return head

    def chunks(self, ops: list[Op]) -> list[list[Op]]:
        out: list[list[Op]] = [[]]
        size = 0
        for op in ops:
            if out[-1] and (len(out[-1]) >= self.opts.batch_docs or size + len(op[1]) > self.opts.batch_bytes):
                out.append([])
                size = 0
            out[-1].append(op)
            size += len(op[1])
        return [c for c in out if c]

    def index(self, records: list[dict[str, Any]], worker: str, queue: str) -> list[bytes]:
        """Index every record or dead-letter it; the dead-letter entries."""
        return self.begin(records, worker, queue)()

    def begin(self, records: list[dict[str, Any]], worker: str, queue: str,
              background: bool = False) -> Callable[[], list[bytes]]:
        """Make the bulk of ``records`` and, in the ``background``, send its first request
        already; what waits for every record to be indexed or dead-lettered (the entries)."""
        ops, bad = self.operations(records)
        dead = [message.dead_letter(reason=f"the record {why}", worker=worker, queue=queue, item=record)
                for record, why in bad]
        chunks = self.chunks(ops)
        first = Background(functools.partial(self._send, chunks[0])) if background and chunks else None

        def finish() -> list[bytes]:
            for n, chunk in enumerate(chunks):
                dead.extend(self._bulk_until_done(chunk, worker, queue, first if n == 0 else None))
            return dead

        return finish

    def _send(self, pending: list[Op]) -> Any:
        # the NDJSON lines made once above, as they are: the client copies them into its one
        # body (joining them here first would hold a second copy of the bulk); its annotation
        # only names the list-of-dicts form
        return self.es.bulk(operations=[op for _, op in pending],  # type: ignore[misc]
                            filter_path="errors,items.*.status,items.*.error")

    def _bulk_until_done(self, pending: list[Op], worker: str, queue: str,
                         sent: Background | None = None) -> list[bytes]:
        """Send ``pending`` until every document is in or dead-lettered; ``sent``: its first
        request, already on its way."""
        dead: list[bytes] = []
        retrying = Retry(self.name, self.flags, base=0.5, cap=self.opts.max_backoff)
        while pending:
            retry: list[Op] = []
            started = time.monotonic() if sent is None else sent.started
            try:
                request, sent = sent, None  # a retry sends again
                response = self._send(pending) if request is None else request.result()
                results = response.get("items") or [] if response.get("errors") else None
            except (EsConnectionError, ConnectionTimeout) as exc:
                retry, reason = pending, f"Elasticsearch unreachable ({type(exc).__name__})"
                self._count("es_bulk_errors:" + ("timeout" if isinstance(exc, ConnectionTimeout) else "connection"))
            except ApiError as exc:
                self._count(f"es_bulk_errors:{status_label(exc.meta.status)}")
                if exc.meta.status not in RETRYABLE:
                    raise
                retry, reason = pending, f"Elasticsearch answered {exc.meta.status} to the bulk request"
            else:
                reason = ""
                if self.stats is not None:
                    self.stats.observe("es_bulk_seconds", time.monotonic() - started)
                for op, result in zip(pending, results or (), strict=results is not None):
                    outcome = result.get("create") or next(iter(result.values()))
                    status = int(outcome.get("status", 0))
                    if 200 <= status < 300 or status == 409:
                        continue
                    self._count(f"es_rejected:{status_label(status)}")
                    if status in RETRYABLE:
                        retry.append(op)
                        reason = f"Elasticsearch rejected {len(retry)} document(s) with {status}"
                        continue
                    error = outcome.get("error") or {}
                    dead.append(message.dead_letter(
                        reason=f"Elasticsearch refused the document ({status} {error.get('type', '?')}): "
                               f"{error.get('reason', '')}",
                        worker=worker, queue=queue, item=record_of(op),
                        detail=orjson.dumps(error).decode()[:4000]))
            if retry:
                # a failed request leaves reference cycles (exception, traceback, frames) that
                # hold the bulk body; an idle worker allocates too little to trigger the
                # collector, so each retry would keep one more body alive: collect now
                gc.collect()
                retrying.failed(f"{reason}; retrying {len(retry)} document(s)")
            pending = retry
        if dead:
            log.warning("%s: %d document(s) dead-lettered", self.name, len(dead))
        return dead

    def _count(self, name: str) -> None:
        if self.stats is not None:
            self.stats.count(name)


def run(cfg: Config, program: ProgramConfig[EsIndexerOptions], flags: Flags) -> int:
    opts: EsIndexerOptions = program.options

    def make_starter(consumer: Consumer, flags: Flags) -> Starter:
        indexer = Indexer(opts, client(opts), flags, program.name, consumer.stats)

        def start(delivery: Delivery) -> Finish:
            records = delivery.items or []
            count = len(records)
            finish = indexer.begin(records, consumer.id, opts.listento, background=opts.bulks_in_flight > 1)
            del records
            delivery.release()  # the bulk holds its documents' bytes: the records go

            def outcome() -> Outcome:
                dead = finish()
                return Outcome(dead=dead, count=count, out=count - len(dead))

            return outcome

        return start

    return run_consumer(cfg, program, opts.listento, None, flags, gather_items=opts.batch_docs,
                        linger=opts.flush_ms / 1000, make_starter=make_starter, in_flight=opts.bulks_in_flight)


COMPONENT = Component(
    "esindexer", "indexes records into Elasticsearch, exactly once", EsIndexerOptions, run,
    reads=("listento",), blocking=("request_timeout",))
