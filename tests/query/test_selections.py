"""Selections from request parameters, and the export formats, without a server."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import orjson
import pytest

from pipeline.query.formats import Writer, negotiate
from pipeline.query.params import ParamError, selection

NOW = datetime(2026, 12, 1, 13, 0, tzinfo=UTC)


@pytest.mark.parametrize("params, parameter", [
    ({"from": ["soon"]}, "from"), ({"to": ["2026-02-30"]}, "to"), ({"range": ["0D"]}, "range"),
    ({"range": ["7D"], "to": ["now"]}, "range"), ({"from": ["2024-01-01"]}, "from"), ({"q": ["x" * 1001]}, "q"),
    ({"size": ["1"]}, "size"), ({"a b": ["1"]}, "a b"), ({"kind": [""]}, "kind"), ({"kind": ["a", "b"], "from": ["1", "2"]}, "from"),
])
def test_selections_name_the_bad_parameter(params: dict[str, list[str]], parameter: str) -> None:
    with pytest.raises(ParamError) as caught:
        selection(params, (), 400, {"kind", "status"}, now=NOW)
    assert caught.value.param == parameter


def test_selections() -> None:
    sel = selection({"range": ["7D"], "kind": ["download|item"], "status": ["200..299"]}, (), 400, now=NOW)
    assert (sel.end - sel.start).days == 7 and sel.terms == (("kind", ("download", "item")),)
    assert sel.ranges == (("status", "200", "299"),)
    day = selection({"from": ["2026-01"], "to": ["2026-01-31"]}, (), 400, now=NOW)
    assert day.start == datetime(2026, 1, 1, tzinfo=UTC) and day.end == datetime(2026, 2, 1, tzinfo=UTC)
    everything = selection({"client_ip": ["192.0.2.1"]}, (), None, now=NOW)
    assert everything.start.year == 1970 and everything.narrowed
    today = selection({"range": ["TODAY"]}, (), 400, now=NOW)
    assert today.start == datetime(2026, 12, 1, tzinfo=UTC) and today.end == NOW


def test_export_formats() -> None:
    page = [{"_id": "1", "_index": "i", "url": "/a", "n": 1, "tags": ["x"]},
            {"_id": "2", "_index": "i", "url": "=HYPERLINK(\"http://evil\")", "n": 2, "note": "tab\there"}]
    json_writer = Writer("json")
    assert orjson.loads(json_writer.rows(page) + json_writer.rows(page[:1]) + json_writer.end()) == page + page[:1]
    assert Writer("json").end() == b"[]"
    ndjson = Writer("ndjson").rows(page)
    assert [orjson.loads(x) for x in ndjson.splitlines()] == page
    table = Writer("csv", ["_id", "url", "tags"])
    parsed = list(csv.reader(io.StringIO((table.rows(page) + table.end()).decode())))
    assert parsed == [["_id", "url", "tags"], ["1", "/a", '["x"]'], ["2", "'=HYPERLINK(\"http://evil\")", ""]]
    tsv = Writer("tsv")
    assert (tsv.rows(page) + tsv.end()).decode().splitlines()[2].split("\t")[-1] == "tab here"
    assert Writer("csv", ["a"]).end() == b"a\r\n"  # no rows: still the header
    assert negotiate("", "text/csv, */*") == "csv" and negotiate("", "*/*") == "json"
    assert negotiate("tsv", "text/csv") == "tsv"
