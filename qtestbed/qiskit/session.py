"""`QtestbedSession`: a device held for one researcher's iterative work.

While a session is open the broker runs its jobs back to back on its device. It closes when
the `with` block ends, when its owner calls `close()`, or on the broker's side when it sits idle
too long or reaches its maximum length (the facility sets both; `max_seconds` can only shorten
the latter).
"""

from __future__ import annotations

from contextlib import suppress
from types import TracebackType
from typing import TYPE_CHECKING

from qtestbed.client import QtestbedError
from qtestbed.v1 import jobs_pb2

if TYPE_CHECKING:
    from qtestbed.qiskit.backend import QtestbedBackend


class QtestbedSession:
    def __init__(
        self, backend: QtestbedBackend, *, max_seconds: float = 0.0, project: str = ""
    ) -> None:
        if max_seconds < 0:
            raise ValueError(f"max_seconds must not be negative, got {max_seconds!r}")
        self.backend = backend
        self.max_seconds = max_seconds
        self.project = project
        self.session_id: str | None = None

    def open(self) -> jobs_pb2.Session:
        if self.session_id is not None:
            raise RuntimeError(f"session {self.session_id} is already open")
        session = self.backend.connection.client.open_session(
            self.backend.name, project=self.project, max_seconds=self.max_seconds
        )
        if session.state != jobs_pb2.SESSION_STATE_OPEN or not session.session_id:
            raise RuntimeError(f"the broker did not open a session: {session.closed_reason}")
        self.session_id = session.session_id
        return session

    def details(self) -> jobs_pb2.Session:
        """The broker's record: state, closing time, idle timeout, jobs, why it closed."""
        return self.backend.connection.client.session(self._require_id())

    def close(self, reason: str = "") -> jobs_pb2.Session:
        session = self.backend.connection.client.close_session(self._require_id(), reason)
        self.session_id = None
        return session

    def _require_id(self) -> str:
        if self.session_id is None:
            raise RuntimeError("the session is not open")
        return self.session_id

    def __enter__(self) -> QtestbedSession:
        self.open()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.session_id is None:
            return
        if exc is None:
            self.close("closed by its owner")
            return
        # Do not let a failure to close hide the error that ended the block.
        with suppress(QtestbedError):
            self.close(f"closed by its owner after {type(exc).__name__}")
