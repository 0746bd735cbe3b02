"""QPY payloads through the decoder the isolated child runs, one forked child per input.

Qiskit's Rust QPY reader aborts the process when a forged length field asks for more memory
than the cap allows ("memory allocation of N bytes failed"): that is why the broker parses QPY
only in `IsolatedDecoder`'s child, which it replaces when the child dies. So here, as there, the
parse runs in a child with the same address-space cap: dying by a signal is the documented,
contained outcome (the isolated decoder rejects the payload); a Python exception other than
CircuitError or MemoryError is a crash, re-raised here with the child's traceback."""

from __future__ import annotations

import os
import signal
import traceback

from fuzz.circuits import cap_memory, decode
from qtestbed.shared.circuits.model import CircuitFormat

_OK = b"ok"
ABORTS = 0  # inputs that killed their child by a signal (contained by the isolated decoder)


class ChildCrash(Exception):
    """The decoder raised something it does not document; the child's traceback follows."""


def one_input(data: bytes) -> None:
    global ABORTS
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: cap, parse, report, exit without running the parent's cleanup
        os.close(read_end)
        try:
            cap_memory()
            decode(CircuitFormat.QPY, data)
            report = _OK
        except BaseException:
            report = traceback.format_exc().encode()
        os.write(write_end, report[:65_536])
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGABRT, signal.SIGSEGV):
        ABORTS += 1
        return
    if report != _OK:
        raise ChildCrash(report.decode(errors="replace"))
