"""Outgoing HTTP: the tracker's keep-alive session to its OpenURL endpoint, and what every
sender shares (a ``Retry-After`` read, a URL without its secrets, a bounded label per answer).

A failed request raises :class:`~pipeline.errors.RetryableError` (429, 5xx, timeouts, lost
connections; ``uncertain`` when the request may have reached the other side) or
:class:`~pipeline.errors.PermanentError` (any other status): the caller decides what to do.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from pipeline.core.stats import Stats
from pipeline.errors import PermanentError, RetryableError

if TYPE_CHECKING:
    from pipeline.sinks.tracker import TrackerOptions

RETRYABLE = {429, 500, 502, 503, 504}


class Tracker:
    """One keep-alive HTTP session to the tracker, with the per-process rate limit."""

    def __init__(self, opts: TrackerOptions, stats: Stats | None = None) -> None:
        self.opts = opts
        self.stats = stats  # the tracker's answers by status, for the monitor
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "loglines-tracker/1"
        # proxies and CA bundle from the environment are read once, not on every request
        self.session.proxies = requests.utils.get_environ_proxies(opts.endpoint_url)
        self.session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self.session.trust_env = False
        self.last_request = 0.0

    def url(self, params: Mapping[str, str]) -> str:
        """The request as it is stored and logged: without the endpoint's user, password or own
        query (a token there is a secret)."""
        return f"{redacted(self.opts.endpoint_url)}?{urlencode(params)}"

    def send(self, params: Mapping[str, str]) -> None:
        """Raise :class:`RetryableError` (with ``retry_after``, and ``uncertain`` when the
        request went out and no answer came) or :class:`PermanentError`."""
        wait = self.last_request + self.opts.ratelimit - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.last_request = time.monotonic()
        try:
            response = self.session.get(self.opts.endpoint_url, params=params, timeout=self.opts.timeout)
        except requests.ConnectTimeout:
            self._answer("timeout")
            raise RetryableError("the tracker did not take the connection in time") from None
        except requests.ReadTimeout:
            self._answer("timeout")
            raise RetryableError(f"no answer within {self.opts.timeout:g} s", uncertain=True) from None
        except requests.ConnectionError as exc:
            self._answer("connection_error")
            raise RetryableError(f"connection failed ({_cause(exc)})", uncertain=_sent(exc)) from None
        self._answer(answer_label(response.status_code, self.opts.success))
        if response.status_code == self.opts.success:
            return
        detail = f"HTTP {response.status_code}: {response.text[:500]}"
        if response.status_code in RETRYABLE:
            raise RetryableError(detail, retry_after(response.headers.get("Retry-After")))
        raise PermanentError(detail)

    def _answer(self, label: str) -> None:
        if self.stats is not None:
            self.stats.count(f"tracker_responses:{label}")


def answer_label(status: int, success: int) -> str:
    """A tracker's answer as a label value of bounded range: the code for the success status
    and those loglines treats apart (retried), else its class (``4xx``)."""
    return str(status) if status == success or status in RETRYABLE else f"{status // 100}xx"


def redacted(url: str) -> str:
    """``url`` without user, password, query and fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _sent(exc: requests.ConnectionError) -> bool:
    """Whether a connection error came after the request was sent (a reset, a cut answer),
    not while connecting (refused, unreachable, name unknown)."""
    cause = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", cause)
    return not isinstance(reason, NewConnectionError | ConnectTimeoutError)


def _cause(exc: BaseException) -> str:
    cause = exc.args[0] if exc.args else exc
    return type(getattr(cause, "reason", cause)).__name__


#: the longest wait a Retry-After header gets (a server asking for more is taken to mean this)
RETRY_AFTER_MAX = 3600.0


def retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header (seconds or an HTTP date), at most
    :data:`RETRY_AFTER_MAX`; 0 when absent or bad."""
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return 0.0
    return min(seconds, RETRY_AFTER_MAX) if seconds > 0 else 0.0
