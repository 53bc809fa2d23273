"""COUNTER usage per item and month, from aggregations: what every report is made of.

What counts (Code of Practice 5.1): status 200 or 304 (§7.1), file downloads (Requests) and
item pages (Investigations; Investigations include Requests), no user agent on the COUNTER
robots list (§7.8), and of a double click only the second (§7.2, exactly:
:mod:`pipeline.query.doubleclick`). Unique_Item_* count an item once per user-session (§7.3:
the ``session`` key, ``<ip>|<agent>|<date>|<hour>`` in UTC, or a logged session id and the
date), after double clicks are removed.
Months are UTC months, as the tracker's ``url_tim``.

A composite aggregation over (item, repository, day, session, kind) walks the period (the
session by ``session_hash``, its short form): each bucket is one user-session's use of one
item, its count the clicks, so totals and unique counts come from
the same pass and nothing but the buckets leaves Elasticsearch. It walks a chunk of days at a
time (at most ``CHUNK_DOCS`` counted records, cut at UTC midnights, which no session crosses),
asking only the shards whose time range meets the chunk: each request reads a chunk, not the
period, so a year costs about twelve times a month, not a hundred and forty-four.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.query import doubleclick
from pipeline.query.params import COUNTED, iso, next_month
from pipeline.query.source import Source

# the four metrics, in the order the reports list them
TII, TIR, UII, UIR = "Total_Item_Investigations", "Total_Item_Requests", "Unique_Item_Investigations", \
    "Unique_Item_Requests"
METRICS = (TII, TIR, UII, UIR)
PAGE = 20_000  # buckets per composite page (below search.max_buckets)
CHUNK_DOCS = 10_000  # counted records read at once: their slots fit one terms request
Item = tuple[str, str]  # repository, item_id


@dataclass
class Usage:
    months: list[str]  # yyyy-mm, the period's
    items: dict[Item, dict[str, list[int]]] = field(default_factory=dict)  # month -> counts in METRICS order
    kinds: dict[Item, set[str]] = field(default_factory=dict)  # download, item: what was seen of it
    double_clicks: int = 0
    candidates: int = 0  # records read to decide on double clicks
    unkeyed: int = 0  # counted records without the COUNTER keys (indexed before they existed)
    buckets: int = 0
    requests: int = 0
    seconds: float = 0.0
    last_use: tuple[str, str, str] | None = None  # item, repository, session of the last bucket counted
    month_of: dict[int, str] = field(default_factory=dict)  # a day (ms) -> its month

    def platform(self) -> dict[str, list[int]]:
        """Month -> counts over every item (a platform's unique counts are the items' sum)."""
        out = {m: [0, 0, 0, 0] for m in self.months}
        for months in self.items.values():
            for month, counts in months.items():
                out[month] = [a + b for a, b in zip(out[month], counts, strict=True)]
        return out


def months_between(begin: datetime, end: datetime) -> list[str]:
    out, at = [], begin
    while at < end:
        out.append(at.strftime("%Y-%m"))
        at = next_month(at)
    return out


def chunks(src: Source, counted: list[dict[str, Any]], begin: datetime, end: datetime,
           most: int = CHUNK_DOCS) -> list[tuple[datetime, datetime]]:
    """[begin, end) cut at UTC midnights into runs of days holding at most ``most`` counted
    records (a busier day alone); days without any are left out."""
    period = {"range": {src.time_field: {"gte": iso(begin), "lt": iso(end), "format": "strict_date_optional_time"}}}
    answer = src.search(query={"bool": {"filter": [*counted, period]}}, size=0, pre_filter_shard_size=1, aggs={
        "d": {"date_histogram": {"field": src.time_field, "calendar_interval": "day", "min_doc_count": 1}}})
    out: list[tuple[datetime, datetime]] = []
    held = 0
    for bucket in answer.get("aggregations", {}).get("d", {}).get("buckets", []):
        day = datetime.fromtimestamp(bucket["key"] / 1000, UTC)
        if out and out[-1][1] == day and held + bucket["doc_count"] <= most:
            out[-1] = (out[-1][0], day + timedelta(days=1))
            held += bucket["doc_count"]
        else:
            out.append((day, day + timedelta(days=1)))
            held = bucket["doc_count"]
    return out


@dataclass
class Chunk:
    """What one chunk of days gave: its pages of uses, its removed double clicks."""

    days: tuple[float, float]  # [first day, the day after the last), ms
    pages: list[list[dict[str, Any]]]
    removed: Counter[doubleclick.Key]
    read: int
    requests: int


#: composite sources under short names (the answer repeats them in every bucket)
SOURCES = (("i", "item_id"), ("r", "repository"), ("d", ""), ("s", "session_hash"), ("k", "kind"))


def _chunk(src: Source, counted: list[dict[str, Any]], where: doubleclick.Layout, first_day: datetime,
           after_last: datetime) -> Chunk:
    query = doubleclick.window(src, counted, first_day, after_last)
    days = (first_day.timestamp() * 1000, after_last.timestamp() * 1000)
    sources = [{short: {"terms": {"field": name}} if name else
                {"date_histogram": {"field": src.time_field, "calendar_interval": "day"}}}  # UTC days
               for short, name in SOURCES]
    composite: dict[str, Any] = {"size": PAGE, "sources": sources}
    keep = "aggregations.u.buckets,aggregations.u.after_key,aggregations.s"
    answer = src.search(query=query, size=0, track_total_hits=False, pre_filter_shard_size=1, filter_path=keep,
                        aggs={"u": {"composite": composite}, "s": doubleclick.slots_aggregation(where.single_shards)})
    slots, asked = doubleclick.shared_slots(src, query, answer["aggregations"]["s"], where.single_shards)
    edges = where.edges(int(days[0]), int(days[1]) + doubleclick.WINDOW_MS) if where.single_shards else []
    removed, read, fetched = doubleclick.removed(src, query, slots, first_day, after_last, edges)
    pages, requests = [], 1 + asked + fetched
    while True:
        result = (answer.get("aggregations") or {}).get("u") or {}
        buckets = result.get("buckets", [])
        pages.append(buckets)
        if not buckets or "after_key" not in result or len(buckets) < PAGE:
            return Chunk(days, pages, removed, read, requests)
        composite["after"] = result["after_key"]
        answer = src.search(query=query, size=0, track_total_hits=False, pre_filter_shard_size=1,
                            filter_path=keep, aggs={"u": {"composite": composite}})
        requests += 1


def collect(src: Source, begin: datetime, end: datetime,
            progress: Callable[[int], None] | None = None) -> Usage:
    """Usage in [begin, end) (both at the start of a UTC month), a chunk of days at a time (two
    in flight: one is read while the next is asked for); one request gives a chunk's uses and
    its shared double-click slots."""
    started = time.monotonic()
    usage = Usage(months_between(begin, end))
    counted = list(COUNTED)
    period = {"range": {src.time_field: {"gte": iso(begin), "lt": iso(end), "format": "strict_date_optional_time"}}}
    unkeyed = {"bool": {"filter": [*counted, period], "must_not": [{"exists": {"field": "session_hash"}}]}}
    usage.unkeyed = int(src.es.count(index=src.index, query=unkeyed, ignore_unavailable=True,
                                     allow_no_indices=True)["count"])
    parts = chunks(src, counted, begin, end)
    where = doubleclick.layout(src, doubleclick.window(src, counted, begin, end))
    usage.requests += 4
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="usage") as pool:
        for chunk in pool.map(lambda part: _chunk(src, counted, where, *part), parts):
            usage.requests += chunk.requests
            usage.candidates += chunk.read
            usage.double_clicks += sum(chunk.removed.values())
            for buckets in chunk.pages:
                _count(usage, buckets, chunk.removed, chunk.days)
                usage.buckets += len(buckets)
            if progress is not None:
                progress(usage.buckets)
    usage.seconds = time.monotonic() - started
    return usage


def _count(usage: Usage, buckets: list[dict[str, Any]], removed: Counter[doubleclick.Key],
           days: tuple[float, float]) -> None:
    """Add one page of a chunk's uses (each bucket: one user-session's use of one item)."""
    for bucket in buckets:
        key = bucket["key"]
        item_id, repository, day, session, kind = str(key["i"]), str(key["r"]), key["d"], str(key["s"]), str(key["k"])
        clicks = bucket["doc_count"] - removed.get((item_id, repository, session, kind), 0)
        if clicks <= 0 or not days[0] <= day < days[1]:
            continue  # all double clicks; or a session of the 30 s read past the chunk
        month = usage.month_of.get(day)
        if month is None:
            month = usage.month_of[day] = datetime.fromtimestamp(day / 1000, UTC).strftime("%Y-%m")
        if month not in usage.months:
            continue
        item = (repository, item_id)
        counts = usage.items.setdefault(item, {}).setdefault(month, [0, 0, 0, 0])
        usage.kinds.setdefault(item, set()).add(kind)
        counts[0] += clicks
        if (item_id, repository, session) != usage.last_use:
            counts[2] += 1  # one Unique_Item_Investigation per item and session, whatever the kind
            usage.last_use = (item_id, repository, session)
        if kind == "download":
            counts[1] += clicks
            counts[3] += 1
