"""A TCP fault proxy on 127.0.0.1 that a test controls: between a client and a real server it
passes bytes, refuses or drops connections, stalls, answers slowly, swallows the reply to a
chosen request or cuts a reply in half."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = int(self.listener.getsockname()[1])
        self.mode = "pass"  # pass | refuse | stall
        self.delay = 0.0  # seconds added before each reply chunk
        #: when set: the first request containing these bytes is forwarded, its reply swallowed
        #: and the client's connection closed (the server did the work, the client never knows)
        self.swallow_reply_to: bytes | None = None
        self.swallowed = threading.Event()
        self.cut_reply_after: int | None = None  # forward this many reply bytes, then cut
        self.connections = 0
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.mode == "refuse":
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self.connections += 1
                self._pairs.append((client, server))
            state = {"swallow": False}
            threading.Thread(target=self._upstream, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client, state), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket, state: dict[str, bool]) -> None:
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                while self.mode == "stall" and not self._closed:
                    time.sleep(0.01)
                marker = self.swallow_reply_to
                if marker is not None and marker in chunk:
                    self.swallow_reply_to = None
                    state["swallow"] = True
                server.sendall(chunk)
        self._close(client, server)

    def _downstream(self, server: socket.socket, client: socket.socket, state: dict[str, bool]) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while chunk := server.recv(65536):
                if state["swallow"]:
                    self.swallowed.set()
                    break  # the server answered; the client never hears it
                while self.mode == "stall" and not self._closed:
                    time.sleep(0.01)
                if self.delay:
                    time.sleep(self.delay)
                if self.cut_reply_after is not None and sent + len(chunk) > self.cut_reply_after:
                    client.sendall(chunk[: max(0, self.cut_reply_after - sent)])
                    self.cut_reply_after = None
                    break
                client.sendall(chunk)
                sent += len(chunk)
        self._close(client, server)

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def drop_all(self) -> None:
        """Cut every open connection (as a network failure would)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, server in pairs:
            self._close(client, server)

    def close(self) -> None:
        self._closed = True
        self.drop_all()
        with contextlib.suppress(OSError):
            self.listener.close()

    @contextlib.contextmanager
    def refusing(self) -> Iterator[None]:
        self.mode = "refuse"
        self.drop_all()
        try:
            yield
        finally:
            self.mode = "pass"


class BlackHole:
    """A server on 127.0.0.1 that accepts connections, reads what comes, and never answers
    (a node that takes a bulk request and hangs)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self._socks.append(conn)
            threading.Thread(target=self._swallow, args=(conn,), daemon=True).start()

    def _swallow(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if conn.recv(65536):
                self.requests += 1
            while conn.recv(65536):
                pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.close()
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.close()
