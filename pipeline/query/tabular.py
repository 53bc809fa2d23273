"""A COUNTER report as a tabular file (TSV, or CSV): 13 header rows, a blank row, the body.

The header names come in the order the Code of Practice sets (Report_Name, Report_ID, Release,
Institution_Name, Institution_ID, Metric_Types, Report_Filters, Report_Attributes, Exceptions,
Reporting_Period, Created, Created_By, Registry_Record), several values in one cell separated
by ``"; "`` and several values of one filter by ``|``; row 14 is blank; then the column
headings, the rows (``Mmm-yyyy`` for each month) and nothing else. The file is UTF-8 with a byte
order mark, as the Code of Practice's sample files are (spreadsheets then read it as UTF-8);
each row is as wide as the body, as there.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import timedelta

from pipeline.query.reports import Report

HEADER = ("Report_Name", "Report_ID", "Release", "Institution_Name", "Institution_ID", "Metric_Types",
          "Report_Filters", "Report_Attributes", "Exceptions", "Reporting_Period", "Created",
          "Created_By", "Registry_Record")
BOM = "\ufeff"
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def period(report: Report) -> tuple[str, str]:
    """Begin_Date and End_Date (the last day of the last month)."""
    last = report.request.end - timedelta(days=1)
    return report.request.begin.strftime("%Y-%m-%d"), last.strftime("%Y-%m-%d")


def header(report: Report) -> list[tuple[str, str]]:
    definition, settings = report.request.report, report.settings
    begin, end = period(report)
    filters = "; ".join(f"{name}={'|'.join(values)}" for name, values in report.filters())
    shown = [a for a in report.request.attributes if a in definition.attributes]
    values = (definition.name, definition.id, "5.1", settings.institution_name,
              "; ".join(settings.institution_id()), "; ".join(report.metric_types()), filters,
              f"Attributes_To_Show={'|'.join(shown)}" if shown else "",
              "; ".join(e.text() for e in report.exceptions), f"Begin_Date={begin}; End_Date={end}",
              report.created, settings.created_by, settings.registry_record)
    return list(zip(HEADER, values, strict=True))


def month_heading(month: str) -> str:
    """``2026-01`` -> ``Jan-2026`` (English month names, whatever the locale)."""
    return f"{MONTHS[int(month[5:7]) - 1]}-{month[:4]}"


_FLAT = str.maketrans({"\t": " ", "\r": " ", "\n": " "})


def rows(report: Report) -> list[list[str]]:
    """Every row of the file, as cells (no tab or line break in any: they become spaces)."""
    return list(_rows(report))


def _rows(report: Report) -> Iterator[list[str]]:
    width = len(report.columns)
    for name, value in header(report):
        yield [name, value.translate(_FLAT)] + [""] * (width - 2)
    yield [""] * width
    first_month = report.columns.index("Reporting_Period_Total") + 1
    described, months = report.columns[:first_month - 2], report.columns[first_month:]
    yield report.columns[:first_month] + [month_heading(m) for m in months]
    last: tuple[int, list[str]] = (0, [])
    for row in report.rows:
        if last[0] != id(row.values):  # the rows of one item share their description
            last = (id(row.values), [row.values.get(c, "").translate(_FLAT) for c in described])
        yield [*last[1], row.metric, str(sum(row.counts)), *map(str, row.counts)]


def render(report: Report, fmt: str = "tsv") -> bytes:
    buffer = io.StringIO()
    buffer.write(BOM)
    if fmt == "csv":
        csv.writer(buffer, lineterminator="\r\n").writerows(_rows(report))
    else:
        for cells in _rows(report):
            buffer.write("\t".join(cells))
            buffer.write("\n")
    return buffer.getvalue().encode("utf-8")
