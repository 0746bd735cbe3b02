"""Finding a backend plugin by name among the installed `qtestbed.backends` entry points.

A name nobody installed, a plugin written for another API version and a factory that fails are
all refused when the driver starts, with a message naming the plugin, its package and what to do;
none of them is retried, because nothing changes until someone installs or configures again.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from drivers.plugins.api import API_VERSION, BackendPlugin

ENTRY_POINT_GROUP = "qtestbed.backends"


class PluginError(ValueError):
    """A backend plugin cannot be loaded or refused its settings."""


def installed_backends() -> dict[str, metadata.EntryPoint]:
    """Every installed backend plugin by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def load_backend(
    name: str, device: Mapping[str, Any], settings: Mapping[str, Any]
) -> BackendPlugin:
    """The plugin registered as `name`, made from the driver file's tables."""
    found = installed_backends()
    entry = found.get(name)
    if entry is None:
        raise PluginError(
            f"no backend plugin named {name!r} is installed (installed: "
            f"{', '.join(sorted(found))}); install the package that provides it here"
        )
    where = f"backend plugin {name!r} ({entry.value}{_package(entry)})"
    try:
        factory = entry.load()
    except Exception as exc:  # a broken package must not look like a driver bug
        raise PluginError(f"{where} cannot be imported: {exc}") from exc
    version = getattr(factory, "api_version", None)
    if version != API_VERSION:
        raise PluginError(
            f"{where} was written for backend API version {version!r}, but this driver speaks "
            f"version {API_VERSION}; install a release of the plugin for API version "
            f"{API_VERSION}"
        )
    try:
        plugin: BackendPlugin = factory(name, device, settings)
    except ValueError as exc:
        raise PluginError(f"{where}: {exc}") from exc
    return plugin


def plugin_source_root(plugin: BackendPlugin) -> Path | None:
    """The folder of the top-level package a plugin's class comes from (its source is part of
    the driver build the device attests), or None for a plugin defined outside any file."""
    module = inspect.getmodule(type(plugin))
    if module is None or module.__file__ is None:
        return None
    top = module.__name__.split(".")[0]
    path = Path(module.__file__).resolve()
    for parent in path.parents:
        if parent.name == top and (parent / "__init__.py").exists():
            return parent
    return path.parent


def _package(entry: metadata.EntryPoint) -> str:
    dist = entry.dist
    return f", from {dist.name} {dist.version}" if dist is not None else ""
