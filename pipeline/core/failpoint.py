"""Crash points for the fault-injection tests.

``LOGLINES_FAILPOINT=taken:3`` makes a worker kill itself (SIGKILL, as the kernel or an
operator would) the third time it passes the point named ``taken``; several points may be
given, comma-separated. The points: ``taken`` (a batch is in hand, nothing done with it yet)
and ``handled`` (the sink has it, the acknowledgement is not sent). Unset, a check costs one
dictionary lookup.
"""

from __future__ import annotations

import os
import signal


def _armed(spec: str) -> dict[str, int]:
    points: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, nth = part.partition(":")
        points[name] = int(nth or 1)
    return points


_ARMED = _armed(os.environ.get("LOGLINES_FAILPOINT", ""))


def hit(name: str) -> None:
    left = _ARMED.get(name)
    if left is None:
        return
    if left <= 1:
        os.kill(os.getpid(), signal.SIGKILL)
    _ARMED[name] = left - 1
