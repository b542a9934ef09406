"""The per-caller limits of a gRPC server, on their own (no server, no clock but a fake)."""

from __future__ import annotations

import pytest

from openswarm.net.limits import CallLimiter, CallLimits, LimitExceeded


def test_streams_and_calls_have_pools_of_their_own() -> None:
    limits = CallLimits(rate_per_s=1000, burst=1000, unary_per_identity=2,
                        streams_per_identity=1, shared_slots=3, stream_slots=2)  # fmt: skip
    limiter = CallLimiter(limits, clock=lambda: 0.0)
    streams = [limiter.acquire(name, stream=True) for name in ("a", "b")]
    with pytest.raises(LimitExceeded, match="busy"):  # the stream pool is full
        limiter.acquire("c", stream=True)
    with pytest.raises(LimitExceeded, match="1 open streams"):
        limiter.acquire("a", stream=True)
    calls = [limiter.acquire(name, stream=False) for name in ("a", "b", "c")]  # not starved
    with pytest.raises(LimitExceeded, match="busy"):
        limiter.acquire("d", stream=False)
    admin = limiter.acquire("admin", stream=True, privileged=True)  # always finds room
    streams[0].release()
    limiter.acquire("c", stream=True)
    for slot in (*streams, *calls, admin):
        slot.release()
    assert limiter.in_flight() == 1
    assert limits.workers > limits.shared_slots + limits.stream_slots
