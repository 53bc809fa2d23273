"""Cron expressions and the schedule worker's snapshot task with its mailed report."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from pipeline import config
from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.ops.schedule import next_run
from tests.support.smtp_server import SmtpServer


@pytest.mark.parametrize(
    "expression, after, expected",
    [
        ("0 3 * * 0", datetime(2026, 11, 25, 10, 0), datetime(2026, 11, 29, 3, 0)),  # weekly, Sunday
        ("*/15 * * * *", datetime(2026, 11, 25, 10, 7), datetime(2026, 11, 25, 10, 15)),
        ("30 2 1 * 1-5", datetime(2026, 11, 25, 10, 7), datetime(2026, 11, 26, 2, 30)),  # day OR weekday
        ("0 0 1 1 *", datetime(2026, 11, 25, 10, 7), datetime(2027, 1, 1, 0, 0)),
        ("5,10 4 * * 7", datetime(2026, 11, 29, 4, 5), datetime(2026, 11, 29, 4, 10)),
        ("0 3 * * sun", datetime(2026, 11, 25, 10, 0), datetime(2026, 11, 29, 3, 0)),
        # leap days: a start of any distance from the next 29 February, and the century rule
        ("0 0 29 2 *", datetime(2026, 11, 25, 10, 0), datetime(2028, 2, 29, 0, 0)),
        ("0 0 29 2 *", datetime(2028, 2, 29, 0, 0), datetime(2032, 2, 29, 0, 0)),
        ("0 0 29 2 *", datetime(2028, 2, 28, 23, 59), datetime(2028, 2, 29, 0, 0)),
        ("0 0 29 2 *", datetime(2028, 3, 1, 0, 0), datetime(2032, 2, 29, 0, 0)),
        ("0 0 29 2 *", datetime(2096, 3, 1, 0, 0), datetime(2104, 2, 29, 0, 0)),  # 2100 is no leap year
        ("0 0 29 2 *", datetime(2399, 6, 1, 0, 0), datetime(2400, 2, 29, 0, 0)),  # 2400 is one
        ("30 12 28-29 2 *", datetime(2027, 2, 28, 12, 30), datetime(2028, 2, 28, 12, 30)),
        ("0 0 29 2 1", datetime(2027, 2, 28, 0, 0), datetime(2028, 2, 7, 0, 0)),  # or a Monday in February
        ("59 23 31 12 *", datetime(2027, 12, 31, 23, 59), datetime(2028, 12, 31, 23, 59)),
    ],
)
def test_next_run(expression: str, after: datetime, expected: datetime) -> None:
    assert next_run(expression, after) == expected


def test_a_leap_day_schedule_never_stops_the_worker() -> None:
    """Every start for eight years finds the next 29 February (the hand-written cron raised
    'never matches' for starts more than 366 days before it)."""
    start = datetime(2025, 1, 1)
    for day in range(0, 8 * 366, 17):
        after = datetime.fromordinal(start.toordinal() + day)
        due = next_run("0 0 29 2 *", after)
        assert (due.month, due.day) == (2, 29) and due > after and due.year - after.year <= 4


@pytest.mark.parametrize("expression", ["* * * *", "61 * * * *", "* * * * funday", "*/0 * * * *",
                                        "0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6 *"])
def test_bad_cron_is_refused_at_load(write_cfg, expression: str) -> None:  # type: ignore[no-untyped-def]
    cfg = write_cfg(f"[worker_weekly]\ntype = schedule\ntask = snapshot\ncron = {expression}\nrepository = r\n")
    with pytest.raises(ConfigError) as info:
        config.load(cfg)
    assert info.value.key == "cron" and info.value.section == "worker_weekly"


@pytest.mark.slow
def test_snapshot_task_runs_and_mails_its_report(es_node_factory, write_cfg) -> None:  # type: ignore[no-untyped-def]
    node = es_node_factory()
    smtp = SmtpServer()
    try:
        location = node.work / "home" / "snapshots" / "weekly"
        body = f"""
            [worker_es]
            type = esindexer
            listento = parsed
            hosts = {node.url}

            [worker_weekly]
            type = schedule
            task = snapshot
            cron = 0 3 * * 0
            repository = weekly
            location = {location}
            smtp_host = 127.0.0.1
            smtp_port = {smtp.port}
            mail_to = ops@example.org
        """
        cfg = write_cfg(body)
        assert main(["-c", str(cfg), "schedule", "worker_weekly"]) == 0
        assert len(smtp.messages) == 1 and smtp.messages[0]["Subject"] == "[loglines] worker_weekly: OK"
        assert "SUCCESS" in smtp.messages[0].get_payload()
        # a repository outside path.repo cannot be registered: the report says FAILED
        cfg = write_cfg(body.replace(str(location), str(Path("/nonexistent/elsewhere"))))
        assert main(["-c", str(cfg), "schedule", "worker_weekly"]) == 1
        assert smtp.messages[1]["Subject"] == "[loglines] worker_weekly: FAILED"
        assert "FAILED" in smtp.messages[1].get_payload()
    finally:
        smtp.close()
