"""The CLI's one translation of a failure into a message on stderr and an exit status.

Exit status 1: the broker refused (its status name and message, then what to do about it).
Exit status 2: the command could not run as asked (a bad option, an unreadable file, an unusable
client profile). Handlers raise `CommandError` or let `QtestbedError` through; only `guarded`
below prints them, so every command words and numbers its failures the same way.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Mapping

from qtestbed.client import QtestbedError

Handler = Callable[[argparse.Namespace], int]

# Advice for a refusal, by gRPC status name. A command's own advice is a template filled from
# its parsed arguments, e.g. "see 'qtestbed device schedule {device_id}' for its windows".
Advice = Mapping[str, str]

# What to do about a refusal, when the broker's own message does not already say so.
GENERAL_ADVICE: Advice = {
    "ABORTED": "someone else changed it while this command ran; run the command again",
    "UNAVAILABLE": "is the broker running, and is the broker address in your profile right?",
    "DEADLINE_EXCEEDED": "the broker did not answer in time; try again",
    "UNAUTHENTICATED": "check the certificate and key named in your profile",
}

REFUSED = 1
CANNOT_RUN = 2


class CommandError(Exception):
    """The command cannot run as asked: `message` for the person, `code` as the exit status."""

    def __init__(self, message: str, code: int = CANNOT_RUN) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, code: int = CANNOT_RUN) -> int:
    print(f"qtestbed: {message}", file=sys.stderr)
    return code


def refusal(exc: QtestbedError, advice: Advice, args: argparse.Namespace) -> str:
    """The broker's refusal as printed: status, message, rule, and advice when there is any."""
    template = advice.get(exc.code)
    hint = template.format_map(vars(args)) if template else GENERAL_ADVICE.get(exc.code)
    return f"{exc}; {hint}" if hint else str(exc)


def guarded(advice: Advice | None = None) -> Callable[[Handler], Handler]:
    """Make `run` a command handler whose failures are printed here and nowhere else."""

    def decorate(run: Handler) -> Handler:
        @functools.wraps(run)
        def handler(args: argparse.Namespace) -> int:
            try:
                return run(args)
            except CommandError as exc:
                return fail(exc.message, exc.code)
            except QtestbedError as exc:
                return fail(refusal(exc, advice or {}, args), REFUSED)

        return handler

    return decorate
