"""The edge's call limits on their own: a principal at its stream cap is refused with a retry
delay while another principal is admitted; the server-wide concurrent-call limit likewise; every
refusal counted by reason and audited in aggregate; no setting switches a limit off."""

from __future__ import annotations

import pytest

from broker.access.call_limits import CallLimits
from broker.access.open_streams import OpenStreams
from broker.errors import BrokerError, ErrorCode
from broker.settings import CallLimitSettings, SettingsError
from tests.unit.core.harness import Core, events, metric


def _limits(core: Core, **settings: float) -> tuple[CallLimits, OpenStreams]:
    streams = OpenStreams()
    limits = CallLimits(
        CallLimitSettings(**settings),  # type: ignore[arg-type]
        streams=streams,
        metrics=core.metrics,
        audit=core.parts.registries.audit,
        clock=core.clock,
    )
    return limits, streams


async def test_a_principal_past_its_stream_cap_is_refused_with_a_retry_delay(core: Core) -> None:
    limits, streams = _limits(core, streams_per_principal=3, retry_after_seconds=4)
    alice = [limits.open_stream("alice", f"serial-a{n}") for n in range(3)]
    for _ in range(5):
        with pytest.raises(BrokerError) as refused:
            limits.open_stream("alice", "serial-a9")
        assert refused.value.code is ErrorCode.RESOURCE_EXHAUSTED
        assert refused.value.retry_after_seconds == 4
        assert refused.value.rule_id == "calls.stream_cap"
        assert "limit of 3 open streams" in refused.value.detail
        assert "retry in 4 s" in refused.value.detail
    assert streams.count_of("alice") == 3  # the refused ones hold nothing
    bob = limits.open_stream("bob", "serial-b")  # another principal is still admitted
    assert (streams.count_of("bob"), len(streams)) == (1, 4)
    assert metric(core, "qtestbed_stream_refusals_total", reason="principal_cap") == 5
    streams.close(alice[0])
    streams.close(alice[0])  # closing twice frees one place, not two
    limits.open_stream("alice", "serial-a3")  # a freed place is usable again
    with pytest.raises(BrokerError):
        limits.open_stream("alice", "serial-a4")
    streams.close(bob)
    await limits.flush(force=True)
    [entry] = events(core, "edge.call_limit")
    assert (entry.subject, entry.detail["reason"], entry.detail["count"]) == (
        "alice",
        "principal_cap",
        6,
    )


async def test_the_server_wide_call_limit_refuses_past_it_and_admits_once_a_call_ends(
    core: Core,
) -> None:
    limits, _ = _limits(core, max_concurrent_rpcs=2)
    with limits.call("alice"), limits.call("alice"):
        with pytest.raises(BrokerError) as refused, limits.call("bob"):
            pass
        assert refused.value.code is ErrorCode.RESOURCE_EXHAUSTED
        assert refused.value.retry_after_seconds == 2.0
        assert refused.value.rule_id == "calls.concurrent_rpcs"
        assert limits.in_flight == 2
    with limits.call("bob"):
        assert limits.in_flight == 1
    assert limits.in_flight == 0
    assert metric(core, "qtestbed_concurrent_rpc_refusals_total") == 1
    await limits.flush(force=True)
    [entry] = events(core, "edge.call_limit")
    assert (entry.subject, entry.detail["reason"]) == ("bob", "concurrent_rpcs")


@pytest.mark.parametrize(
    "table",
    [
        "streams_per_principal = 0",
        "max_concurrent_rpcs = 0",
        "retry_after_seconds = 0",
    ],
)
def test_no_setting_switches_a_call_limit_off(table: str) -> None:
    key, value = table.split(" = ")
    with pytest.raises(SettingsError, match=key):
        CallLimitSettings(**{key: float(value)})  # type: ignore[arg-type]
