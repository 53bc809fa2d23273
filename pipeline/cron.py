"""Five-field cron expressions (minute hour day-of-month month day-of-week).

Each field takes ``*``, numbers, ranges ``a-b``, steps ``*/n`` or ``a-b/n``, and lists of
those. As in cron, when both day fields are restricted a day matches either of them.
Day of week: 0 or 7 is Sunday.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
           ("day of week", 0, 7))


@dataclass(frozen=True)
class Cron:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    def matches(self, when: datetime) -> bool:
        if when.minute not in self.minutes or when.hour not in self.hours or when.month not in self.months:
            return False
        day_ok = when.day in self.days
        weekday_ok = (when.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return day_ok and weekday_ok
        return day_ok or weekday_ok

    def next_after(self, when: datetime) -> datetime:
        """The first matching minute strictly after ``when``."""
        candidate = when.replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(366 * 24 * 60):
            if self.matches(candidate):
                return candidate
            candidate += timedelta(minutes=1)
        raise ValueError(f"cron {self.expression!r} never matches")


def parse(expression: str) -> Cron:
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError("expected five cron fields: minute hour day-of-month month day-of-week")
    values = [_field(text, name, low, high) for text, (name, low, high) in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(0 if d == 7 else d for d in values[4])
    cron = Cron(expression, values[0], values[1], values[2], values[3], weekdays,
                parts[2] == "*", parts[4] == "*")
    cron.next_after(datetime(2000, 1, 1))  # rejects impossible dates such as 31 February
    return cron


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{name}: bad step in {part!r}")
            step = int(step_text)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            if not (first.isdigit() and last.isdigit()):
                raise ValueError(f"{name}: bad range {part!r}")
            start, end = int(first), int(last)
        elif body.isdigit():
            start = end = int(body)
            if step_text:
                end = high
        else:
            raise ValueError(f"{name}: {part!r} is not a number, range, step or *")
        if not (low <= start <= end <= high):
            raise ValueError(f"{name}: {part!r} is outside {low}-{high}")
        out.update(range(start, end + 1, step))
    return frozenset(out)
