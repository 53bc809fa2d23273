"""COUNTER 5.1 reports from usage: PR, PR_P1, IR and IR_A1.

A :class:`Request` (what was asked, as SUSHI parameters or command-line options say it) and the
repository's :class:`CounterSettings` make a :class:`Report`: the header (its 13 elements) and
one row per item (or platform), attribute values and metric, with its monthly counts.
:mod:`pipeline.query.tabular` writes it as TSV or CSV, :mod:`pipeline.query.sushi` as
COUNTER_SUSHI JSON. What a log cannot tell is configured once: the Data_Type and Access_Type of
the content (``data_type``, ``access_type``); items have no title in a log, so they are named by
their identifiers (Proprietary_ID ``<platform_id>:<item id>``, and URI with ``base_url``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.query.usage import METRICS, TII, TIR, UII, UIR, Item, Usage

DATA_TYPES = ("Article", "Audiovisual", "Book", "Book_Segment", "Conference", "Conference_Item",
              "Database_Full_Item", "Dataset", "Image", "Interactive_Resource", "Journal", "Multimedia",
              "News_Item", "Newspaper_or_Newsletter", "Other", "Patent", "Reference_Item", "Reference_Work",
              "Report", "Software", "Sound", "Standard", "Thesis_or_Dissertation", "Unspecified")
ACCESS_TYPES = ("Controlled", "Open", "Free_To_Read")
ACCESS_METHODS = ("Regular", "TDM")
_HANDLE = re.compile(r"^\d+(?:\.\d+)*/\d+$")


@dataclass(frozen=True)
class Definition:
    id: str
    name: str
    items: bool  # an item report (else a platform report)
    metrics: tuple[str, ...]  # what may be asked for
    produced: tuple[str, ...]  # what it can hold here
    attributes: tuple[str, ...] = ()  # Attributes_To_Show it takes
    fixed: tuple[tuple[str, tuple[str, ...]], ...] = ()  # a Standard View's filters

    @property
    def path(self) -> str:
        return f"/r51/reports/{self.id.lower()}"


REPORTS = {d.id.lower(): d for d in (
    Definition("PR", "Platform Report", False,
               ("Searches_Platform", TII, TIR, UII, UIR, "Unique_Title_Investigations", "Unique_Title_Requests"),
               METRICS, ("Access_Method",)),
    Definition("PR_P1", "Platform Usage", False, (), (TIR, UIR),
               fixed=(("Access_Method", ("Regular",)),
                      ("Metric_Type", ("Searches_Platform", TIR, UIR, "Unique_Title_Requests")))),
    Definition("IR", "Item Report", True, (*METRICS, "Limit_Exceeded", "No_License"), METRICS,
               ("Access_Type", "Access_Method")),
    Definition("IR_A1", "Journal Article Requests", True, (), (TIR, UIR),
               fixed=(("Data_Type", ("Article",)), ("Access_Method", ("Regular",)), ("Metric_Type", (TIR, UIR)))),
)}


@dataclass(frozen=True)
class CounterSettings:
    platform: str = "Repository"
    platform_id: str = "loglines"  # namespace of proprietary ids
    institution_name: str = "The World"
    customer_id: str = "0000000000000000"
    institution_ids: tuple[str, ...] = ()  # more "namespace:value" ids (ISNI:…, ROR:…)
    created_by: str = "loglines"
    registry_record: str = ""
    publisher: str = ""
    data_type: str = "Article"
    access_type: str = "Open"
    base_url: str = ""

    def institution_id(self) -> list[str]:
        return [f"{self.platform_id}:{self.customer_id}", *self.institution_ids]


@dataclass(frozen=True)
class ReportException:
    code: int
    message: str
    data: str = ""

    def text(self) -> str:
        return f"{self.code}: {self.message}" + (f" ({self.data})" if self.data else "")

    def json(self) -> dict[str, Any]:
        return {"Code": self.code, "Message": self.message, **({"Data": self.data} if self.data else {})}


@dataclass(frozen=True)
class Request:
    report: Definition
    begin: datetime  # first day of the first month
    end: datetime  # first day after the last month
    metric_types: tuple[str, ...] = ()  # asked for (empty: all)
    data_types: tuple[str, ...] = ()
    access_methods: tuple[str, ...] = ()
    access_types: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()  # Attributes_To_Show
    exceptions: tuple[ReportException, ...] = ()  # found while reading the request


@dataclass
class Row:
    values: dict[str, str]  # column -> value, before Metric_Type
    item: Item | None
    metric: str
    counts: list[int]  # one per month of the period, in order (Report.months)


@dataclass
class Report:
    request: Request
    settings: CounterSettings
    created: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    exceptions: list[ReportException] = field(default_factory=list)
    months: list[str] = field(default_factory=list)  # yyyy-mm, the period's

    def filters(self) -> list[tuple[str, tuple[str, ...]]]:
        """The Report_Filters applied (besides the dates and Metric_Type), in order."""
        fixed = dict(self.request.report.fixed)
        out = [(name, values) for name, values in fixed.items() if name != "Metric_Type"]
        asked = (("Data_Type", self.request.data_types), ("Access_Type", self.request.access_types),
                 ("Access_Method", self.request.access_methods))
        for name, values in asked:
            if values and name not in fixed:
                out.append((name, values))
        return out

    def metric_types(self) -> tuple[str, ...]:
        return dict(self.request.report.fixed).get("Metric_Type", self.request.metric_types)


def _item_ids(settings: CounterSettings, item: Item, kinds: set[str]) -> dict[str, str]:
    repository, item_id = item
    ids = {"Proprietary_ID": f"{settings.platform_id}:{item_id}"}
    base = settings.base_url.rstrip("/")
    if base:
        if repository == "eprints":
            ids["URI"] = f"{base}/id/eprint/{item_id}/"
        elif _HANDLE.match(item_id):
            ids["URI"] = f"{base}/handle/{item_id}"
        else:
            ids["URI"] = f"{base}/items/{item_id}" if "item" in kinds else f"{base}/bitstreams/{item_id}/download"
    return ids


def build(request: Request, settings: CounterSettings, usage: Usage) -> Report:
    definition = request.report
    wanted = request.metric_types or definition.produced
    fixed = dict(definition.fixed)
    metrics = [m for m in definition.produced if m in wanted and m in fixed.get("Metric_Type", wanted)]
    included = ((not request.data_types or settings.data_type in request.data_types)
                and settings.data_type in fixed.get("Data_Type", (settings.data_type,))
                and (not request.access_types or settings.access_type in request.access_types)
                and (not request.access_methods or "Regular" in request.access_methods))
    shown = [a for a in request.attributes if a in definition.attributes]
    if definition.items:
        columns = ["Item", "Publisher", "Publisher_ID", "Platform"]
        if definition.id == "IR_A1":
            columns += ["Authors", "Publication_Date", "Article_Version", "DOI", "Proprietary_ID", "Print_ISSN",
                        "Online_ISSN", "URI", "Parent_Title", "Parent_Authors", "Parent_Article_Version",
                        "Parent_DOI", "Parent_Proprietary_ID", "Parent_Print_ISSN", "Parent_Online_ISSN",
                        "Parent_URI", "Access_Type"]
        else:
            columns += ["DOI", "Proprietary_ID", "ISBN", "Print_ISSN", "Online_ISSN", "URI", "Data_Type",
                        *[a for a in ("Access_Type", "Access_Method") if a in shown]]
    else:
        columns = ["Platform", "Data_Type", *(["Access_Method"] if "Access_Method" in shown else [])]
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    report = Report(request, settings, created, columns + ["Metric_Type", "Reporting_Period_Total", *usage.months],
                    exceptions=list(request.exceptions), months=list(usage.months))
    common = {"Platform": settings.platform, "Data_Type": settings.data_type, "Access_Method": "Regular",
              "Access_Type": settings.access_type, "Publisher": settings.publisher}
    if included:
        if definition.items:
            for item in sorted(usage.items, key=lambda i: (i[1], i[0])):
                values = {**common, **_item_ids(settings, item, usage.kinds.get(item, set()))}
                _rows(report, values, item, usage.items[item], metrics, usage.months)
        else:
            _rows(report, dict(common), None, usage.platform(), metrics, usage.months)
    if not report.rows:
        report.exceptions.append(ReportException(3030, "No Usage Available for Requested Dates"))
    if usage.unkeyed:
        report.exceptions.append(ReportException(
            3040, "Partial Data Returned", f"{usage.unkeyed} counted records were indexed without the COUNTER "
            "keys (session, click_slots) and are not in this report"))
    return report


_NONE = [0, 0, 0, 0]


def _rows(report: Report, values: dict[str, str], item: Item | None, months: dict[str, list[int]],
          metrics: list[str], period: list[str]) -> None:
    for metric in metrics:
        index = METRICS.index(metric)
        counts = [months.get(m, _NONE)[index] for m in period]
        if any(counts):  # a row whose total is zero is left out
            report.rows.append(Row(values, item, metric, counts))
