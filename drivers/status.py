"""The driver's status file: what a probe that cannot speak the driver link reads to learn
whether the driver is alive, hears its broker, and is attested (`qtestbed probe driver`).

Written atomically (a whole JSON object or the previous one, never half) once a heartbeat, so
its age says whether the agent's loop still turns. It holds no secret: a device id, two
timestamps and a flag.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


class StatusFile:
    """`beat` rewrites the file; with no path it does nothing (the file is optional)."""

    def __init__(self, path: Path | None, device_id: str) -> None:
        self._path = path
        self._device_id = device_id

    def beat(self, *, attested: bool, heard_seconds_ago: float) -> None:
        if self._path is None:
            return
        now = time.time()
        doc = {
            "device_id": self._device_id,
            "written_at": now,
            "heard_at": now - heard_seconds_ago,
            "attested": attested,
        }
        tmp = self._path.with_name(f".{self._path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self._path)
