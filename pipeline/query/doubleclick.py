"""§7.2 double clicks, decided exactly when a report is made.

The rule: two requests for the same URL by the same user at most 30 seconds apart count once,
the first removed and the second kept; a third within 30 s of the second removes the second,
and so on. So a click is removed exactly when the next click of its key (user and URL) comes
within 30 s; whether that happens is only known after the line is read, by whichever parser
process reads the next one, so it is decided here, over everything indexed, with no state.

Each record carries two 60-second slots of its key, 30 s apart (``click_slots``, see
:mod:`pipeline.plugins._counter`); two clicks within 30 s always share one. A report walks the
period in chunks of days (:mod:`pipeline.query.usage`); in each, the slots holding two counted
records or more come from a ``terms`` aggregation (checked to be complete: Elasticsearch's error
bound must be 0, else it asks again in partitions), and only the records in those slots — their
time and keys, a small share — are read and put in order. When every index has one shard, each
shard returns only the slots it holds twice, which is cheap; a pair split between two indices
can then only lie where one index's time range comes within 30 s of another's, and the records
there are read too (for daily or monthly indices, minutes to hours around midnight). What they show is subtracted from the
chunk's counts. Each chunk is read 30 s past its end, so a click whose repeat comes after
midnight (the end of the chunk, or of the period) is removed too.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from elasticsearch import ApiError

from pipeline.query.params import iso
from pipeline.query.source import Source

WINDOW = timedelta(seconds=30)
WINDOW_MS = 30_000
SLOT_TERMS = 20_000  # slots per terms request: below search.max_buckets (65,536)
FETCH_TERMS = 10_000  # slots per fetch request: below index.max_terms_count (65,536)
Key = tuple[str, str, str, str]  # item_id, repository, session_hash, kind: what a count is kept by
KEY_FIELDS = ("item_id", "repository", "session_hash", "kind")
KEEP = "hits.total,hits.hits._id,hits.hits._index,hits.hits.fields"  # what is read of a hit


@dataclass(frozen=True)
class Click:
    click: str
    at_ms: int
    doc_id: str
    key: Key


def removed_clicks(clicks: Iterable[Click]) -> Iterator[Click]:
    """The clicks the rule removes: those followed by a click of the same key within 30 s."""
    by_click: dict[str, list[Click]] = {}
    for c in clicks:
        by_click.setdefault(c.click, []).append(c)
    for group in by_click.values():
        group.sort(key=lambda c: (c.at_ms, c.doc_id))
        for first, second in zip(group, group[1:], strict=False):
            if second.at_ms - first.at_ms <= WINDOW_MS:
                yield first


def window(src: Source, counted: list[dict[str, Any]], begin: datetime, end: datetime) -> dict[str, Any]:
    """The counted records of [begin, end + 30 s): a chunk and the repeats that can follow it."""
    return {"bool": {"filter": [*counted, {"range": {src.time_field: {
        "gte": iso(begin), "lt": iso(end + WINDOW), "format": "strict_date_optional_time"}}}]}}


@dataclass(frozen=True)
class Layout:
    """Where the period's counted records are: each index's first and last time (ms), and
    whether every index has one primary shard, so that two records of one index are on one
    shard."""

    ranges: dict[str, tuple[int, int]]
    single_shards: bool

    def edges(self, lo: int, hi: int) -> list[tuple[str, int, int]]:
        """(index, from, to): where, within [lo, hi), a record of one index may have a repeat in
        another (within 30 s of the other's range)."""
        touched = {i: (max(a, lo), min(b, hi)) for i, (a, b) in self.ranges.items() if a < hi and b >= lo}
        out: list[tuple[str, int, int]] = []
        if len(touched) < 2:
            return out
        for index, (a, b) in touched.items():
            spans = sorted((max(a, ja - WINDOW_MS), min(b, jb + WINDOW_MS))
                           for other, (ja, jb) in touched.items() if other != index)
            for x, y in spans:
                if x > y:
                    continue
                if out and out[-1][0] == index and x <= out[-1][2]:
                    out[-1] = (index, out[-1][1], max(out[-1][2], y))
                else:
                    out.append((index, x, y))
        return out


def layout(src: Source, query: dict[str, Any]) -> Layout:
    """The :class:`Layout` of what ``query`` selects (shard counts need the view_index_metadata
    privilege; without it every pair is looked for across shards, which is slower)."""
    answer = src.search(query=query, size=0, pre_filter_shard_size=1, aggs={"i": {
        "terms": {"field": "_index", "size": 10_000},
        "aggs": {"first": {"min": {"field": src.time_field}}, "last": {"max": {"field": src.time_field}}}}})
    ranges = {b["key"]: (int(b["first"]["value"]), int(b["last"]["value"]))
              for b in answer.get("aggregations", {}).get("i", {}).get("buckets", [])}
    try:
        settings = src.es.indices.get_settings(index=src.index, name="index.number_of_shards",
                                               ignore_unavailable=True, allow_no_indices=True)
        single = all(str(v["settings"]["index"]["number_of_shards"]) == "1"
                     for name, v in settings.items() if name in ranges) and set(ranges) <= set(settings)
    except ApiError:
        single = False
    return Layout(ranges, single)


def slots_aggregation(single_shards: bool, partition: int = 0, partitions: int = 1) -> dict[str, Any]:
    """The slots of two records or more. With one shard per index a shard returns only its own
    repeated slots (a pair across indices is found by :meth:`Layout.edges`); else every slot, so
    that pairs split across shards add up. Ordered by count, so that the error bound is exact."""
    terms: dict[str, Any] = {"field": "click_slots", "size": SLOT_TERMS, "shard_size": SLOT_TERMS,
                             "min_doc_count": 2, "shard_min_doc_count": 2 if single_shards else 1}
    if partitions > 1:
        terms["include"] = {"partition": partition, "num_partitions": partitions}
    return {"terms": terms}


def _complete(result: dict[str, Any]) -> list[str] | None:
    """The shared slots of an answer, or None when a shard could not return all of its slots."""
    buckets = result.get("buckets", [])
    if result.get("doc_count_error_upper_bound", 0) or len(buckets) >= SLOT_TERMS:
        return None
    return [b["key"] for b in buckets]


def shared_slots(src: Source, query: dict[str, Any], first: dict[str, Any], single_shards: bool
                 ) -> tuple[list[str], int]:
    """The slots holding two records or more, from ``first`` (the aggregation answered with the
    chunk's first page) when it is complete, else asked again in partitions; and the requests."""
    found = _complete(first)
    if found is not None:
        return found, 0
    estimate = src.search(query=query, size=0, aggs={"n": {"cardinality": {"field": "click_slots"}}},
                          pre_filter_shard_size=1)
    partitions = max(2, math.ceil(int(estimate["aggregations"]["n"]["value"]) * 1.25 / SLOT_TERMS))
    requests = 1
    while True:
        slots: list[str] = []
        for partition in range(partitions):
            answer = src.search(query=query, size=0, aggs={"s": slots_aggregation(single_shards, partition, partitions)},
                                pre_filter_shard_size=1)
            requests += 1
            part = _complete(answer["aggregations"]["s"])
            if part is None:
                break
            slots.extend(part)
        else:
            return slots, requests
        partitions *= 2


def removed(src: Source, query: dict[str, Any], slots: list[str], begin: datetime, end: datetime,
            edges: Sequence[tuple[str, int, int]] = ()) -> tuple[Counter[Key], int, int]:
    """Removed clicks of [begin, end) by key, the records read, the requests made: the records
    of the shared ``slots``, and those of the ``edges`` of indices (any of their slots)."""
    clicks: dict[str, Click] = {}
    requests = 0
    narrowings: list[dict[str, Any]] = [{"terms": {"click_slots": slots[start:start + FETCH_TERMS]}}
                                        for start in range(0, len(slots), FETCH_TERMS)]
    for start in range(0, len(edges), 500):
        narrowings.append({"bool": {"minimum_should_match": 1, "should": [
            {"bool": {"filter": [{"term": {"_index": index}}, {"range": {src.time_field: {
                "gte": low, "lte": high, "format": "epoch_millis"}}}]}}
            for index, low, high in edges[start:start + 500]]}})
    for narrowing in narrowings:
        for page in _pages(src, {"bool": {"filter": [query, narrowing]}}):
            requests += 1
            clicks.update((c.doc_id, c) for c in page)
    lo, hi = begin.timestamp() * 1000, end.timestamp() * 1000
    out: Counter[Key] = Counter(c.key for c in removed_clicks(clicks.values()) if lo <= c.at_ms < hi)
    return out, len(clicks), requests


def _pages(src: Source, query: dict[str, Any]) -> Iterator[list[Click]]:
    """The records ``query`` selects: one request when they are 10,000 or fewer (as a chunk's
    usually are), else a page at a time through a point in time."""
    fields = [{"field": src.time_field, "format": "epoch_millis"}, "click", *KEY_FIELDS]
    first = src.search(query=query, size=10_000, source=False, docvalue_fields=fields, track_total_hits=True,
                       pre_filter_shard_size=1, filter_path=KEEP)
    hits = first["hits"].get("hits", [])
    if first["hits"]["total"]["value"] <= len(hits):
        yield [_click(src, hit) for hit in hits]
        return
    pit = src.es.open_point_in_time(index=src.index, keep_alive="2m", ignore_unavailable=True)["id"]
    after: list[Any] | None = None
    try:
        while True:
            body: dict[str, Any] = {"query": query, "size": 5000, "source": False, "docvalue_fields": fields,
                                    "sort": [{"_shard_doc": "asc"}], "pit": {"id": pit, "keep_alive": "2m"},
                                    "track_total_hits": False}
            if after is not None:
                body["search_after"] = after
            answer = src.es.search(**body, filter_path=f"{KEEP},hits.hits.sort,pit_id")
            pit = answer.get("pit_id", pit)
            hits = (answer.get("hits") or {}).get("hits", [])
            if not hits:
                return
            after = hits[-1]["sort"]
            yield [_click(src, hit) for hit in hits]
    finally:
        src.es.options(ignore_status=404).close_point_in_time(id=pit)


def _click(src: Source, hit: dict[str, Any]) -> Click:
    values = hit.get("fields") or {}
    key = tuple(str((values.get(name) or [""])[0]) for name in KEY_FIELDS)
    return Click(str((values.get("click") or [""])[0]), int(float((values.get(src.time_field) or [0])[0])),
                 f"{hit['_index']}/{hit['_id']}", (key[0], key[1], key[2], key[3]))
