"""Rows of an export as bytes, a page at a time: NDJSON, a JSON array, CSV or TSV.

NDJSON and JSON carry each event whole (``_id`` and ``_index`` first). CSV and TSV have one
column per field, named by ``fields`` (else the access-log fields for an ``access`` index, else
the fields of the first page); a list or object is written as JSON. For spreadsheets, a text
starting with ``=``, ``+`` or ``@`` is prefixed with ``'`` (a formula in a log line must not run
when the export is opened), and in TSV tabs and line breaks become spaces.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import orjson

FORMATS = ("ndjson", "json", "csv", "tsv")
CONTENT_TYPES = {"ndjson": "application/x-ndjson", "json": "application/json",
                 "csv": "text/csv; charset=utf-8", "tsv": "text/tab-separated-values; charset=utf-8"}
ACCESS_COLUMNS = ("_id", "time", "client_ip", "method", "url", "status", "bytes", "referrer",
                  "user_agent", "kind", "repository", "item_id", "robot", "session")
_FORMULA = ("=", "+", "@")
_FLAT = str.maketrans({"\t": " ", "\n": " ", "\r": " "})


class Writer:
    """``rows(page)`` for each page, then ``end()``; each returns the bytes to send."""

    def __init__(self, fmt: str, columns: Sequence[str] = ()) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
        self.fmt, self.columns = fmt, list(columns)
        self.count = 0
        self.started = False

    def rows(self, page: Sequence[dict[str, Any]]) -> bytes:
        if self.fmt == "ndjson":
            out = b"".join(orjson.dumps(hit) + b"\n" for hit in page)
        elif self.fmt == "json":
            head = b"" if self.started else b"["
            parts = [orjson.dumps(hit) for hit in page]
            out = head + (b"," if self.count and parts else b"") + b",".join(parts)
        else:
            out = self._table(page)
        self.started = True
        self.count += len(page)
        return out

    def end(self) -> bytes:
        if self.fmt == "json":
            return b"]" if self.started else b"[]"
        if self.fmt in ("csv", "tsv") and not self.started:
            return self._table([])
        return b""

    def _table(self, page: Sequence[dict[str, Any]]) -> bytes:
        buffer = io.StringIO()
        if self.fmt == "csv":
            table = csv.writer(buffer, lineterminator="\r\n")
        else:
            table = csv.writer(buffer, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar=None,
                               quotechar=None, lineterminator="\n")
        if not self.started:
            if not self.columns:
                seen: dict[str, None] = {"_id": None}
                for hit in page:
                    seen.update(dict.fromkeys(k for k in hit if k != "_index"))
                self.columns = list(seen)
            table.writerow(self.columns)
        for hit in page:
            table.writerow([self._cell(hit.get(name)) for name in self.columns])
        return buffer.getvalue().encode("utf-8", "surrogatepass")

    def _cell(self, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (dict, list)):
            text = orjson.dumps(value).decode()
        else:
            text = str(value)
        if text.startswith(_FORMULA):
            text = "'" + text
        return text.translate(_FLAT) if self.fmt == "tsv" else text


def table(fmt: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """A small table (an analytics answer) as CSV or TSV."""
    writer = Writer(fmt, columns)
    return writer.rows([dict(zip(columns, row, strict=True)) for row in rows]) + writer.end()


def negotiate(given: str, accept: str, allowed: Sequence[str] = FORMATS) -> str:
    """The format asked for by ``format=``, else by the Accept header, else JSON."""
    if given:
        return given
    for fmt, kind in CONTENT_TYPES.items():
        if fmt in allowed and kind.split(";")[0] in accept:
            return fmt
    return "json"


def default_columns(fmt: str, template: str, fields: Sequence[str]) -> list[str]:
    if fields:
        return list(fields)
    if fmt in ("csv", "tsv") and template == "access":
        return list(ACCESS_COLUMNS)
    return []
