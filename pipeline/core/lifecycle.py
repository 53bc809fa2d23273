"""A worker's life: stop and reopen requests arrive as signals and only set a flag.

Logging, cleanup and handing back a batch happen in the worker's loop, which looks at the
flags between steps; every wait is cut short by a stop request.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger(__name__)
_last_turn = [time.monotonic()]


def turned() -> None:
    """The worker's loop went round (or is waiting as it should): the watchdog is content."""
    _last_turn[0] = time.monotonic()


def last_turn_epoch() -> float:
    """When the loop last turned, as a Unix time (what the heartbeat carries)."""
    return time.time() - (time.monotonic() - _last_turn[0])


@dataclass
class Flags:
    stop: bool = False
    reopen: bool = False


def install_signal_handlers(flags: Flags) -> None:
    """Handlers only set a flag; the loop does the rest."""

    def on_stop(signum: int, frame: FrameType | None) -> None:
        flags.stop = True

    def on_hup(signum: int, frame: FrameType | None) -> None:
        flags.reopen = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)


def sleep_unless(flags: Flags, seconds: float) -> None:
    """Sleep ``seconds``, or less if a stop is requested meanwhile."""
    deadline = time.monotonic() + seconds
    while not flags.stop and (left := deadline - time.monotonic()) > 0:
        turned()
        time.sleep(min(left, 0.1))


class Watchdog(threading.Thread):
    """Says so when the worker's loop has not turned for ``limit`` seconds (stuck in a call
    that should have ended: an open that never returns, a plugin without a time limit), with
    where the main thread is; ``report`` is called every few seconds with the time of the last
    turn, for the heartbeat that ``status`` and the monitor read."""

    def __init__(self, name: str, limit: float, report: Callable[[float], None] | None = None,
                 every: float = 5.0) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.worker, self.limit, self.report, self.every = name, limit, report, every
        self.main = threading.main_thread().ident
        self.done = threading.Event()
        turned()

    def run(self) -> None:
        stuck = False
        while not self.done.wait(self.every):
            stall = time.monotonic() - _last_turn[0]
            if stall > self.limit and not stuck:
                stuck = True
                log.error("%s: the loop has not turned for %.0f s; it is in: %s", self.worker, stall,
                          self.where())
            elif stall <= self.limit and stuck:
                stuck = False
                log.warning("%s: the loop turns again", self.worker)
            if self.report is not None:
                try:
                    self.report(last_turn_epoch())
                except Exception as exc:  # a report that fails must not stop the watching
                    log.warning("%s: watchdog report failed: %s", self.worker, exc)

    def where(self) -> str:
        frame = sys._current_frames().get(self.main or 0)
        if frame is None:
            return "?"
        return " <- ".join(f"{f.name} ({f.filename.rsplit('/', 1)[-1]}:{f.lineno})"
                           for f in reversed(traceback.extract_stack(frame, limit=4)))
