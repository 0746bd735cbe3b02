"""How a command runs: against the broker with the caller's client, or as a long-lived process
until a signal. One of each, so every command opens, closes and stops the same way."""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from qtestbed.cli.errors import Advice, CommandError, Handler, guarded
from qtestbed.client import Client, Profile

ClientCommand = Callable[[argparse.Namespace, Client], int]


def profile_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get("QTESTBED_PROFILE")
    if env:
        return Path(env)
    raise CommandError("no client profile: pass --profile FILE or set QTESTBED_PROFILE")


def open_client(explicit: Path | None) -> Client:
    """The client a profile describes; an unusable profile is a CommandError naming the file."""
    from attestation.keys import KeyFileError  # what Client raises for a key it will not use

    path = profile_path(explicit)
    try:
        return Client(Profile.load(path))
    except (OSError, KeyError, ValueError, KeyFileError) as exc:
        raise CommandError(f"cannot use client profile {path}: {exc}") from exc


def using_client(args: argparse.Namespace, body: Callable[[Client], int]) -> int:
    """Run `body` with a client from `args.profile`, closed afterwards whatever happens."""
    with open_client(args.profile) as client:
        return body(client)


def broker_command(advice: Advice | None = None) -> Callable[[ClientCommand], Handler]:
    """A handler that talks to the broker: `command(args, client)` behind the one translation
    of refusals (`advice` adds what to do about a status, e.g. NOT_FOUND)."""

    def decorate(command: ClientCommand) -> Handler:
        @functools.wraps(command)
        def run(args: argparse.Namespace) -> int:
            return using_client(args, lambda client: command(args, client))

        return guarded(advice)(run)

    return decorate


def run_until_signalled(
    serve: Callable[[asyncio.Event], Awaitable[int]],
    *,
    on_hangup: Callable[[], None] | None = None,
) -> int:
    """Run `serve(stop)` in a fresh event loop; SIGINT or SIGTERM sets `stop`, SIGHUP (when
    `on_hangup` is given) calls it, e.g. to reload a file without restarting."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if on_hangup is not None:
            loop.add_signal_handler(signal.SIGHUP, on_hangup)
        return await serve(stop)

    return asyncio.run(main())
