"""The server every HTTP worker runs: uvicorn (httptools, uvloop) on a socket of our own.

The socket is bound with SO_REUSEPORT, so that ``numprocs`` processes share one port; stop
requests only set the worker's flag; in-flight requests are finished first.

uvicorn's httptools protocol starts no clock before a request's headers are complete and keeps
whatever headers come: a client that connects and sends nothing (or one header line a minute)
would hold one of ``max_connections`` for ever, and an endless header would grow the process's
memory. :class:`GuardedProtocol` bounds both, before any token is looked at: the request line
and headers must arrive within ``header_timeout_s`` (else 408), the URL within
:data:`MAX_URL_BYTES` (else 414), the headers within :data:`MAX_HEADER_BYTES` and
:data:`MAX_HEADERS` (else 431); the connection is closed after the answer (what the client still
sends meanwhile is read and dropped for :data:`LINGER_S`, so that the close does not reset the
answer away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any

from pipeline.core.http import Receive, Scope, Send
from pipeline.core.lifecycle import Flags, install_signal_handlers, turned

log = logging.getLogger(__name__)

MAX_URL_BYTES = 16 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100
LINGER_S = 2.0  # how long a refused connection is read (and dropped) before it is closed
_REASONS = {408: b"Request Timeout", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


def bound_socket(listen: str, reuse_port: bool) -> socket.socket:
    """A listening socket on ``host:port``; with ``reuse_port`` several processes share it."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, int(port)))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


@dataclass(frozen=True)
class ServerSettings:
    listen: str
    tls_cert: str = ""
    tls_key: str = ""
    max_connections: int = 1000
    keep_alive_s: float = 5.0
    graceful_s: float = 10.0
    header_timeout_s: float = 10.0  # a request's line and headers arrive within this, or 408


class _Refused(Exception):
    """Raised from a parser callback to stop reading a request already answered."""


def guarded_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with the request head bounded in time and size."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_timer: asyncio.TimerHandle | None = None
            self._head_bytes = self._head_count = 0
            self._refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self._refused:
                super().data_received(data)

        def send_400_response(self, msg: str) -> None:
            if not self._refused:  # else the parser stopped because we answered already
                super().send_400_response(msg)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = self._head_count = 0
            if self._head_timer is None:  # the next request on a kept-alive connection: timed too
                self._arm()

        def on_url(self, url: bytes) -> None:
            self._head_bytes += len(url)
            if self._head_bytes > MAX_URL_BYTES:
                self._refuse(414, f"the URL is over {MAX_URL_BYTES} bytes")
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_bytes += len(name) + len(value)
            self._head_count += 1
            if self._head_bytes > MAX_HEADER_BYTES or self._head_count > MAX_HEADERS:
                self._refuse(431, f"the headers are over {MAX_HEADER_BYTES} bytes or {MAX_HEADERS} fields")
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_late)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_late(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self._answer(408, f"the request's headers did not arrive within {header_timeout_s:g} s", linger=False)

        def _refuse(self, status: int, why: str) -> None:
            self._answer(status, why, linger=True)
            raise _Refused(why)

        def _answer(self, status: int, why: str, linger: bool) -> None:
            self._refused = True
            body = b'{"error":"%s","status":%d}' % (why.encode(), status)
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                                 b"connection: close\r\n\r\n%s" % (status, _REASONS[status], len(body), body))
            if linger and self.transport.can_write_eof():  # what the client still sends is read and
                self.transport.write_eof()  # dropped a while, so that closing does not reset the answer away
                self.connections.discard(self)  # a slot for someone else meanwhile
                self.loop.call_later(LINGER_S, self.transport.close)
            else:
                self.transport.close()

    return GuardedProtocol


def serve(app: Callable[[Scope, Receive, Send], Awaitable[None]], settings: ServerSettings,
          flags: Flags, reuse_port: bool) -> int:
    """Run ``app`` until a stop is requested; in-flight requests are finished first."""
    import uvicorn  # here: every worker imports this module, only the HTTP ones serve (~3 MiB)

    class Server(uvicorn.Server):
        """uvicorn's server, with stop requests arriving through the worker's flags."""

        def __init__(self, config: uvicorn.Config, flags: Flags) -> None:
            super().__init__(config)
            self.flags = flags

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            install_signal_handlers(self.flags)  # they only set the flag
            yield

        async def on_tick(self, counter: int) -> bool:
            turned()
            if self.flags.stop:
                self.should_exit = True
            return await super().on_tick(counter)

    config = uvicorn.Config(
        app, http=guarded_protocol(settings.header_timeout_s), loop="uvloop", lifespan="on", access_log=False,
        log_config=None, limit_concurrency=settings.max_connections, timeout_keep_alive=int(settings.keep_alive_s),
        timeout_graceful_shutdown=int(settings.graceful_s), server_header=False, date_header=True,
        ssl_certfile=settings.tls_cert or None, ssl_keyfile=settings.tls_key or None,
        proxy_headers=False)
    sock = bound_socket(settings.listen, reuse_port)
    log.info("listening on %s%s (pid %d)", settings.listen, " (TLS)" if settings.tls_cert else "", os.getpid())
    Server(config, flags).run(sockets=[sock])
    return 0
