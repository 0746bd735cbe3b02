"""The /metrics endpoint: a small standard-library HTTPS server in front of the broker's metric
registry, that only a scraper identity reads (`broker.scrape.gate`).

Whatever a peer does, it holds at most one of `max_connections` slots for at most
`deadline_seconds`:
- a connection beyond the slots is closed at once, before any TLS work (counted `busy`);
- each connection runs on its own thread: the TLS handshake, one HTTP/1.0 request and its
  answer, all within one deadline; a timer then shuts the socket down, so a client that sends a
  byte at a time, or never reads the answer, loses its slot (counted `deadline`);
- the identity decision runs on the broker's event loop (where the access registry lives),
  counts are handed to it, and nothing here blocks it.
Handshake refusals are counted by reason; identity refusals are answered 403, a stopping
broker 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import cast

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from broker.errors import BrokerError
from broker.scrape.gate import ScrapeGate
from broker.scrape.tls import handshake_reason
from broker.store import StoreError

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 8
DEADLINE_SECONDS = 10.0
PATH = "/metrics"


@dataclass(slots=True)
class _Verdict:
    """What the identity check decided for a connection, and whether it was answered."""

    status: int
    message: str
    registry: CollectorRegistry
    answered: bool = False


class _Connection:
    """One accepted socket and its deadline; `cut` may run on any thread."""

    def __init__(self, sock: socket.socket, deadline_seconds: float) -> None:
        self.sock = sock
        self.expired = False
        self._lock = threading.Lock()
        self._ends_at = time.monotonic() + deadline_seconds
        sock.settimeout(deadline_seconds)  # a backstop; the timer is what bounds the total
        self._timer = threading.Timer(deadline_seconds, self.cut, kwargs={"expired": True})
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return max(0.0, self._ends_at - time.monotonic())

    def wrap(self, tls: ssl.SSLContext) -> ssl.SSLSocket:
        # Under the lock: a cut either reaches the plain socket before wrapping, or the TLS one.
        with self._lock:
            wrapped = tls.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
            self.sock = wrapped
            return wrapped

    def cut(self, *, expired: bool = False) -> None:
        """Shut the socket down, waking whatever read or write blocks on it."""
        with self._lock:
            self.expired = self.expired or expired
            # The plain socket's shutdown, not SSLSocket's: that one drops the TLS object
            # under a thread that may be using it.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self.sock, socket.SHUT_RDWR)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock, contextlib.suppress(OSError):
            self.sock.close()


class _Exchange(BaseHTTPRequestHandler):
    """One request and its answer (HTTP/1.0: the connection closes after it)."""

    protocol_version = "HTTP/1.0"
    server_version = "qtestbed"
    sys_version = ""

    def __init__(self, sock: ssl.SSLSocket, peer: tuple[str, int], verdict: _Verdict) -> None:
        self.verdict = verdict
        # The handler never uses its server; it runs the whole exchange in its constructor.
        super().__init__(sock, peer, cast(socketserver.BaseServer, None))

    def do_GET(self) -> None:
        verdict = self.verdict
        if verdict.status != 200:
            self._answer(verdict.status, verdict.message.encode(), "text/plain; charset=utf-8")
        elif self.path.split("?", 1)[0] != PATH:
            self._answer(404, f"not found; the metrics are at {PATH}".encode(), "text/plain")
        else:
            self._answer(200, generate_latest(verdict.registry), CONTENT_TYPE_LATEST)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.verdict.answered = True

    def log_message(self, format: str, *args: object) -> None:
        """Nothing per request: refusals are counted and audited in aggregate instead."""


class MetricsEndpoint:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        tls: ssl.SSLContext,
        gate: ScrapeGate,
        registry: CollectorRegistry,
        loop: asyncio.AbstractEventLoop,
        max_connections: int = MAX_CONNECTIONS,
        deadline_seconds: float = DEADLINE_SECONDS,
    ) -> None:
        self._address = (host, port)
        self._tls = tls
        self._gate = gate
        self._registry = registry
        self._loop = loop
        self._deadline = deadline_seconds
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: dict[_Connection, threading.Thread] = {}
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None

    def start(self) -> int:
        """Listen and accept on a thread of its own; the port bound (port 0 picks one)."""
        family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET
        listener = self._listener = socket.create_server(self._address, family=family, backlog=64)
        self._acceptor = threading.Thread(
            target=self._accept_forever, args=(listener,), name="qtestbed-metrics", daemon=True
        )
        self._acceptor.start()
        port: int = listener.getsockname()[1]
        return port

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting and end every connection; blocks, so call it off the event loop
        (connections in flight wait on the loop for their identity decision)."""
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
            self._listener.close()
        if self._acceptor is not None:
            self._acceptor.join(timeout)
        with self._lock:
            open_now = list(self._open.items())
        for connection, thread in open_now:
            connection.cut()
            if thread.ident is not None:  # started (the acceptor may not have got that far)
                thread.join(timeout)

    def _accept_forever(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                sock, peer = listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.05)  # out of descriptors, say: do not spin
                continue
            if not self._slots.acquire(blocking=False):
                sock.close()  # before any TLS work: a flood costs an accept and a close
                self._count("busy")
                continue
            connection = _Connection(sock, self._deadline)
            thread = threading.Thread(
                target=self._serve, args=(connection, peer), name="qtestbed-scrape", daemon=True
            )
            with self._lock:
                self._open[connection] = thread
            thread.start()

    def _serve(self, connection: _Connection, peer: tuple[str, int]) -> None:
        try:
            self._exchange(connection, peer)
        except Exception:  # a bug here must not leak the slot or kill the endpoint
            log.exception("metrics connection failed")
        finally:
            connection.close()
            with self._lock:
                self._open.pop(connection, None)
            self._slots.release()

    def _exchange(self, connection: _Connection, peer: tuple[str, int]) -> None:
        sock = connection.wrap(self._tls)
        try:
            sock.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            if not self._stopping.is_set():  # cut by stop(): not the peer's doing
                self._count("deadline" if connection.expired else handshake_reason(exc))
            return
        verdict = self._decide(sock.getpeercert(binary_form=True), connection)
        with contextlib.suppress(ssl.SSLError, OSError):  # the deadline cut it, or the client left
            _Exchange(sock, peer, verdict)
        # A refused identity was counted by the gate; an admitted one that could not finish
        # its exchange in time is counted here, once.
        if connection.expired and verdict.status == 200 and not verdict.answered:
            self._count("deadline")

    def _decide(self, leaf: bytes | None, connection: _Connection) -> _Verdict:
        def verdict(status: int, message: str = "") -> _Verdict:
            return _Verdict(status=status, message=message, registry=self._registry)

        if self._stopping.is_set():
            return verdict(503, "the broker is stopping; scrape again shortly")
        pems = [ssl.DER_cert_to_PEM_cert(leaf).encode()] if leaf else []
        try:
            future = asyncio.run_coroutine_threadsafe(self._gate.admit(pems), self._loop)
        except RuntimeError:  # the loop has closed
            return verdict(503, "the broker is stopping; scrape again shortly")
        try:
            future.result(timeout=connection.remaining())
        except BrokerError as exc:
            return verdict(403, exc.detail)
        except StoreError:
            # Revocation could not be checked (a shared store is away): refuse, but as a
            # moment's unavailability, not as a broken endpoint.
            return verdict(503, "the broker's database is not answering; scrape again shortly")
        except TimeoutError:
            future.cancel()
            return verdict(503, "the broker is busy; scrape again shortly")
        return verdict(200)

    def _count(self, reason: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to count on
            self._loop.call_soon_threadsafe(self._gate.refused, reason)
