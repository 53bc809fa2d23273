"""Analytics as aggregations: counts over time, the most frequent values, distinct values.

``count`` counts per ``interval`` (hour, day, week, month: calendar intervals in ``tz``) or in
all, optionally split ``by`` a field (its ``n`` most frequent values per interval). ``top``
gives the ``n`` most frequent values of a field, how many events the other values hold and
Elasticsearch's bound on the error of the counts (0: exact). ``unique`` counts distinct values
with Elasticsearch's ``cardinality``: exact up to about ``precision_threshold`` values, within
about 1 % beyond, and always marked ``approximate``. Each answer is JSON with ``columns`` and
``rows`` as well, which is what its CSV and TSV forms hold. ``counted=yes`` in the selection
keeps to what COUNTER counts at all (statuses, downloads and item pages, no robots; double
clicks are a report's business: :mod:`pipeline.query.usage`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.query.params import ParamError, Selection
from pipeline.query.source import Source

INTERVALS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7),
             "month": timedelta(days=28)}
MAX_BUCKETS = 10_000


def timezone(text: str) -> str:
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ParamError("tz", f"{text[:60]!r} is not a time zone (Europe/Prague, UTC, ...)") from None
    return text


def _histogram(src: Source, sel: Selection, interval: str, tz: str) -> dict[str, Any]:
    if interval not in INTERVALS:
        raise ParamError("interval", f"{interval[:20]!r}: expected one of {', '.join(INTERVALS)}")
    if (sel.end - sel.start) / INTERVALS[interval] > MAX_BUCKETS:
        raise ParamError("interval", f"more than {MAX_BUCKETS:,} {interval}s in the range: take a longer "
                                     "interval or a shorter range")
    return {"date_histogram": {
        "field": src.time_field, "calendar_interval": interval, "time_zone": timezone(tz), "min_doc_count": 0,
        "extended_bounds": {"min": int(sel.start.timestamp() * 1000), "max": int(sel.end.timestamp() * 1000) - 1},
        "format": "yyyy-MM-dd'T'HH:mm:ssXXX"}}


def _search(src: Source, sel: Selection, aggs: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    found = src.search(query=sel.query(src.time_field), size=0, aggs=aggs, track_total_hits=True)
    return int(found["hits"]["total"]["value"]), dict(found.get("aggregations") or {})


def count(src: Source, sel: Selection, interval: str = "", by: str = "", n: int = 10,
          tz: str = "UTC") -> dict[str, Any]:
    timezone(tz)
    split = {"terms": {"field": src.aggregatable("by", by), "size": n, "shard_size": max(3 * n, 100)}} if by else None
    if interval:
        histogram = _histogram(src, sel, interval, tz)
        if split:
            histogram["aggs"] = {"by": split}
        total, aggs = _search(src, sel, {"t": histogram})
        buckets = aggs.get("t", {}).get("buckets", [])
    else:
        total, aggs = _search(src, sel, {"by": split} if split else {})
        buckets = [{"key_as_string": "", "doc_count": total, **({"by": aggs["by"]} if split else {})}]
    rows: list[list[Any]] = []
    for bucket in buckets:
        if split:
            for value in bucket["by"]["buckets"]:
                rows.append([bucket["key_as_string"], value.get("key_as_string", value["key"]), value["doc_count"]])
            others = bucket["by"].get("sum_other_doc_count", 0)
            if others:
                rows.append([bucket["key_as_string"], "(others)", others])
        else:
            rows.append([bucket["key_as_string"], bucket["doc_count"]])
    columns = ["start", *([by] if by else []), "count"]
    if not interval:
        columns, rows = columns[1:], [r[1:] for r in rows]
    return {**sel.describe(), "interval": interval or "all", "tz": tz, "by": by, "total": total,
            "columns": columns, "rows": rows}


def top(src: Source, sel: Selection, field: str, n: int = 10) -> dict[str, Any]:
    if not field:
        raise ParamError("field", "name the field whose values to count")
    terms = {"terms": {"field": src.aggregatable("field", field), "size": n, "shard_size": max(n * 3, 100)}}
    total, aggs = _search(src, sel, {"top": terms})
    result = aggs.get("top", {})
    rows = [[b.get("key_as_string", b["key"]), b["doc_count"]] for b in result.get("buckets", [])]
    return {**sel.describe(), "field": field, "total": total, "columns": [field, "count"], "rows": rows,
            "others": result.get("sum_other_doc_count", 0), "error_bound": result.get("doc_count_error_upper_bound", 0)}


def unique(src: Source, sel: Selection, field: str, precision_threshold: int, interval: str = "",
           tz: str = "UTC") -> dict[str, Any]:
    timezone(tz)
    if not field:
        raise ParamError("field", "name the field whose distinct values to count")
    cardinality = {"cardinality": {"field": src.aggregatable("field", field),
                                   "precision_threshold": precision_threshold}}
    if interval:
        histogram = _histogram(src, sel, interval, tz)
        histogram["aggs"] = {"u": cardinality}
        total, aggs = _search(src, sel, {"t": histogram})
        rows = [[b["key_as_string"], b["u"]["value"]] for b in aggs.get("t", {}).get("buckets", [])]
        columns = ["start", "unique"]
    else:
        total, aggs = _search(src, sel, {"u": cardinality})
        rows, columns = [[aggs.get("u", {}).get("value", 0)]], ["unique"]
    return {**sel.describe(), "field": field, "interval": interval or "all", "total": total, "approximate": True,
            "precision_threshold": precision_threshold, "columns": columns, "rows": rows}
