"""What every HTTP worker shares: a small ASGI toolkit on uvicorn (httptools, uvloop).

uvicorn with httptools and uvloop was measured against aiohttp and granian on the ingest
path (single-event POSTs pushed to Redis, 64 connections): 26.5k requests/s against 20.8k and
20.1k (see docs/benchmarks.md); this module gives its raw ASGI interface what the workers
need and nothing more: tokens, bounded and timed request bodies (gzip included, the limit on
the decompressed bytes), query strings, JSON answers, answers streamed as they are made (for
exports larger than memory). The server itself is :mod:`pipeline.core.httpserver`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import urllib.parse
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class HttpError(Exception):
    """An answer other than success: status, a message for the client, extra headers."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; the last of repeated headers
    receive: Receive

    @classmethod
    def of(cls, scope: Scope, receive: Receive) -> Request:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        return cls(scope["method"], scope["path"], scope.get("query_string", b"").decode("latin-1"),
                   headers, receive)

    def params(self, max_fields: int = 100) -> dict[str, list[str]]:
        """The query string: name -> its values in order; 400 past ``max_fields`` parameters."""
        return query_params(self.query, max_fields)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    async def body(self, limit: int, timeout: float) -> bytes:
        """The body, decompressed when gzip, or :class:`HttpError` 413 past ``limit`` bytes
        (decompressed: no zip bombs), 408 when the client takes longer than ``timeout``."""
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise HttpError(413, f"the body of {declared} bytes is over the limit of {limit} bytes")
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise HttpError(415, f"Content-Encoding {encoding!r} is not accepted (gzip is)")
        inflate = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
        parts: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        more = True
        try:
            while more:
                left = deadline - loop.time()
                if left <= 0:
                    raise HttpError(408, f"the request was not sent within {timeout:g} s")
                message = await asyncio.wait_for(self.receive(), left)
                if message["type"] == "http.disconnect":
                    raise HttpError(400, "the client went away")
                chunk, more = message.get("body", b""), message.get("more_body", False)
                if inflate is not None:
                    chunk, inflate = _gunzip(inflate, chunk, limit - size, limit)
                size += len(chunk)
                if size > limit:
                    raise HttpError(413, f"the body is over the limit of {limit} bytes"
                                    + (" decompressed" if inflate is not None else ""))
                parts.append(chunk)
            if inflate is not None:
                tail = inflate.flush(limit - size + 1)
                if size + len(tail) > limit:
                    raise HttpError(413, f"the body decompresses to more than {limit} bytes")
                if not inflate.eof:
                    raise HttpError(400, "the gzip body is cut short")
                parts.append(tail)
        except TimeoutError:
            raise HttpError(408, f"the request was not sent within {timeout:g} s") from None
        except zlib.error as exc:
            raise HttpError(400, f"the body is not valid gzip: {exc}") from None
        return b"".join(parts)


def _gunzip(inflate: Any, data: bytes, room: int, limit: int) -> tuple[bytes, Any]:
    """What ``data`` decompresses to, at most ``room`` bytes (else 413), and the decompressor
    to go on with: a gzip body may be several members one after the other (RFC 1952), each
    read in turn, as ``gzip -d`` reads them; bytes after a member that are not one are a 400."""
    out = []
    while True:
        piece = inflate.decompress(data, room + 1)
        room -= len(piece)
        if inflate.unconsumed_tail or room < 0:
            raise HttpError(413, f"the body decompresses to more than {limit} bytes")
        out.append(piece)
        if not (inflate.eof and inflate.unused_data):
            return b"".join(out), inflate
        data, inflate = inflate.unused_data, zlib.decompressobj(wbits=31)


def query_params(query: str, max_fields: int = 100) -> dict[str, list[str]]:
    """``a=1&b=2&a=3`` -> ``{"a": ["1", "3"], "b": ["2"]}`` (percent-decoded as UTF-8), or
    :class:`HttpError` 400 for more than ``max_fields`` parameters or text that is not UTF-8."""
    out: dict[str, list[str]] = {}
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, max_num_fields=max_fields,
                                       encoding="utf-8", errors="strict")
    except ValueError as exc:
        raise HttpError(400, f"bad query string: {exc}") from None
    for name, value in pairs:
        out.setdefault(name, []).append(value)
    return out


class Stream:
    """An answer sent as it is made (chunked): ``start``, any number of ``write``, ``end``.
    uvicorn's ``send`` waits while the client is slow to read, so memory stays bounded by what
    one ``write`` holds; ``gone`` is set once the client has disconnected."""

    def __init__(self, send: Send, receive: Receive) -> None:
        self.send, self.receive = send, receive
        self.gone = asyncio.Event()
        self.started = False
        self._watch: asyncio.Task[None] | None = None

    async def start(self, status: int, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        pairs = [(b"content-type", content_type.encode())]
        pairs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self._watch = asyncio.get_running_loop().create_task(self._watch_disconnect())
        await self.send({"type": "http.response.start", "status": status, "headers": pairs})
        self.started = True

    async def write(self, data: bytes) -> None:
        if data and not self.gone.is_set():
            await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes = b"") -> None:
        if not self.gone.is_set():
            await self.send({"type": "http.response.body", "body": data, "more_body": False})
        if self._watch is not None:
            self._watch.cancel()

    async def _watch_disconnect(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.gone.set()
                return


async def lifespan(receive: Receive, send: Send, startup: Callable[[], Awaitable[None]] | None = None,
                   shutdown: Callable[[], Awaitable[None]] | None = None) -> None:
    """The ASGI lifespan of an app: ``startup`` before the first request, ``shutdown`` after
    the last (the server's graceful stop)."""
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            if startup is not None:
                await startup()
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            if shutdown is not None:
                await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def answer(send: Send, status: int, body: bytes, content_type: str = "application/json",
                 headers: Mapping[str, str] | None = None) -> None:
    pairs = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    pairs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": pairs})
    await send({"type": "http.response.body", "body": body})


async def answer_json(send: Send, status: int, value: Any, headers: Mapping[str, str] | None = None) -> None:
    await answer(send, status, orjson.dumps(value), headers=headers)


async def answer_error(send: Send, error: HttpError) -> None:
    await answer_json(send, error.status, {"error": error.message, "status": error.status}, error.headers)


@dataclass(frozen=True)
class Tokens:
    """``name:token`` lines of a tokens file (a line with a bare token is named ``token-<line>``;
    a token holds no ``:``); compared in constant time, never logged."""

    by_token: dict[bytes, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Tokens:
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read the tokens file {path}: {exc.strerror}") from None
        found: dict[bytes, str] = {}
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            name, sep, token = text.partition(":")
            if not sep:
                name, token = f"token-{number}", text
            if len(token.strip()) < 16:
                raise ConfigError(f"{path}, line {number}: a token needs 16 characters or more")
            found[token.strip().encode()] = name.strip()
        if not found:
            raise ConfigError(f"the tokens file {path} holds no token: every request would be refused")
        return cls(found)

    def name_of(self, headers: Mapping[str, str]) -> str | None:
        """The name of the token in ``Authorization: Bearer <token>`` (or ``X-Api-Key``), or
        None. Every known token is compared, in constant time."""
        given = headers.get("authorization", "")
        if given[:7].lower() == "bearer ":
            given = given[7:].strip()
        else:
            given = headers.get("x-api-key", "").strip()
        candidate = given.encode()
        match = None
        for token, name in self.by_token.items():
            if hmac.compare_digest(token, candidate):
                match = name
        return match
