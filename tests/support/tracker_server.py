"""A real HTTP server on 127.0.0.1 playing the IRUS tracker: it records every request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

Responder = Callable[[dict[str, str]], tuple[int, dict[str, str]]]


def always_ok(params: dict[str, str]) -> tuple[int, dict[str, str]]:
    return 200, {}


class TrackerServer:
    def __init__(self) -> None:
        self.requests: list[tuple[float, dict[str, str], int]] = []  # (time, params, status answered)
        self.respond: Responder = always_ok
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 65536  # headers and body in one write: no Nagle/delayed-ACK stalls
            disable_nagle_algorithm = True

            def do_GET(self) -> None:  # noqa: N802
                params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
                with server.lock:
                    status, headers = server.respond(params)
                    server.requests.append((time.monotonic(), params, status))
                body = b"ok" if status == 200 else b"tracker says no"
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/counter/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> TrackerServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def accepted(self) -> list[dict[str, str]]:
        with self.lock:
            return [params for _, params, status in self.requests if status == 200]
