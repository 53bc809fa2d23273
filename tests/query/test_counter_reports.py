"""COUNTER reports from a log whose numbers are counted by hand (tests/query/scenario.py),
through watcher -> parser -> esindexer into a real Elasticsearch, read back by the API worker
(SUSHI JSON and TSV) and by `loglines report` (TSV, CSV and JSON), each checked by the
validator (tests/query/validator.py)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.query import scenario
from tests.query.deploy import Deployment
from tests.query.validator import check_json, check_tsv
from tests.support.servers import RedisServer, wait_for

pytestmark = pytest.mark.slow
PERIOD = {"customer_id": "0000000000000000", "begin_date": "2026-01-01", "end_date": "2026-02-28"}
KEY = {"api_key": "reader-token-0123456789abcdef"}
NOW = datetime.now(UTC).strftime("%Y-%m")
ITEMS = {scenario.A: "examplerepo:123456789/1", scenario.B: "examplerepo:123456789/2", scenario.C: "examplerepo:77"}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, es_url: str) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path_factory.mktemp("counter"), redis_server.url, es_url).setup()
    deployment.log.write_text("\n".join(scenario.lines()) + "\n")
    try:
        deployment.start()
        wait_for(lambda: deployment.count() == len(scenario.EVENTS), timeout=120, interval=0.5,
                 what=f"{len(scenario.EVENTS)} records indexed")
        yield deployment
    finally:
        deployment.close()


def expected(report: str) -> dict[tuple[str, str], dict[str, int]]:
    metrics = scenario.METRICS if report in ("pr", "ir") else ("Total_Item_Requests", "Unique_Item_Requests")
    out = {}
    for metric in metrics:
        if report.startswith("pr"):
            out[("platform", metric)] = scenario.expected_platform(metric)
        else:
            for item, proprietary in ITEMS.items():
                counts = scenario.expected_item(item, metric)
                if counts:
                    out[(proprietary, metric)] = counts
    return out


@pytest.mark.parametrize("report", ["pr", "ir", "pr_p1", "ir_a1"])
def test_the_api_reports_hold_the_hand_counted_numbers(deployed: Deployment, report: str) -> None:
    answer = deployed.get(f"/counter/r51/reports/{report}", headers={}, **PERIOD, **KEY)
    assert answer.status_code == 200, answer.text
    assert check_json(answer.json(), report.upper()) == expected(report)
    assert "Exceptions" not in answer.json()["Report_Header"]
    tsv = deployed.get(f"/counter/r51/reports/{report}", headers={}, format="tsv", **PERIOD, **KEY)
    assert tsv.status_code == 200 and tsv.headers["content-type"].startswith("text/tab-separated-values")
    assert tsv.content.startswith("\ufeff".encode())
    assert check_tsv(tsv.content.decode("utf-8"), report.upper()) == expected(report)


@pytest.mark.parametrize("report", ["pr", "ir"])
def test_loglines_report_without_the_api_worker_holds_the_same(deployed: Deployment, report: str,
                                                               tmp_path: Path) -> None:
    for fmt in ("tsv", "json", "csv"):
        out = tmp_path / f"{report}.{fmt}"
        done = deployed.loglines("report", report, "--begin", "2026-01", "--end", "2026-02", "--format", fmt,
                                 "-o", str(out))
        assert "7 double clicks removed" in done.stderr and "%" not in done.stderr  # no progress bar off a terminal
        text = out.read_text(encoding="utf-8")
        if fmt == "json":
            counts = check_json(json.loads(text), report.upper())
        elif fmt == "tsv":
            counts = check_tsv(text, report.upper())
        else:
            rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
            counts = check_tsv("".join("\t".join(r) + "\n" for r in rows), report.upper())
        assert counts == expected(report), fmt


def test_the_pr_layout_line_by_line(deployed: Deployment) -> None:
    tsv = deployed.get("/counter/r51/reports/pr", headers={}, format="tsv", attributes_to_show="Access_Method",
                       **PERIOD, **KEY).content.decode().lstrip("\ufeff").split("\n")
    assert tsv[0].split("\t")[:2] == ["Report_Name", "Platform Report"]
    assert tsv[4].split("\t")[:2] == ["Institution_ID", "examplerepo:0000000000000000"]
    assert tsv[7].split("\t")[:2] == ["Report_Attributes", "Attributes_To_Show=Access_Method"]
    assert tsv[9].split("\t")[:2] == ["Reporting_Period", "Begin_Date=2026-01-01; End_Date=2026-02-28"]
    assert tsv[14].split("\t") == ["Platform", "Data_Type", "Access_Method", "Metric_Type", "Reporting_Period_Total",
                                   "Jan-2026", "Feb-2026"]
    assert tsv[15].split("\t") == ["Example Repository", "Article", "Regular", "Total_Item_Investigations", "15", "9", "6"]
    assert tsv[18].split("\t") == ["Example Repository", "Article", "Regular", "Unique_Item_Requests", "9", "5", "4"]
    assert tsv[19:] == [""]


def test_status_and_the_report_list(deployed: Deployment) -> None:
    status = deployed.get("/counter/r51/status", headers={}, **KEY)
    assert status.status_code == 200 and status.json()[0]["Service_Active"] is True
    listed = deployed.get("/counter/r51/reports", headers={}, **KEY).json()
    assert [r["Report_ID"] for r in listed] == ["PR", "PR_P1", "IR", "IR_A1"]
    for entry in listed:
        assert {"Report_Name", "Report_ID", "Release", "Report_Description", "First_Month_Available",
                "Last_Month_Available"} <= set(entry) and entry["Release"] == "5.1"
        assert entry["Path"] == f"/r51/reports/{entry['Report_ID'].lower()}"
        assert (entry["First_Month_Available"], entry["Last_Month_Available"]) == ("2026-01", "2026-02")


@pytest.mark.parametrize("params, status, code", [
    ({"begin_date": "2026-13-01"}, 400, 3020),  # no such month
    ({"begin_date": "2026-02", "end_date": "2026-01"}, 400, 3020),  # the end before the beginning
    ({"begin_date": NOW, "end_date": NOW}, 400, 3020),  # the current month is not ready
    ({"begin_date": ""}, 400, 1030),
    ({"customer_id": ""}, 400, 1030),
    ({"customer_id": "someone-else"}, 403, 2010),
    ({"api_key": "wrong-token-0123456789"}, 401, 2020),
])
def test_requests_that_cannot_be_served_get_one_sushi_exception(deployed: Deployment, params: dict[str, str],
                                                                status: int, code: int) -> None:
    answer = deployed.get("/counter/r51/reports/ir", headers={}, **{**PERIOD, **KEY, **params})
    assert answer.status_code == status
    body = answer.json()
    assert body["Code"] == code and set(body) <= {"Code", "Message", "Data", "Help_URL"} and body["Message"]


def test_an_unknown_report_is_a_404(deployed: Deployment) -> None:
    answer = deployed.get("/counter/r51/reports/tr_j1", headers={}, **PERIOD, **KEY)
    assert answer.status_code == 404 and "pr, pr_p1, ir, ir_a1" in answer.json()["Data"]


def test_what_can_be_ignored_is_said_in_the_header(deployed: Deployment) -> None:
    answer = deployed.get("/counter/r51/reports/pr", headers={}, colour="red", metric_type="Total_Item_Requests|Hits",
                          granularity="Total", **PERIOD, **KEY).json()
    codes = {e["Code"]: e.get("Data", "") for e in answer["Report_Header"]["Exceptions"]}
    assert codes[3050] == "colour" and "Hits" in codes[3060] and 3062 in codes
    assert check_json(answer, "PR") == {("platform", "Total_Item_Requests"): {"2026-01": 6, "2026-02": 5}}
    assert answer["Report_Header"]["Report_Filters"]["Metric_Type"] == ["Total_Item_Requests"]
    empty = deployed.get("/counter/r51/reports/ir", headers={}, **{**PERIOD, **KEY, "begin_date": "2026-05",
                                                                   "end_date": "2026-06"}).json()
    assert empty["Report_Items"] == [] and empty["Report_Header"]["Exceptions"][0]["Code"] == 3030
    ongoing = deployed.get("/counter/r51/reports/pr", headers={}, **{**PERIOD, **KEY, "end_date": NOW}).json()
    assert ongoing["Report_Header"]["Exceptions"][0]["Code"] == 3031
    assert ongoing["Report_Header"]["Report_Filters"]["End_Date"] < f"{NOW}-01"
    assert check_json(ongoing, "PR")[("platform", "Total_Item_Requests")] == {"2026-01": 6, "2026-02": 5}
