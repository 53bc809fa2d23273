"""The routes of the API worker.

``GET /healthz``; ``GET /metrics`` (request metrics, :mod:`pipeline.core.httpstats`, and the
reports and exports made); ``GET /v1/events`` (every event selected, streamed: JSON, NDJSON,
CSV or TSV), ``GET /v1/events/<id>``, ``DELETE /v1/events/<id>`` and ``DELETE
/v1/events?<selection>`` (admin token; audited); ``GET /v1/analytics/count``, ``/top``,
``/unique``; and COUNTER_SUSHI 5.1 under ``/counter/r51/``: ``status``, ``reports``,
``reports/pr``, ``pr_p1``, ``ir``, ``ir_a1``.

Elasticsearch is called from worker threads, so a slow request never holds the others; streams
and reports share ``max_concurrent_reports`` slots (then 503). An answer other than success is
JSON naming what is wrong, ``{"error", "status", "parameter"}``, or on the SUSHI paths a COUNTER
Exception (``{"Code", "Message", "Data"}``); never a stack trace (that goes to the log).

Requests are counted by route template (:func:`route_of`: ``/v1/events/{id}``, never the id).
The counts go to the ``stats`` hash of the worker's Redis (``[redis]`` or the section's
``redis``), which the worker needs for nothing else: while it does not answer, queries are
answered as ever, the counts wait in memory and ``/metrics`` is a 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Callable, Generator, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import orjson
from elastic_transport import ConnectionError as EsConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError
from prometheus_client.core import CounterMetricFamily, Metric

from pipeline.config import RedisConfig
from pipeline.core.connection import connect_async
from pipeline.core.http import (
    HttpError,
    Receive,
    Request,
    Scope,
    Send,
    Stream,
    Tokens,
    answer,
    answer_json,
    lifespan,
)
from pipeline.core.httpstats import RequestStats
from pipeline.core.keys import Keys
from pipeline.core.logsetup import safe
from pipeline.core.stats import figures as stats_figures
from pipeline.monitor import metrics
from pipeline.query import analytics, events, reports, sushi, tabular, usage
from pipeline.query.api import ApiOptions, counter_settings
from pipeline.query.formats import CONTENT_TYPES, FORMATS, Writer, default_columns, negotiate, table
from pipeline.query.params import ALL_TIME, ParamError, Selection, iso, selection, sorting
from pipeline.query.source import Source

log = logging.getLogger(__name__)
T = TypeVar("T")
EXPORT_PAGE = 2000
COUNTER = "/counter"  # the base URL of the SUSHI paths
SUSHI = COUNTER + "/r51/"
#: route template -> the methods it takes; ``/v1/events/{id}`` stands for every event's path
ROUTES = {"/healthz": "GET", "/metrics": "GET", "/v1/events": "GET|DELETE", "/v1/events/{id}": "GET|DELETE",
          "/v1/analytics/count": "GET", "/v1/analytics/top": "GET", "/v1/analytics/unique": "GET"}
#: the SUSHI paths' templates (they take GET)
SUSHI_ROUTES = (SUSHI + "status", SUSHI + "reports", SUSHI + "reports/{report}")


def route_of(path: str) -> str:
    """The route template that answers ``path`` (the ``endpoint`` label of the request
    metrics), ``other`` for a path no route answers."""
    path = path.rstrip("/") or "/"
    if path in ROUTES or path in SUSHI_ROUTES:
        return path
    if path.startswith("/v1/events/"):
        return "/v1/events/{id}"
    if path.startswith(SUSHI + "reports/"):
        return SUSHI + "reports/{report}"
    return "other"


def _flag(values: dict[str, list[str]], name: str) -> bool:
    return (values.get(name) or ["no"])[-1].lower() in ("1", "yes", "true", "on")


def _int(values: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    text = (values.get(name) or [str(default)])[-1]
    if not text.isdigit() or not low <= int(text) <= high:
        raise ParamError(name, f"{text[:20]!r}: expected a whole number from {low} to {high:,}")
    return int(text)


def _fields(values: dict[str, list[str]]) -> list[str]:
    return [f.strip() for f in ",".join(values.get("fields") or []).split(",") if f.strip()]


class Api:
    """The ASGI application of one ``api`` worker."""

    def __init__(self, name: str, opts: ApiOptions, src: Source, read: Tokens, admin: Tokens | None,
                 rcfg: RedisConfig) -> None:
        self.name, self.opts, self.src, self.read, self.admin, self.rcfg = name, opts, src, read, admin, rcfg
        self.settings = counter_settings(opts)
        self.slots = asyncio.Semaphore(opts.max_concurrent_reports)
        self.requests = RequestStats(name, Keys(rcfg.prefix))  # flushed through a client made at start-up

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def _startup(self) -> None:
        self.requests.start(connect_async(self.rcfg))

    async def _shutdown(self) -> None:
        await self.requests.stop()
        await self.requests.client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, self._startup, self._shutdown)
            return
        if scope["type"] != "http":
            return
        request = Request.of(scope, receive)
        with self.requests.counting(send, route_of(request.path), request.method) as counted:
            await self._answer(request, receive, counted)

    async def _answer(self, request: Request, receive: Receive, send: Send) -> None:
        counter = request.path.startswith(SUSHI)
        try:
            await self._route(request, receive, send)
        except sushi.SushiError as error:
            await answer_json(send, error.status, error.json())
        except ParamError as error:
            if counter:
                await answer_json(send, 400, sushi.SushiError(1030, str(error)).json())
            else:
                await answer_json(send, 400, {"error": str(error), "status": 400, "parameter": error.param})
        except HttpError as error:
            if counter and error.status in (401, 503):
                code, data = (2020, "api_key is missing or not valid") if error.status == 401 else (1010, error.message)
                await answer_json(send, error.status, sushi.SushiError(code, data).json(), error.headers)
            else:
                await answer_json(send, error.status, {"error": error.message, "status": error.status}, error.headers)
        except ApiError as exc:
            log.warning("%s: %s %s: Elasticsearch: %s", self.name, request.method, safe(request.path, 200), safe(exc))
            refused = exc.meta.status == 400  # a query it cannot run (a field of the wrong type, ...)
            reason = f"Elasticsearch refused the query: {safe(exc.message, 300)}" if refused else \
                f"Elasticsearch answered {exc.meta.status}"
            body = sushi.SushiError(1000, reason).json() if counter else {"error": reason, "status": 400 if refused else 503}
            await answer_json(send, 400 if refused and not counter else 503, body, None if refused else {"Retry-After": "5"})
        except (EsConnectionError, ConnectionTimeout) as exc:
            log.warning("%s: %s %s: Elasticsearch: %s", self.name, request.method, safe(request.path, 200), safe(exc))
            body = sushi.SushiError(1000, "Elasticsearch did not answer").json() if counter else {
                "error": "Elasticsearch is unreachable", "status": 503}
            await answer_json(send, 503, body, {"Retry-After": "5"})
        except Exception:  # whatever it was goes to the log; the client gets JSON, never a trace
            log.exception("%s: %s %s failed", self.name, request.method, safe(request.path, 200))
            try:
                await answer_json(send, 500, sushi.SushiError(1000, "internal error").json() if counter else
                                  {"error": "internal error (the API worker's log has it)", "status": 500})
            except RuntimeError:
                pass  # the answer had started

    def _who(self, request: Request, params: dict[str, list[str]] | None = None) -> tuple[str, bool]:
        """(token name, is admin), or 401. On SUSHI paths ``api_key`` (or ``requestor_id``) may
        carry the token too, as COUNTER_SUSHI clients send it."""
        headers = dict(request.headers)
        if params is not None and not (headers.get("authorization") or headers.get("x-api-key")):
            given = (params.get("api_key") or params.get("requestor_id") or [""])[-1]
            headers["x-api-key"] = given
        if self.admin is not None and (name := self.admin.name_of(headers)) is not None:
            return name, True
        if (name := self.read.name_of(headers)) is not None:
            return name, False
        raise HttpError(401, "a valid token is needed (Authorization: Bearer <token>)",
                        {"WWW-Authenticate": 'Bearer realm="loglines"'})

    async def _route(self, request: Request, receive: Receive, send: Send) -> None:
        path, method = request.path.rstrip("/") or "/", request.method
        params = request.params()
        if path.startswith(SUSHI.rstrip("/")):
            await self._counter(request, path[len(COUNTER):], params, send)
            return
        who, admin = self._who(request)  # first: nothing, not even a 404, answers unasked
        allowed = ROUTES.get(route_of(path))
        if allowed is None:
            raise HttpError(404, f"no such endpoint: {path[:200]}")
        if method not in allowed.split("|"):
            raise HttpError(405, f"{path} takes {allowed.replace('|', ' or ')}", {"Allow": allowed.replace("|", ", ")})
        if path == "/healthz":
            health = await self.call(lambda: dict(self.src.es.cluster.health()))
            await answer_json(send, 200, {"elasticsearch": health.get("status"), "index": self.src.index})
        elif path == "/metrics":
            await answer(send, 200, await self._metrics(), metrics.CONTENT_TYPE)
        elif path.startswith("/v1/events/"):
            doc_id = urllib.parse.unquote(path[len("/v1/events/"):])
            if method == "DELETE":
                await self._delete(Selection(*ALL_TIME, ids=(doc_id,)), params, who, admin, send)
                return
            hit = await self.call(events.get, self.src, doc_id)
            if hit is None:
                raise HttpError(404, f"no event {doc_id[:100]!r} in {self.src.index}")
            await answer_json(send, 200, hit)
        elif method == "DELETE":
            if not admin:
                raise HttpError(403, "deleting needs an admin token (admin_tokens_file)")
            known = await self.call(self.src.fields)
            sel = selection(params, ("dry_run",), None, set(known))
            if not sel.narrowed and not (params.get("from") or params.get("to") or params.get("range")):
                raise ParamError("from", "a delete names what it deletes: a field, q, or a time range")
            await self._delete(sel, params, who, admin, send)
        elif path == "/v1/events":
            await self._stream(request, params, receive, send)
        else:
            await self._analytics(path.rsplit("/", 1)[-1], request, params, send)

    async def _selection(self, params: dict[str, list[str]], own: tuple[str, ...]) -> Selection:
        known = await self.call(self.src.fields)
        return selection(params, own, self.opts.max_range_days, set(known))

    async def _stream(self, request: Request, params: dict[str, list[str]], receive: Receive, send: Send) -> None:
        sel = await self._selection(params, ("format", "fields", "size", "sort"))
        fmt = negotiate((params.get("format") or [""])[-1], request.headers.get("accept", ""))
        if fmt not in FORMATS:
            raise ParamError("format", f"{fmt[:20]!r}: expected one of {', '.join(FORMATS)}")
        size = _int(params, "size", min(self.opts.default_size, self.opts.max_size), 1, self.opts.max_size)
        order = sorting(",".join(params.get("sort") or []), self.src.time_field)
        for name, _ in order:
            await self.call(self.src.aggregatable, "sort", name)
        fields = _fields(params)
        writer = Writer(fmt, default_columns(fmt, self.src.template, fields))
        big = size > self.opts.default_size  # a page's worth takes no slot
        if big:
            await self._slot()
        pages: Generator[list[events.Hit], None, None] | None = None
        stream = Stream(send, receive)
        try:
            pages = events.export(self.src, sel, EXPORT_PAGE, size, fields, order)
            first = await self.call(next, pages, None)  # Elasticsearch's errors come before the answer starts
            await stream.start(200, CONTENT_TYPES[fmt], {"X-Range-From": iso(sel.start), "X-Range-To": iso(sel.end)})
            self.requests.stats.count(f"api_exports:{fmt}")
            page = first
            while page is not None and not stream.gone.is_set():
                await stream.write(writer.rows(page))
                page = await self.call(next, pages, None)
            await stream.end(writer.end())
        except (EsConnectionError, ConnectionTimeout, ApiError) as exc:
            if not stream.started:
                raise
            log.warning("%s: a stream was cut short: %s", self.name, safe(exc))
            await stream.end(b"")  # the client sees a body without its end (a JSON array unclosed)
        finally:
            if pages is not None:
                await self.call(pages.close)
            if big:
                self.slots.release()

    async def _delete(self, sel: Selection, params: dict[str, list[str]], who: str, admin: bool, send: Send) -> None:
        if not admin:
            raise HttpError(403, "deleting needs an admin token (admin_tokens_file)")
        result = await self.call(events.delete, self.src, sel, who, self.opts.audit_index, _flag(params, "dry_run"))
        if not result.get("dry_run"):
            log.info("%s: %s deleted %s events in %s (%s)", self.name, safe(who, 80), result.get("deleted", 0),
                     self.src.index, safe(orjson.dumps(sel.describe()).decode(), 500))
        if sel.ids and not result.get("dry_run") and not result.get("deleted"):
            raise HttpError(404, f"no event {sel.ids[0][:100]!r} in {self.src.index}")
        await answer_json(send, 200, result)

    async def _analytics(self, what: str, request: Request, params: dict[str, list[str]], send: Send) -> None:
        own = {"count": ("interval", "by", "n", "tz"), "top": ("field", "n"),
               "unique": ("field", "interval", "tz", "precision_threshold")}
        sel = await self._selection(params, (*own[what], "format"))
        fmt = negotiate((params.get("format") or [""])[-1], request.headers.get("accept", ""), ("json", "csv", "tsv"))
        if fmt not in ("json", "csv", "tsv"):
            raise ParamError("format", f"{fmt[:20]!r}: expected json, csv or tsv")

        def one(name: str, default: str = "") -> str:
            return (params.get(name) or [default])[-1]

        if what == "count":
            result = await self.call(analytics.count, self.src, sel, one("interval"), one("by"),
                                     _int(params, "n", 10, 1, 1000), one("tz", "UTC"))
        elif what == "top":
            result = await self.call(analytics.top, self.src, sel, one("field"), _int(params, "n", 10, 1, 1000))
        else:
            precision = _int(params, "precision_threshold", self.opts.precision_threshold, 1, 40_000)
            result = await self.call(analytics.unique, self.src, sel, one("field"), precision, one("interval"),
                                     one("tz", "UTC"))
        if fmt == "json":
            await answer_json(send, 200, result)
        else:
            await answer(send, 200, table(fmt, result["columns"], result["rows"]), CONTENT_TYPES[fmt])

    async def _slot(self) -> None:
        if self.slots.locked():
            raise HttpError(503, f"{self.opts.max_concurrent_reports} reports or exports are being made: "
                                 "try again shortly", {"Retry-After": "10"})
        await self.slots.acquire()

    async def _counter(self, request: Request, path: str, params: dict[str, list[str]], send: Send) -> None:
        if request.method != "GET":
            raise HttpError(405, "the COUNTER_SUSHI API takes GET", {"Allow": "GET"})
        if not (path == "/r51/status" and self.opts.public_status):
            self._who(request, params)
        if path == "/r51/status":
            try:
                await self.call(self.src.es.cluster.health)
                active, note = True, ""
            except (EsConnectionError, ConnectionTimeout, ApiError):
                active, note = False, "the usage store does not answer"
            await answer_json(send, 200, sushi.status(self.settings, active, note))
            return
        if path == "/r51/reports":
            months = await self.call(sushi.available, self.src)
            await answer_json(send, 200, sushi.report_list(self.settings, months))
            return
        report_id = path[len("/r51/reports/"):] if path.startswith("/r51/reports/") else ""
        definition = sushi.definition(report_id)
        if definition is None:  # 5.1 has no "Report Not Supported": an unknown path is a 404 (Appendix D)
            what = f"no report {report_id[:40]!r}" if report_id else f"no path {path[:60]!r}"
            await answer_json(send, 404, {"Code": 0, "Message": "Report Not Supported" if report_id else "Not Found",
                                          "Data": f"{what} on this server: {', '.join(reports.REPORTS)} are"})
            return
        fmt = (params.pop("format", None) or ["json"])[-1]
        if fmt not in ("json", "tsv", "csv"):
            raise ParamError("format", f"{fmt[:20]!r}: expected json, tsv or csv")
        wanted = sushi.request(report_id, params, self.settings, self.opts.max_report_months)
        await self._slot()
        try:
            started = time.monotonic()
            made = await self.call(usage.collect, self.src, wanted.begin, wanted.end)
            report = reports.build(wanted, self.settings, made)
            log.info("%s: %s %s..%s: %d rows from %d buckets in %.1f s", self.name, definition.id,
                     wanted.begin.date(), wanted.end.date(), len(report.rows), made.buckets,
                     time.monotonic() - started)
        finally:
            self.slots.release()
        self.requests.stats.count(f"api_reports:{definition.id}")
        if fmt == "json":
            await answer_json(send, 200, sushi.to_json(report))
        else:
            name = f"{definition.id}_{wanted.begin:%Y-%m}_{wanted.end - timedelta(days=1):%Y-%m}.{fmt}"
            await answer(send, 200, tabular.render(report, fmt), CONTENT_TYPES[fmt],
                         {"Content-Disposition": f'attachment; filename="{name}"'})

    async def _metrics(self) -> bytes:
        """The section's request metrics and the reports and exports it made (every process's,
        as of their last flush: this one's flushed now), in the Prometheus format."""
        counters, histograms = stats_figures(await self.requests.totals(), self.name)

        def families() -> Iterator[Metric]:
            yield from self.requests.families(counters, histograms)
            made = {"api_reports": CounterMetricFamily("loglines_api_reports_total", "COUNTER reports made "
                                                       "(SUSHI), by report", labels=["worker", "report"]),
                    "api_exports": CounterMetricFamily("loglines_api_exports_total", "Event streams started "
                                                       "(GET /v1/events), by format", labels=["worker", "format"])}
            for name, n in sorted(counters.items()):
                head, _, value = name.partition(":")
                if head in made and value:
                    made[head].add_metric([self.name, value], n)
            yield from made.values()

        return metrics.exposition(families)
