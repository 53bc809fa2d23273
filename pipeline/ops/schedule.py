"""The schedule worker: runs an operations task on a cron schedule and reports the outcome.

The report is always a log line; with ``smtp_host`` and ``mail_to`` it is also mailed. A task
that fails is reported as failed and the worker waits for the next slot (it does not crash
into a restart loop). ``loglines schedule NAME`` runs the task once, now, with the report.
"""

from __future__ import annotations

import logging
import smtplib
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Protocol

from cronsim import CronSim

from pipeline.config import Config, ProgramConfig
from pipeline.config import datatypes as dt
from pipeline.config.options import key as option
from pipeline.core.lifecycle import Flags, sleep_unless
from pipeline.core.logsetup import safe
from pipeline.errors import ConfigError
from pipeline.ops import esops
from pipeline.registry import Component
from pipeline.sinks.esindexer import client


def _cron(text: str) -> str:
    """Five cron fields, checked by the cron library (impossible dates such as 31 February too)."""
    from datetime import datetime

    from cronsim import CronSim, CronSimError

    try:
        CronSim(text.strip(), datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"expected five cron fields (minute hour day month weekday): {exc}") from None
    return text.strip()


@dataclass(frozen=True)
class ScheduleOptions:
    task: str = option(dt.choice("snapshot"), "what to run")
    cron: str = option(_cron, "when, as five cron fields (minute hour day month weekday), local time")
    repository: str = option(dt.name, "snapshot repository")
    esindexer: str = option(dt.name, "the esindexer section whose Elasticsearch connection to use", "")
    location: str = option(str, "register the repository as a filesystem repository here first", "")
    indices: str = option(str, "indices to snapshot (default: all)", "")
    smtp_host: str = option(str, "SMTP server for the report (no mail when empty)", "")
    smtp_port: int = option(dt.port, "SMTP port", 25)
    smtp_starttls: bool = option(dt.boolean, "use STARTTLS", False)
    smtp_user: str = option(str, "SMTP user", "")
    smtp_password: str = option(str, "SMTP password", "")
    mail_from: str = option(str, "sender of the report", "loglines@localhost")
    mail_to: tuple[str, ...] = option(dt.string_list, "recipients of the report", ())

log = logging.getLogger(__name__)


def run_task(cfg: Config, program: ProgramConfig[ScheduleOptions]) -> tuple[bool, str]:
    """Run the task once: (succeeded, report text)."""
    opts: ScheduleOptions = program.options
    indexers = {n: p.options for n, p in cfg.programs.items() if p.type == "esindexer"}
    name = opts.esindexer or next(iter(indexers), "")
    if name not in indexers:
        raise ConfigError(f"no esindexer section {name!r} for the Elasticsearch connection",
                          file=str(cfg.path), section=program.name, key="esindexer")
    started = time.monotonic()
    try:
        es = client(indexers[name])
        if opts.location:
            esops.register_repository(es, opts.repository, opts.location)
        snap = esops.snapshot_create(es, opts.repository, indices=opts.indices)
        ok = snap.get("state") == "SUCCESS"
        report = (f"snapshot {snap['snapshot']} in repository {opts.repository}: {snap.get('state')}, "
                  f"{len(snap.get('indices', []))} indices, {snap.get('shards', {}).get('failed', 0)} "
                  f"failed shards, {time.monotonic() - started:.1f}s")
    except Exception as exc:  # the report says what went wrong; the schedule goes on
        ok, report = False, f"snapshot into {opts.repository} FAILED: {type(exc).__name__}: {exc}\n" + \
            traceback.format_exc(limit=3)
    return ok, report


class MailSettings(Protocol):
    """The SMTP keys of a section (a schedule worker's report, the monitor's alerts)."""

    @property
    def smtp_host(self) -> str: ...

    @property
    def smtp_port(self) -> int: ...

    @property
    def smtp_starttls(self) -> bool: ...

    @property
    def smtp_user(self) -> str: ...

    @property
    def smtp_password(self) -> str: ...

    @property
    def mail_from(self) -> str: ...

    @property
    def mail_to(self) -> tuple[str, ...]: ...


def send_report(opts: MailSettings, subject: str, body: str) -> None:
    if not opts.smtp_host or not opts.mail_to:
        return
    mail = EmailMessage()
    mail["Subject"], mail["From"], mail["To"] = subject, opts.mail_from, ", ".join(opts.mail_to)
    mail.set_content(body)
    with smtplib.SMTP(opts.smtp_host, opts.smtp_port, timeout=30) as smtp:
        if opts.smtp_starttls:
            smtp.starttls()
        if opts.smtp_user:
            smtp.login(opts.smtp_user, opts.smtp_password)
        smtp.send_message(mail)


def run_and_report(cfg: Config, program: ProgramConfig[ScheduleOptions]) -> bool:
    ok, report = run_task(cfg, program)
    (log.info if ok else log.error)("%s: %s", program.name, safe(report.splitlines()[0], 1000))
    try:
        send_report(program.options, f"[loglines] {program.name}: {'OK' if ok else 'FAILED'}", report)
    except (OSError, smtplib.SMTPException) as exc:
        log.error("%s: could not mail the report: %s", program.name, exc)
    return ok


def next_run(cron: str, after: datetime) -> datetime:
    """The first minute matching ``cron`` strictly after ``after`` (local time, as cron)."""
    return next(CronSim(cron, after.replace(second=0, microsecond=0)))


def run(cfg: Config, program: ProgramConfig[ScheduleOptions], flags: Flags) -> int:
    while not flags.stop:
        due = next_run(program.options.cron, datetime.now())
        log.info("%s: next run at %s", program.name, due.isoformat(timespec="minutes"))
        sleep_unless(flags, max(0.0, (due - datetime.now()).total_seconds()))
        if not flags.stop:
            run_and_report(cfg, program)
    return 0


COMPONENT = Component(
    "schedule", "runs an operations task (Elasticsearch snapshots) on a cron schedule, with a report",
    ScheduleOptions, run, single_process=True)
