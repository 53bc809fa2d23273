"""Events: all that a selection holds as a stream, one by id, how many, and deleting them.

A stream holds one page at a time: a point in time keeps the view fixed while it runs, and
``search_after`` (the sort fields, then the shard's document order) walks it, so each event
comes exactly once however long it takes and whatever is indexed meanwhile. A delete names who asked, the
query and the count in the audit index, before it starts and when it is done, so a delete
that never finished is seen too.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Generator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from elasticsearch import BadRequestError

from pipeline.query.params import Selection, iso
from pipeline.query.source import Source

AUDIT_MAPPINGS = {"properties": {
    "time": {"type": "date"}, "finished": {"type": "date"}, "who": {"type": "keyword"},
    "action": {"type": "keyword"}, "index": {"type": "keyword"}, "status": {"type": "keyword"},
    "selection": {"type": "object", "enabled": False}, "selection_text": {"type": "keyword"},
    "query": {"type": "object", "enabled": False}, "matched": {"type": "long"}, "deleted": {"type": "long"},
    "took_ms": {"type": "long"}, "failures": {"type": "object", "enabled": False},
}}
DELETE_PAGE = 5000

Hit = dict[str, Any]


def _hit(raw: dict[str, Any]) -> Hit:
    return {"_id": raw["_id"], "_index": raw["_index"], **(raw.get("_source") or {})}


def _source_filter(fields: Sequence[str]) -> list[str] | bool:
    return list(fields) if fields else True


def get(src: Source, doc_id: str) -> Hit | None:
    found = src.search(query={"ids": {"values": [doc_id]}}, size=2)
    hits = found["hits"]["hits"]
    return _hit(hits[0]) if hits else None


def count(src: Source, sel: Selection) -> int:
    return int(src.es.count(index=src.index, query=sel.query(src.time_field), ignore_unavailable=True,
                            allow_no_indices=True)["count"])


def export(src: Source, sel: Selection, page_size: int = 2000, limit: int = 0,
           fields: Sequence[str] = (), sort: Sequence[tuple[str, str]] = (),
           keep_alive: str = "5m", with_source: bool = True) -> Generator[list[Hit], None, None]:
    """Every selected event in ``sort`` order (default: oldest first), a page at a time (at most
    ``limit``; 0: all). The point in time is closed when the generator ends or is closed."""
    order = [{name: direction} for name, direction in (sort or [(src.time_field, "asc")])]
    pit = src.es.open_point_in_time(index=src.index, keep_alive=keep_alive, ignore_unavailable=True)["id"]
    after: list[Any] | None = None
    sent = 0
    try:
        while True:
            size = page_size if not limit else min(page_size, limit - sent)
            if size <= 0:
                return
            body: dict[str, Any] = {"query": sel.query(src.time_field), "size": size,
                                    "sort": [*order, {"_shard_doc": "asc"}],
                                    "pit": {"id": pit, "keep_alive": keep_alive},
                                    "source": _source_filter(fields) if with_source else False,
                                    "track_total_hits": False}
            if after is not None:
                body["search_after"] = after
            found = src.es.search(**body)
            pit = found.get("pit_id", pit)
            hits = found["hits"]["hits"]
            if not hits:
                return
            after = hits[-1]["sort"]
            sent += len(hits)
            yield [_hit(h) for h in hits]
    finally:
        src.es.options(ignore_status=404).close_point_in_time(id=pit)


def ensure_audit_index(src: Source, audit_index: str) -> None:
    try:
        src.es.indices.create(index=audit_index, mappings=AUDIT_MAPPINGS)
    except BadRequestError as exc:
        if exc.error != "resource_already_exists_exception":
            raise


def delete(src: Source, sel: Selection, who: str, audit_index: str, dry_run: bool = False) -> dict[str, Any]:
    """Delete what ``sel`` selects; the answer and the audit record say how many, by whom.
    ``dry_run`` only counts (and audits nothing).

    The documents are found through a point in time and deleted by id in bulk requests, each
    result read: this works the same on every cluster (``_delete_by_query`` lives in the
    reindex module, which minimal installs lack) and counts exactly what was deleted. What is
    indexed while it runs is not in its view, and stays."""
    query = sel.query(src.time_field)
    matched = count(src, sel)
    answer: dict[str, Any] = {**sel.describe(), "index": src.index, "matched": matched}
    if dry_run:
        return {**answer, "dry_run": True}
    ensure_audit_index(src, audit_index)
    started = time.monotonic()
    described = {k: str(v) for k, v in sel.describe().items()}
    record: dict[str, Any] = {"time": iso(datetime.now(UTC)), "who": who, "action": "delete_by_query",
                              "index": src.index, "selection": described,
                              "selection_text": orjson.dumps(described).decode(), "query": query,
                              "matched": matched, "status": "running"}
    audit_id = src.es.index(index=audit_index, document=record, refresh="wait_for")["_id"]
    status, deleted, failures = "failed", 0, []
    try:
        for page in export(src, sel, DELETE_PAGE, with_source=False):
            body = b"".join(orjson.dumps({"delete": {"_index": hit["_index"], "_id": hit["_id"]}}) + b"\n"
                            for hit in page)
            result = src.es.bulk(operations=body, filter_path="items.*.status,items.*.error")  # type: ignore[arg-type]
            for item in result.get("items", []):
                outcome = next(iter(item.values()))
                if outcome.get("status") == 200:
                    deleted += 1
                elif outcome.get("status") != 404:  # 404: gone meanwhile
                    failures.append(outcome.get("error") or outcome)
        src.es.indices.refresh(index=src.index, ignore_unavailable=True, allow_no_indices=True)
        status = "done" if not failures else "failed"
    finally:
        took = int((time.monotonic() - started) * 1000)
        src.es.update(index=audit_index, id=audit_id, refresh="wait_for", doc={
            "status": status, "deleted": deleted, "took_ms": took, "finished": iso(datetime.now(UTC)),
            "failures": orjson.loads(orjson.dumps(failures[:20], default=str))})
    return {**answer, "deleted": deleted, "status": status, "audit_id": audit_id,
            "audit_index": audit_index, "took_ms": took, "failures": failures[:20]}


def shell_user() -> str:
    """Who runs a command from the shell, for the audit record."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:?"
