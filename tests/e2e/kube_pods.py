"""Run a Deployment of deploy/kubernetes with podman the way the kubelet would: each volume laid
out as the kubelet lays it out (ConfigMap files 0444; Secret files 0440 of group `fsGroup`, so
only the group can read them; items at their paths; emptyDirs owned by the pod's user), the init
containers run to completion first, then the containers, all as the pod's user with a read-only
root filesystem and no capabilities, in one podman pod (one network namespace, as in a pod).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, kw_only=True, slots=True)
class Container:
    name: str
    argv: list[str]  # after the image: the command (entrypoint replaced) or the args
    entrypoint: str | None
    mounts: list[str]
    env: list[str]
    init: bool


def lay_out(
    pod: dict[str, Any], objects: dict[tuple[str, str], dict[str, str]], root: Path
) -> list[Container]:
    """Write the pod's volumes under `root`; its containers, init containers first."""
    group = int(pod["securityContext"]["fsGroup"])
    user = int(pod["securityContext"]["runAsUser"])
    volumes = {
        v["name"]: _volume(v, objects, root / v["name"], user, group) for v in pod["volumes"]
    }
    inits = pod.get("initContainers", [])
    return [_container(c, volumes, c in inits) for c in inits + pod["containers"]]


def _volume(
    spec: dict[str, Any], objects: dict[tuple[str, str], dict[str, str]], path: Path, user: int,
    group: int,
) -> Path:  # fmt: skip
    path.mkdir(parents=True)
    if "emptyDir" in spec:
        os.chown(path, user, group)
        return path
    kind, source = (
        ("Secret", spec["secret"]) if "secret" in spec else ("ConfigMap", spec["configMap"])
    )
    data = objects[(kind, source.get("secretName") or source["name"])]
    items = source.get("items") or [{"key": key, "path": key} for key in data]
    for item in items:
        file = path / item["path"]
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(data[item["key"]])
        os.chown(file, 0, group)
        os.chmod(file, 0o440 if kind == "Secret" else 0o444)
    return path


def _container(spec: dict[str, Any], volumes: dict[str, Path], init: bool) -> Container:
    mounts = []
    for mount in spec["volumeMounts"]:
        source = volumes[mount["name"]] / mount.get("subPath", "")
        mounts.append(f"{source}:{mount['mountPath']}" + (":ro" if mount.get("readOnly") else ""))
    command = spec.get("command")
    return Container(
        name=spec["name"],
        argv=command[1:] if command else spec.get("args", []),
        entrypoint=command[0] if command else None,
        mounts=mounts,
        env=[f"{e['name']}={e['value']}" for e in spec.get("env", [])],
        init=init,
    )


def run(pod_name: str, containers: list[Container], image: str, user: int) -> list[str]:
    """Start them in the podman pod `pod_name` (init containers to completion); the names of
    the containers left running."""
    hardened = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                "--user", f"{user}:{user}"]  # fmt: skip
    running = []
    for c in containers:
        name = f"{pod_name}-{c.name}"
        options = [*hardened, *(x for m in c.mounts for x in ("-v", m))]
        options += [x for e in c.env for x in ("-e", e)]
        if c.entrypoint:
            options += ["--entrypoint", c.entrypoint]
        mode = ["--rm"] if c.init else ["--detach"]
        done = subprocess.run(
            ["podman", "run", *mode, "--pod", pod_name, "--name", name, *options, image, *c.argv],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{name}: {done.stderr[-2000:]}"
        if not c.init:
            running.append(name)
    return running
