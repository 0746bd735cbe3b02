"""Qiskit's first import, on a thread that lives as long as the process.

Qiskit's compiled core (qiskit._accelerate) brings its own allocator, which keeps per-process
state on the thread that first loaded it. When that thread ends (an executor's worker thread,
whose event loop closed), the next thread to allocate through Qiskit crashes the process
(a segmentation fault in mi_thread_init; seen with qiskit 2.6.2). Codecs are imported on first
use, often on a decode thread, so the import is handed to a parked thread of its own; a process
that imported Qiskit already (on its main thread, say) is left as it is.
"""

from __future__ import annotations

import sys
import threading

_lock = threading.Lock()
_loaded = threading.Event()
_failure: list[BaseException] = []


def import_qiskit() -> None:
    """Make sure Qiskit is imported, by a thread that never ends; re-raise what it raised."""
    if not _loaded.is_set():
        with _lock:
            if "qiskit" in sys.modules:
                _loaded.set()  # imported by the process's own code (its main thread, say)
            elif not _loaded.is_set():
                threading.Thread(target=_home, name="qtestbed-qiskit-home", daemon=True).start()
                _loaded.wait()
    if _failure:
        raise _failure[0]


_parked = threading.Event()  # never set: the home thread waits on it for the process's life


def _home() -> None:
    try:
        import qiskit.qasm2
        import qiskit.qpy  # noqa: F401
    except BaseException as exc:
        _failure.append(exc)
    finally:
        _loaded.set()
    _parked.wait()
