"""Our own log lines: text from outside cannot break, forge or colour them, whoever logged it."""

from __future__ import annotations

import io
import logging

from pipeline.core import logsetup

FORGED = "x\r\n2026-01-01 00:00:00,000 ERROR pipeline.sources.files: forged\x1b[31m\x07"


def formatted(record: logging.LogRecord) -> str:
    """The record as a worker writes it (the test process's own logging left alone)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logsetup.formatter())
    handler.emit(record)
    return stream.getvalue()


def record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("pipeline.test", logging.WARNING, __file__, 1, msg, args, info)


def test_a_message_is_one_line_whatever_its_arguments_hold() -> None:
    """An argument nobody passed through ``safe`` (a plugin's exception text, an error from
    Elasticsearch) is escaped all the same; what ``safe`` escaped is not escaped twice."""
    text = formatted(record("plugin raised %s; then %s", FORGED, logsetup.safe(FORGED)))
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    escaped = "x\\r\\n2026-01-01 00:00:00,000 ERROR pipeline.sources.files: forged\\x1b[31m\\x07"
    assert text.count(escaped) == 2


def test_a_traceback_cannot_start_a_line_that_reads_as_a_record() -> None:
    """The traceback keeps its lines to be read, each indented and escaped, so an exception
    carrying text from outside cannot put a line at column 0."""
    try:
        raise ValueError(FORGED)
    except ValueError as exc:
        text = formatted(record("the plugin failed", exc=exc))
    first, *rest = text.rstrip("\n").split("\n")
    assert "WARNING pipeline.test: the plugin failed" in first
    assert rest and all(line.startswith("  ") for line in rest)
    assert any(line.startswith("  Traceback") for line in rest)
    assert "\n  2026-01-01 00:00:00,000 ERROR pipeline.sources.files: forged" in text  # there, but indented
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text


def test_a_huge_message_is_capped() -> None:
    text = formatted(record("%s", "a" * 1_000_000))
    assert len(text) < logsetup.MESSAGE_CHARS + 200 and "more]" in text
