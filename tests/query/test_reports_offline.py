"""Reading report requests and writing COUNTER reports, without a server."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from pipeline.query import reports, sushi, tabular
from pipeline.query.usage import Usage
from tests.query.validator import check_json, check_tsv

NOW = datetime(2026, 12, 1, 13, 0, tzinfo=UTC)
SETTINGS = reports.CounterSettings(platform="Example Repository", platform_id="examplerepo",
                                   institution_ids=("ISNI:0000000121032683",), base_url="https://repo.example.org")
PERIOD = {"customer_id": ["0000000000000000"], "begin_date": ["2026-01-01"], "end_date": ["2026-02-28"]}


def ask(report: str = "ir", **params: str) -> reports.Request:
    return sushi.request(report, {**PERIOD, **{k: [v] for k, v in params.items()}}, SETTINGS, 36, NOW)


@pytest.mark.parametrize("params, code", [
    ({"begin_date": "2026-1"}, 3020), ({"end_date": "31.01.2026"}, 3020), ({"end_date": "2025-12"}, 3020),
    ({"begin_date": "2026-12"}, 3020), ({"begin_date": "2020-01"}, 3020), ({"begin_date": ""}, 1030),
    ({"customer_id": ""}, 1030), ({"customer_id": "1234"}, 2010),
])
def test_what_stops_a_report(params: dict[str, str], code: int) -> None:
    with pytest.raises(sushi.SushiError) as caught:
        ask(**params)
    assert caught.value.code == code and caught.value.status == sushi.MESSAGES[code][1]
    assert caught.value.json()["Message"] == sushi.MESSAGES[code][0]


def test_what_is_ignored_and_said() -> None:
    request = ask("ir", metric_type="Total_Item_Requests|Clicks", data_type="Article|Scroll", access_method="TDM",
                  attributes_to_show="Access_Type|YOP", granularity="Total", yop="2020", colour="red",
                  include_component_details="True")
    notes = [(e.code, e.data) for e in request.exceptions]
    assert (3050, "colour") in notes and (3060, "yop: not supported here, ignored") in notes
    assert (3060, "metric_type: Clicks") in notes and (3060, "data_type: Scroll") in notes
    assert (3062, "attributes_to_show: YOP") in notes and (3063, "include_component_details") in notes
    assert (3062, "granularity=Total: only Month") in notes
    assert request.metric_types == ("Total_Item_Requests",) and request.data_types == ("Article",)
    assert request.attributes == ("Access_Type",) and request.access_methods == ("TDM",)
    ongoing = ask("pr", end_date="2026-12")
    assert ongoing.end == datetime(2026, 12, 1, tzinfo=UTC) and ongoing.exceptions[0].code == 3031
    assert ask("pr_p1", metric_type="Total_Item_Requests").exceptions[0].code == 3050  # a standard view takes none


def _usage() -> Usage:
    usage = Usage(["2026-01", "2026-02"])
    usage.items = {("dspace", "1/2"): {"2026-01": [5, 3, 2, 2], "2026-02": [1, 0, 1, 0]},
                   ("eprints", "77"): {"2026-02": [2, 2, 1, 1]}}
    usage.kinds = {("dspace", "1/2"): {"download", "item"}, ("eprints", "77"): {"download"}}
    return usage


@pytest.mark.parametrize("report", ["pr", "pr_p1", "ir", "ir_a1"])
def test_every_report_passes_the_validator_in_both_forms(report: str) -> None:
    made = reports.build(ask(report), SETTINGS, _usage())
    from_tsv = check_tsv(tabular.render(made).decode(), report.upper())
    assert from_tsv == check_json(sushi.to_json(made), report.upper())
    rows = list(csv.reader(io.StringIO(tabular.render(made, "csv").decode().lstrip("\ufeff"))))
    assert check_tsv("".join("\t".join(r) + "\n" for r in rows), report.upper()) == from_tsv
    if report == "ir":
        assert from_tsv[("examplerepo:1/2", "Total_Item_Investigations")] == {"2026-01": 5, "2026-02": 1}
        assert ("examplerepo:1/2", "Total_Item_Requests") in from_tsv  # its February 0 is a 0 cell, not a row
        assert ("examplerepo:77", "Unique_Item_Requests") in from_tsv
    if report == "pr":
        assert from_tsv[("platform", "Total_Item_Requests")] == {"2026-01": 3, "2026-02": 2}


def test_the_header_rows_and_identifiers() -> None:
    made = reports.build(ask("ir"), SETTINGS, _usage())
    rows = tabular.rows(made)
    assert rows[4][:2] == ["Institution_ID", "examplerepo:0000000000000000; ISNI:0000000121032683"]
    assert sushi.to_json(made)["Report_Header"]["Institution_ID"] == {
        "Proprietary": ["examplerepo:0000000000000000"], "ISNI": ["0000000121032683"]}
    uris = {r.values["URI"] for r in made.rows}
    assert uris == {"https://repo.example.org/handle/1/2", "https://repo.example.org/id/eprint/77/"}
    empty = reports.build(ask("ir"), SETTINGS, Usage(["2026-01", "2026-02"]))
    assert tabular.rows(empty)[8][:2] == ["Exceptions", "3030: No Usage Available for Requested Dates"]
    assert sushi.to_json(empty)["Report_Items"] == []
    article_only = reports.build(ask("ir_a1"), reports.CounterSettings(data_type="Dataset"), _usage())
    assert article_only.rows == []  # IR_A1 holds articles only
