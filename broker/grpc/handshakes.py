"""TLS handshakes that gRPC's own TLS refused, counted by reason.

The TLS layer checks a client's chain to the facility root and its validity before any Python
code runs, and grpcio offers no verification callback to the application (grpc/grpc#32635).
What gRPC core does do is log each failed handshake with the verifier's reason to the process's
standard error. The broker process therefore reads its own standard error: every byte is passed
on unchanged to where it went before, and each handshake failure is counted by reason (bad
chain, expired, not yet valid, no certificate). Only the broker process does this (`qtestbed
broker`), never a broker embedded in another program, whose standard error is not its own.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from multiprocessing import resource_tracker

_FAILED = re.compile(rb"Handshake failed with error \S+: (.*)$")
# The verifier's words (BoringSSL's) -> the refusal reason; first match wins.
_REASONS = (
    (b"certificate has expired", "expired"),
    (b"certificate is not yet valid", "not_yet_valid"),
    (b"PEER_DID_NOT_RETURN_A_CERTIFICATE", "no_certificate"),
    (b"CERTIFICATE_VERIFY_FAILED", "bad_chain"),
)
_MAX_LINE = 64 * 1024

log = logging.getLogger(__name__)


def handshake_reason(line: bytes) -> str | None:
    """The refusal reason of a gRPC log line about a failed TLS handshake; None for others."""
    found = _FAILED.search(line.rstrip(b"\r\n"))
    if found is None:
        return None
    words = found.group(1)
    return next((reason for text, reason in _REASONS if text in words), "tls_other")


class HandshakeWatcher:
    """Reads this process's standard error through a pipe and passes it on unchanged."""

    def __init__(self, on_refused: Callable[[str], None]) -> None:
        self._on_refused = on_refused  # called on the watcher's own thread
        self._saved: int | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # multiprocessing's resource tracker (started with the first spawned child, the circuit
        # decoder's) lives as long as this process: started after the switch, it would hold the
        # pipe open past stop(). Started now, it keeps the standard error it had.
        resource_tracker.ensure_running()
        saved = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._saved = saved
        self._thread = threading.Thread(
            target=self._pump, args=(read, saved), name="qtestbed-handshakes", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Give standard error back; the pipe then ends and the thread with it."""
        if self._saved is None:
            return
        saved, self._saved = self._saved, None
        os.dup2(saved, 2)  # the pipe's last writer is gone: the thread drains it and ends
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():  # a child process still holds the pipe open
                log.warning(
                    "the TLS handshake watcher did not end: a child process of the broker "
                    "still writes to its standard error"
                )
        os.close(saved)

    def _pump(self, read: int, saved: int) -> None:
        pending = b""
        with os.fdopen(read, "rb", buffering=0) as source:
            while chunk := source.read(65536):
                _write_all(saved, chunk)
                pending = (pending + chunk)[-_MAX_LINE:]
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    reason = handshake_reason(line)
                    if reason is not None:
                        self._on_refused(reason)


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        pass  # the original standard error is gone; keep counting
