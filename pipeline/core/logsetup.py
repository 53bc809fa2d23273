"""loglines' own logging: one line per record, untrusted text escaped."""

from __future__ import annotations

import logging
import sys

_ESCAPES = {i: f"\\x{i:02x}" for i in range(32)} | {ord("\n"): "\\n", ord("\r"): "\\r", 127: "\\x7f"}


def safe(text: object, limit: int = 300) -> str:
    """Untrusted text fit for a log line: control characters (CR/LF too) escaped, length capped."""
    value = str(text)
    if len(value) > limit:
        value = value[:limit] + f"...[{len(value) - limit} more]"
    return value.translate(_ESCAPES)


#: What the formatter keeps of a message at most (a caller's ``safe`` caps its own part sooner).
MESSAGE_CHARS = 10_000
_CONTROL = {k: v for k, v in _ESCAPES.items() if k != ord("\n")}  # a traceback keeps its lines


class _OneLine(logging.Formatter):
    """Every record on one line that no text from outside can break or colour, whoever logged it
    and whether or not they passed it through :func:`safe`: the message's control characters are
    escaped. A traceback follows on lines of its own, each indented and escaped too, so that an
    exception's text cannot start a line that reads as a record (records start at column 0)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = safe(record.message, MESSAGE_CHARS)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        head, sep, tail = super().format(record).partition("\n")
        if not sep:
            return head
        return head + "".join("\n  " + line.translate(_CONTROL) for line in tail.split("\n"))


def formatter() -> logging.Formatter:
    """What every worker's log line looks like: time, level, logger, the escaped message."""
    return _OneLine("%(asctime)s %(levelname)s %(name)s: %(message)s")


def setup(level: str = "info", name: str = "loglines") -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
    return logging.getLogger(name)
