"""Waiting and retrying, in one place: capped exponential backoff with full jitter.

:class:`Retry` is the retry loop every sink uses around its delivery (the file logger's write,
the indexer's bulk request, the tracker's request): each failed attempt is one log line and a
wait (at least ``floor`` seconds, at least what the other side asked for with Retry-After,
at most ``cap`` unless the other side asked for longer), and a stop request during the wait
hands the batch back to its queue (:class:`HandBack`), so a worker never outstays
``stopwaitsecs``. :class:`Outage` is the one Redis-outage wait of every worker loop.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from pipeline.core.connection import passing, relearn
from pipeline.core.lifecycle import Flags, sleep_unless
from pipeline.core.logsetup import safe

log = logging.getLogger(__name__)


class HandBack(Exception):
    """Raised by a handler that cannot finish before a stop: the batch goes back to its queue."""


@dataclass
class Backoff:
    base: float = 0.1
    cap: float = 30.0
    attempt: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """The next wait: random in [ceiling/2, ceiling], ceiling doubling up to ``cap``."""
        ceiling = min(self.cap, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 62)
        return float(ceiling / 2 + self._rng.uniform(0, ceiling / 2))

    def reset(self) -> None:
        self.attempt = 0


class Retry:
    """The retry loop of one delivery: call :meth:`failed` after each failed attempt."""

    def __init__(self, name: str, flags: Flags, base: float, cap: float, floor: float = 0.0) -> None:
        self.name, self.flags, self.floor, self.cap = name, flags, floor, cap
        self.backoff = Backoff(base=base, cap=cap)
        self.attempts = 0

    def delay(self, at_least: float = 0.0) -> float:
        """The wait before the next attempt."""
        return min(max(self.floor, self.backoff.next_delay(), at_least), max(self.cap, at_least))

    def failed(self, reason: str, at_least: float = 0.0, wait: float | None = None) -> None:
        """Log a failed attempt and wait (``wait`` if given); raise :class:`HandBack` when a stop
        is requested meanwhile."""
        self.attempts += 1
        delay = self.delay(at_least) if wait is None else wait
        log.warning("%s: %s; retrying in %.1fs", self.name, safe(reason), delay)
        sleep_unless(self.flags, delay)
        if self.flags.stop:
            raise HandBack(reason)

    def succeeded(self) -> None:
        self.backoff.reset()
        self.attempts = 0


class Outage:
    """The wait of a worker loop whose Redis is unreachable or refuses writes for a while."""

    def __init__(self, name: str, flags: Flags, client: object = None) -> None:
        self.name, self.flags, self.client = name, flags, client
        self.backoff = Backoff()

    def wait(self, exc: BaseException) -> None:
        """Wait out ``exc`` with capped backoff; re-raise it when it is not a passing outage
        (any other error reply is a bug to surface, not to retry forever)."""
        if not passing(exc):
            raise exc
        if self.client is not None:
            relearn(self.client, exc)
        delay = self.backoff.next_delay()
        log.warning("%s: Redis unavailable (%s); retrying in %.1fs", self.name, safe(exc), delay)
        sleep_unless(self.flags, delay)

    def over(self) -> None:
        self.backoff.reset()
