"""Driver-link frames as the broker's socket receives them: `broker.link.codec.decode`.

Documented behaviour: a frame that is not a LinkMessage decodes to None; it never raises."""

from __future__ import annotations

from broker.link import messages as m
from broker.link.codec import decode

_INBOUND = (
    m.Hello,
    m.Evidence,
    m.LeaseStarted,
    m.LeaseResult,
    m.LeaseFailure,
    m.Heartbeat,
    m.Goodbye,
)


def one_input(data: bytes) -> None:
    message = decode(data)
    assert message is None or isinstance(message, _INBOUND), type(message)
