"""A validator for COUNTER 5.1 reports, written from the Code of Practice (section 3.2 and 4, the
report tables) and the COUNTER_SUSHI API specification's required fields: it checks what the
COUNTER validator checks on layout and required elements, and returns the counts it read.

``check_tsv(text, report_id)`` and ``check_json(doc, report_id)`` both return
``{(row key, metric): {yyyy-mm: count}}``, the row key being the Proprietary_ID of an item, or
"platform".
"""

from __future__ import annotations

import calendar
import re
from typing import Any

HEADER = ["Report_Name", "Report_ID", "Release", "Institution_Name", "Institution_ID", "Metric_Types",
          "Report_Filters", "Report_Attributes", "Exceptions", "Reporting_Period", "Created", "Created_By",
          "Registry_Record"]
NAMES = {"PR": "Platform Report", "PR_P1": "Platform Usage", "IR": "Item Report", "IR_A1": "Journal Article Requests"}
METRICS = {
    "PR": {"Searches_Platform", "Total_Item_Investigations", "Total_Item_Requests", "Unique_Item_Investigations",
           "Unique_Item_Requests", "Unique_Title_Investigations", "Unique_Title_Requests"},
    "PR_P1": {"Searches_Platform", "Total_Item_Requests", "Unique_Item_Requests", "Unique_Title_Requests"},
    "IR": {"Total_Item_Investigations", "Total_Item_Requests", "Unique_Item_Investigations", "Unique_Item_Requests",
           "Limit_Exceeded", "No_License"},
    "IR_A1": {"Total_Item_Requests", "Unique_Item_Requests"},
}
COLUMNS = {
    "PR": ["Platform", "Data_Type", "Metric_Type", "Reporting_Period_Total"],
    "PR_P1": ["Platform", "Data_Type", "Metric_Type", "Reporting_Period_Total"],
    "IR": ["Item", "Publisher", "Publisher_ID", "Platform", "DOI", "Proprietary_ID", "ISBN", "Print_ISSN",
           "Online_ISSN", "URI", "Data_Type", "Metric_Type", "Reporting_Period_Total"],
    "IR_A1": ["Item", "Publisher", "Publisher_ID", "Platform", "Authors", "Publication_Date", "Article_Version",
              "DOI", "Proprietary_ID", "Print_ISSN", "Online_ISSN", "URI", "Parent_Title", "Parent_Authors",
              "Parent_Article_Version", "Parent_DOI", "Parent_Proprietary_ID", "Parent_Print_ISSN",
              "Parent_Online_ISSN", "Parent_URI", "Access_Type", "Metric_Type", "Reporting_Period_Total"],
}
STANDARD_FILTERS = {"PR_P1": {"Access_Method": ["Regular"]},
                    "IR_A1": {"Data_Type": ["Article"], "Access_Method": ["Regular"]}}
STANDARD_METRICS = {"PR_P1": ["Searches_Platform", "Total_Item_Requests", "Unique_Item_Requests", "Unique_Title_Requests"],
                    "IR_A1": ["Total_Item_Requests", "Unique_Item_Requests"]}
DATA_TYPES = {"Article", "Audiovisual", "Book", "Book_Segment", "Conference", "Conference_Item", "Database_Full_Item",
              "Dataset", "Image", "Interactive_Resource", "Journal", "Multimedia", "News_Item", "Newspaper_or_Newsletter",
              "Other", "Patent", "Reference_Item", "Reference_Work", "Report", "Software", "Sound", "Standard",
              "Thesis_or_Dissertation", "Unspecified"}
MESSAGES = {0: None, 3030: "No Usage Available for Requested Dates", 3031: "Usage Not Ready for Requested Dates",
            3032: "Usage No Longer Available for Requested Dates", 3040: "Partial Data Returned",
            3050: "Parameter Not Recognized in this Context", 3060: "Invalid ReportFilter Value",
            3061: "Incongruous ReportFilter Value", 3062: "Invalid ReportAttribute Value",
            3063: "Components Not Supported", 3070: "Required ReportFilter Missing"}
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
PROPRIETARY = re.compile(r"^[a-zA-Z][a-zA-Z0-9_./]{1,17}:.+")
REGISTRY = re.compile(r"^(https://registry.projectcounter.org/platform/[0-9a-f-]{36}|)$")
COUNT_KEY = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")


def months(begin: str, end: str) -> list[str]:
    out, (year, month) = [], (int(begin[:4]), int(begin[5:7]))
    while f"{year:04d}-{month:02d}" <= end[:7]:
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def _period(value: str) -> tuple[str, str]:
    match = re.fullmatch(r"Begin_Date=(\d{4}-\d{2}-01); End_Date=(\d{4}-(\d{2})-(\d{2}))", value)
    assert match, f"Reporting_Period {value!r}"
    end = match.group(2)
    assert int(end[8:]) == calendar.monthrange(int(end[:4]), int(end[5:7]))[1], f"End_Date {end} is not a month's end"
    return match.group(1), end


def _exceptions(value: str) -> list[int]:
    codes = []
    for part in [p for p in value.split("; ") if p] if value else []:
        match = re.match(r"^(\d+): ([^(]+?)(?: \((.*)\))?$", part)
        assert match, f"Exception {part!r} is not 'Code: Message (Data)'"
        code = int(match.group(1))
        assert code in MESSAGES and MESSAGES[code] in (None, match.group(2)), f"Exception {part!r}"
        codes.append(code)
    return codes


def check_tsv(text: str, report_id: str) -> dict[tuple[str, str], dict[str, int]]:
    assert "\r" not in text, "TSV rows end with a line feed"
    rows = [line.split("\t") for line in text.lstrip("\ufeff").rstrip("\n").split("\n")]
    assert [r[0] for r in rows[:13]] == HEADER, "the 13 header labels, in order"
    head = {r[0]: (r[1] if len(r) > 1 else "") for r in rows[:13]}
    assert all(not cell for r in rows[:13] for cell in r[2:]), "header values only in column B"
    assert all(not cell for cell in rows[13]), "row 14 is blank"
    assert head["Report_Name"] == NAMES[report_id] and head["Report_ID"] == report_id and head["Release"] == "5.1"
    assert head["Institution_Name"], "Institution_Name"
    for part in head["Institution_ID"].split("; "):
        assert re.match(r"^[A-Za-z][A-Za-z0-9_./]*:.+$", part), f"Institution_ID {part!r}"
    if head["Metric_Types"]:
        given = head["Metric_Types"].split("; ")
        assert set(given) <= METRICS[report_id], given
        if report_id in STANDARD_METRICS:
            assert given == STANDARD_METRICS[report_id]
    filters = dict(part.split("=", 1) for part in head["Report_Filters"].split("; ") if part)
    for name, values in STANDARD_FILTERS.get(report_id, {}).items():
        assert filters.get(name, "").split("|") == values, f"Report_Filters {head['Report_Filters']!r}"
    if head["Report_Attributes"]:
        assert re.fullmatch(r"[A-Za-z_]+=[^;]+(; [A-Za-z_]+=[^;]+)*", head["Report_Attributes"])
    _exceptions(head["Exceptions"])
    begin, end = _period(head["Reporting_Period"])
    assert RFC3339.match(head["Created"]) and head["Created"].endswith("Z"), f"Created {head['Created']!r}"
    assert head["Created_By"] and REGISTRY.match(head["Registry_Record"])
    headings = rows[14]
    required = COLUMNS[report_id]
    assert [h for h in headings if h in required] == required, f"column headings {headings}"
    first_month = headings.index("Reporting_Period_Total") + 1
    period = months(begin, end)
    assert headings[first_month:] == [f"{MONTHS[int(m[5:]) - 1]}-{m[:4]}" for m in period], headings[first_month:]
    out: dict[tuple[str, str], dict[str, int]] = {}
    for row in rows[15:]:
        assert len(row) == len(headings), f"row width {len(row)}, headings {len(headings)}"
        cells = dict(zip(headings, row, strict=True))
        metric = cells["Metric_Type"]
        assert metric in METRICS[report_id], metric
        if "Data_Type" in cells:
            assert cells["Data_Type"] in DATA_TYPES
        counts = [int(c) for c in row[first_month:]]
        assert all(n >= 0 for n in counts) and sum(counts) == int(cells["Reporting_Period_Total"]) > 0, row
        if report_id.startswith("IR"):
            assert any(cells.get(k) for k in ("DOI", "Proprietary_ID", "ISBN", "Print_ISSN", "Online_ISSN", "URI"))
            assert not cells["Proprietary_ID"] or PROPRIETARY.match(cells["Proprietary_ID"])
        key = cells["Proprietary_ID"] if report_id.startswith("IR") else "platform"
        assert (key, metric) not in out, f"two rows for {key} {metric}"
        out[(key, metric)] = {m: n for m, n in zip(period, counts, strict=True) if n}
    _unique_within_total(out)
    return out


def _unique_within_total(counts: dict[tuple[str, str], dict[str, int]]) -> None:
    for (key, metric), by_month in counts.items():
        if metric.startswith("Unique_Item_"):
            total = counts.get((key, metric.replace("Unique", "Total")), {})
            for month, n in by_month.items():
                assert n <= total.get(month, n), f"{key} {metric} {month}: {n} over the total"


def _header(header: dict[str, Any], report_id: str) -> None:
    required = {"Report_Name", "Report_ID", "Release", "Institution_Name", "Institution_ID", "Report_Filters",
                "Created", "Created_By", "Registry_Record"}
    assert required <= set(header), f"Report_Header lacks {required - set(header)}"
    extra = set(header) - required - {"Report_Attributes", "Exceptions"}
    assert not extra, f"Report_Header has {extra}"
    assert header["Release"] == "5.1" and header["Report_ID"] == report_id and header["Report_Name"] == NAMES[report_id]
    assert len(header["Institution_Name"]) >= 2 and header["Institution_ID"], "Institution_ID minProperties 1"
    for namespace, values in header["Institution_ID"].items():
        assert namespace in ("ISNI", "ROR", "Proprietary", "ISIL", "OCLC") and isinstance(values, list) and values
        if namespace == "Proprietary":
            assert all(PROPRIETARY.match(v) for v in values)
    filters = header["Report_Filters"]
    for name in ("Begin_Date", "End_Date"):
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", filters[name]), f"{name} {filters.get(name)!r}"
    for name, values in STANDARD_FILTERS.get(report_id, {}).items():
        assert filters[name] == values, f"Report_Filters.{name}"
    if report_id in STANDARD_METRICS:
        assert filters["Metric_Type"] == STANDARD_METRICS[report_id]
    assert RFC3339.match(header["Created"]) and len(header["Created_By"]) >= 2
    assert REGISTRY.match(header["Registry_Record"])
    if "Report_Attributes" in header:
        assert header["Report_Attributes"], "Report_Attributes minProperties 1"
    if "Exceptions" in header:
        assert header["Exceptions"], "Exceptions minItems 1"
        for exception in header["Exceptions"]:
            assert set(exception) <= {"Code", "Message", "Data", "Help_URL"} and isinstance(exception["Code"], int)
            assert MESSAGES.get(exception["Code"], "?") in (None, exception["Message"])


def _performance(performance: dict[str, Any], report_id: str, where: str) -> dict[str, dict[str, int]]:
    assert performance, f"{where}: an empty Performance"
    for metric, counts in performance.items():
        assert metric in METRICS[report_id], f"{where}: {metric}"
        assert counts, f"{where}: {metric} has empty Counts (omit it)"
        for key, value in counts.items():
            assert COUNT_KEY.match(key) and isinstance(value, int) and value > 0, f"{where}: {metric} {key}={value}"
    return performance


def check_json(doc: dict[str, Any], report_id: str) -> dict[tuple[str, str], dict[str, int]]:
    assert set(doc) == {"Report_Header", "Report_Items"}, set(doc)
    _header(doc["Report_Header"], report_id)
    out: dict[tuple[str, str], dict[str, int]] = {}
    if report_id.startswith("PR"):
        for item in doc["Report_Items"]:
            assert set(item) == {"Platform", "Attribute_Performance"} and len(item["Platform"]) >= 2
            assert item["Attribute_Performance"], "Attribute_Performance minItems 1"
            for attributes in item["Attribute_Performance"]:
                allowed = {"Data_Type", "Performance"} | ({"Access_Method"} if report_id == "PR" else set())
                assert {"Data_Type", "Performance"} <= set(attributes) <= allowed, set(attributes)
                assert attributes["Data_Type"] in DATA_TYPES
                for metric, counts in _performance(attributes["Performance"], report_id, item["Platform"]).items():
                    out[("platform", metric)] = counts
        return out
    for group in doc["Report_Items"]:
        assert set(group) == {"Items"} and group["Items"], "a Report_Item without a parent holds Items only"
        for item in group["Items"]:
            assert {"Item", "Publisher", "Platform", "Attribute_Performance"} <= set(item)
            assert isinstance(item["Item"], str) and isinstance(item["Publisher"], str) and len(item["Platform"]) >= 2
            ids = item.get("Item_ID") or {}
            assert ids and set(ids) <= {"DOI", "ISBN", "Online_ISSN", "Print_ISSN", "Proprietary", "URI"}
            assert "Proprietary" not in ids or PROPRIETARY.match(ids["Proprietary"])
            for attributes in item["Attribute_Performance"]:
                if report_id == "IR_A1":
                    assert set(attributes) == {"Access_Type", "Performance"}
                else:
                    assert {"Data_Type", "Performance"} <= set(attributes) <= {"Data_Type", "Performance", "YOP",
                                                                                "Access_Type", "Access_Method"}
                    assert attributes["Data_Type"] in DATA_TYPES
                assert attributes.get("Access_Type", "Open") in ("Controlled", "Open", "Free_To_Read")
                for metric, counts in _performance(attributes["Performance"], report_id, ids.get("Proprietary", "")).items():
                    out[(ids.get("Proprietary", ""), metric)] = counts
    _unique_within_total(out)
    return out
