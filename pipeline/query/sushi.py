"""The COUNTER_SUSHI API (release 5.1) side of reports: parameters, Exceptions and JSON.

Parameters are read as the specification names them (``begin_date``, ``end_date``,
``metric_type``, ...; several values joined by ``|``). A request that cannot be served is a
:class:`SushiError`: one Exception with its HTTP status (1030 without dates or customer_id, 3020
for bad dates, 2010 for another customer_id). What can be ignored is ignored and said in the
report's Exceptions (3050 for unknown parameters, 3060 and 3062 for filter and attribute values
this server does not support, 3031 when the period reaches the current month, which is then
left out). Codes and messages are those of the Code of Practice's Appendix D.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.query.params import COUNTED, next_month
from pipeline.query.reports import (
    ACCESS_METHODS,
    ACCESS_TYPES,
    DATA_TYPES,
    REPORTS,
    CounterSettings,
    Definition,
    Report,
    ReportException,
    Request,
)
from pipeline.query.source import Source
from pipeline.query.usage import METRICS

MESSAGES = {
    1000: ("Service Not Available", 503), 1010: ("Service Busy", 503),
    1030: ("Insufficient Information to Process Request", 400),
    2000: ("Requestor Not Authorized to Access Service", 401),
    2010: ("Requestor is Not Authorized to Access Usage for Institution", 403),
    2020: ("APIKey Invalid", 401), 3020: ("Invalid Date Arguments", 400),
    3031: ("Usage Not Ready for Requested Dates", 200), 3050: ("Parameter Not Recognized in this Context", 200),
    3060: ("Invalid ReportFilter Value", 200), 3062: ("Invalid ReportAttribute Value", 200),
    3063: ("Components Not Supported", 200),
}
COMMON = ("customer_id", "requestor_id", "api_key", "platform", "begin_date", "end_date")
TAKES = {"pr": (*COMMON, "metric_type", "data_type", "access_method", "attributes_to_show", "granularity"),
         "ir": (*COMMON, "metric_type", "data_type", "access_method", "access_type", "attributes_to_show",
                "granularity", "include_parent_details", "include_component_details")}
#: parameters the specification gives a report that this server does not filter by: 3060
UNSUPPORTED = {"pr": ("attributed", "country_code", "subdivision_code"),
               "ir": ("yop", "item_id", "author", "attributed", "country_code", "subdivision_code")}


class SushiError(Exception):
    def __init__(self, code: int, data: str = "") -> None:
        self.code, self.data = code, data
        self.message, self.status = MESSAGES[code]
        super().__init__(f"{code} {self.message}: {data}")

    def json(self) -> dict[str, Any]:
        return ReportException(self.code, self.message, self.data).json()


def notice(code: int, data: str) -> ReportException:
    return ReportException(code, MESSAGES[code][0], data)


def month(param: str, text: str) -> datetime:
    value = text.strip()
    for fmt, size in (("%Y-%m-%d", 10), ("%Y-%m", 7)):
        try:
            if len(value) == size:
                return datetime.strptime(value, fmt).replace(day=1, tzinfo=UTC)
        except ValueError:
            break
    raise SushiError(3020, f"{param}={value[:40]!r}: use yyyy-mm-dd or yyyy-mm")


def request(report_id: str, params: Mapping[str, Sequence[str]], settings: CounterSettings,
            max_months: int, now: datetime | None = None) -> Request:
    """The report asked for, or a :class:`SushiError`; what is ignored is in its exceptions."""
    definition = REPORTS[report_id]
    one = {name: values[-1] for name, values in params.items() if values}
    notes: list[ReportException] = []
    if not one.get("customer_id"):  # of several errors the lowest code is answered
        raise SushiError(1030, "customer_id is required")
    if not one.get("begin_date") or not one.get("end_date"):
        raise SushiError(1030, "begin_date and end_date are required")
    if one["customer_id"] != settings.customer_id:
        raise SushiError(2010, f"customer_id {one['customer_id'][:40]!r} is not known here")
    begin, end = range_of(one["begin_date"], one["end_date"], max_months, notes, now)
    takes = TAKES.get(report_id, COMMON)
    unsupported = UNSUPPORTED.get(report_id, ())
    unknown = sorted(n for n in params if n not in takes and n not in unsupported)
    if unknown:
        notes.append(notice(3050, ", ".join(n[:40] for n in unknown[:20])))
    for name in unsupported:
        if name in params:
            notes.append(notice(3060, f"{name}: not supported here, ignored"))
    if one.get("platform") and one["platform"] != settings.platform:
        notes.append(notice(3060, f"platform={one['platform'][:60]!r}: this server reports {settings.platform!r}"))

    def values(name: str, allowed: Sequence[str], code: int = 3060) -> tuple[str, ...]:
        if name not in takes or not one.get(name):
            return ()
        given = [v.strip() for v in one[name].split("|") if v.strip()]
        bad = [v for v in given if v not in allowed]
        if bad:
            notes.append(notice(code, f"{name}: {'|'.join(v[:40] for v in bad)}"))
        return tuple(v for v in given if v in allowed)

    metric_types = values("metric_type", definition.metrics)
    data_types = values("data_type", DATA_TYPES)
    access_methods = values("access_method", ACCESS_METHODS)
    access_types = values("access_type", ACCESS_TYPES)
    attributes = values("attributes_to_show", definition.attributes, 3062)
    if "granularity" in takes and one.get("granularity", "Month") != "Month":
        notes.append(notice(3062, f"granularity={one['granularity'][:20]}: only Month"))
    if one.get("include_parent_details", "False") == "True" and "include_parent_details" in takes:
        notes.append(notice(3062, "include_parent_details: no parent details in the logs"))
    if one.get("include_component_details", "False") == "True" and "include_component_details" in takes:
        notes.append(notice(3063, "include_component_details"))
    return Request(definition, begin, end, metric_types, data_types, access_methods, access_types, attributes,
                   tuple(notes))


def range_of(begin_text: str, end_text: str, max_months: int, notes: list[ReportException],
             now: datetime | None = None) -> tuple[datetime, datetime]:
    """[first day of the begin month, first day after the end month), the current month left
    out (3031); 3020 for what cannot be reported."""
    begin, last = month("begin_date", begin_text), month("end_date", end_text)
    if last < begin:
        raise SushiError(3020, f"end_date {end_text[:10]} is before begin_date {begin_text[:10]}")
    current = (now or datetime.now(UTC)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if begin >= current:
        raise SushiError(3020, f"begin_date {begin_text[:10]}: usage of the current month or later is not ready")
    end = next_month(last)
    if end > current:
        ready = (current - timedelta(days=1)).strftime("%Y-%m")
        notes.append(notice(3031, f"usage is processed up to {ready}: the report ends there"))
        end = current
    months = (end.year - begin.year) * 12 + end.month - begin.month
    if months > max_months:
        raise SushiError(3020, f"{months} months asked for; at most {max_months} in one report")
    return begin, end


def institution_ids(settings: CounterSettings) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for text in settings.institution_id():
        namespace, _, value = text.partition(":")
        if namespace in ("ISNI", "ROR", "ISIL", "OCLC"):
            out.setdefault(namespace, []).append(value)
        else:
            out.setdefault("Proprietary", []).append(text)
    return out


def to_json(report: Report) -> dict[str, Any]:
    from pipeline.query.tabular import period

    definition, settings = report.request.report, report.settings
    begin, end = period(report)
    filters: dict[str, Any] = {"Begin_Date": begin, "End_Date": end}
    if report.metric_types():
        filters["Metric_Type"] = list(report.metric_types())
    filters.update({name: list(values) for name, values in report.filters()})
    header: dict[str, Any] = {
        "Report_Name": definition.name, "Report_ID": definition.id, "Release": "5.1",
        "Institution_Name": settings.institution_name, "Institution_ID": institution_ids(settings),
        "Report_Filters": filters, "Created": report.created, "Created_By": settings.created_by,
        "Registry_Record": settings.registry_record}
    shown = [a for a in report.request.attributes if a in definition.attributes]
    if shown:
        header["Report_Attributes"] = {"Attributes_To_Show": shown}
    if report.exceptions:
        header["Exceptions"] = [e.json() for e in report.exceptions]
    grouped: dict[Any, dict[str, dict[str, int]]] = {}  # item (or None) -> metric -> month -> count
    for row in report.rows:
        grouped.setdefault(row.item, {})[row.metric] = {m: n for m, n in zip(report.months, row.counts, strict=True) if n}
    attributes: dict[str, Any] = {}
    if definition.id != "IR_A1":
        attributes["Data_Type"] = settings.data_type
    if definition.id == "IR_A1" or "Access_Type" in shown:
        attributes["Access_Type"] = settings.access_type
    if "Access_Method" in shown:
        attributes["Access_Method"] = "Regular"
    ordered = {m: i for i, m in enumerate(METRICS)}
    if not definition.items:
        items = [{"Platform": settings.platform, "Attribute_Performance": [
            {**attributes, "Performance": dict(sorted(p.items(), key=lambda kv: ordered[kv[0]]))}]}
            for p in grouped.values()]
        return {"Report_Header": header, "Report_Items": items}
    entries = []
    rows_by_item = {row.item: row for row in report.rows}
    for item, performance in grouped.items():
        row = rows_by_item[item]
        ids = {"Proprietary": row.values["Proprietary_ID"], **({"URI": row.values["URI"]} if "URI" in row.values else {})}
        entries.append({"Item": "", "Publisher": settings.publisher, "Platform": settings.platform, "Item_ID": ids,
                        "Attribute_Performance": [{**attributes, "Performance": performance}]})
    return {"Report_Header": header, "Report_Items": [{"Items": entries}] if entries else []}


def status(settings: CounterSettings, active: bool, note: str = "") -> list[dict[str, Any]]:
    entry: dict[str, Any] = {"Description": f"COUNTER usage reports for {settings.platform}", "Service_Active": active}
    if settings.registry_record:
        entry["Registry_Record"] = settings.registry_record
    if note:
        entry["Note"] = note
    return [entry]


@dataclass(frozen=True)
class Available:
    first: str  # yyyy-mm
    last: str


def available(src: Source, now: datetime | None = None) -> Available:
    """The first month with usage and the last complete one (the previous month at most)."""
    current = (now or datetime.now(UTC)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    previous = (current - timedelta(days=1)).replace(day=1)
    found = src.search(query={"bool": {"filter": list(COUNTED)}}, size=0, aggs={
        "first": {"min": {"field": src.time_field}}, "last": {"max": {"field": src.time_field}}})
    aggs = found.get("aggregations") or {}
    first_ms, last_ms = (aggs.get("first") or {}).get("value"), (aggs.get("last") or {}).get("value")
    if first_ms is None or last_ms is None:
        return Available(previous.strftime("%Y-%m"), previous.strftime("%Y-%m"))
    first = min(datetime.fromtimestamp(first_ms / 1000, UTC), previous)
    last = max(min(datetime.fromtimestamp(last_ms / 1000, UTC), previous), first)
    return Available(first.strftime("%Y-%m"), last.strftime("%Y-%m"))


def report_list(settings: CounterSettings, months: Available) -> list[dict[str, Any]]:
    descriptions = {"pr": "Usage of the whole platform, by Data_Type", "pr_p1": "Requests on the platform",
                    "ir": "Usage of each item", "ir_a1": "Requests of each article"}
    return [{"Report_Name": d.name, "Report_ID": d.id, "Release": "5.1", "Report_Description": descriptions[key],
             "Path": d.path, "First_Month_Available": months.first, "Last_Month_Available": months.last}
            for key, d in REPORTS.items()]


def definition(report_id: str) -> Definition | None:
    return REPORTS.get(report_id)
