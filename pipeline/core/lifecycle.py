"""A worker's life: stop and reopen requests arrive as signals and only set a flag.

Logging, cleanup and handing back a batch happen in the worker's loop, which looks at the
flags between steps; every wait is cut short by a stop request.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from types import FrameType


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
        time.sleep(min(left, 0.1))
