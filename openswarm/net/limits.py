"""Per-caller limits for a gRPC server: a request rate and how many calls run at once.

Nothing here waits: a call over a limit is refused at once (`LimitExceeded`), so a flooding
caller never holds a server worker thread for longer than it takes to say no.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


class LimitExceeded(Exception):
    """A call refused by a limit; str() says which and what to do."""


@dataclass(frozen=True)
class CallLimits:
    """How much one caller (and all ordinary callers together) may use a server."""

    rate_per_s: float = 100.0
    """Sustained requests per second per identity (privileged callers are exempt)."""
    burst: float = 200.0
    """Requests an identity may make at once before the rate applies."""
    unary_per_identity: int = 4
    """Unary calls one identity may have in flight."""
    streams_per_identity: int = 2
    """Server streams one identity may hold open."""
    shared_slots: int = 64
    """Unary calls in flight of all unprivileged identities together. A swarm's sites act
    in step (each sends `ready`, `loaded` and its metrics within the same moment), so this
    is sized for 64 sites at once: with fewer slots than sites, every such step has calls
    refused and retried."""
    stream_slots: int = 64
    """Streams of all unprivileged identities together (each holds a worker thread while
    open). The server needs more worker threads than `shared_slots + stream_slots`, so that
    privileged callers (admins) always find one free and streams never starve calls."""

    @property
    def workers(self) -> int:
        """Worker threads a server with these limits needs."""
        return self.shared_slots + self.stream_slots + 8


class TokenBucket:
    """`capacity` tokens, refilled at `rate` per second; one token per request."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float]) -> None:
        self.rate, self.capacity, self._clock = rate, capacity, clock
        self.tokens = capacity
        self._stamp = clock()

    def take(self) -> bool:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class Slot:
    """One admitted call; `release()` (idempotent) gives its places back."""

    def __init__(self, limiter: CallLimiter, key: tuple[str, bool], shared: bool) -> None:
        self._limiter, self._key, self._shared = limiter, key, shared
        self._released = False

    def release(self) -> None:
        self._limiter._release(self)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class CallLimiter:
    """Thread-safe bookkeeping of `CallLimits` per identity."""

    def __init__(
        self, limits: CallLimits | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or CallLimits()
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        self._in_flight: dict[tuple[str, bool], int] = {}
        self._shared = {False: 0, True: 0}  # unprivileged calls in flight: unary, streams

    def acquire(self, identity: str, *, stream: bool, privileged: bool = False) -> Slot:
        """Count one call of `identity`; raise LimitExceeded if a limit says no."""
        with self._lock:
            if not privileged:
                self._take_token(identity)
            key = (identity, stream)
            cap = self.limits.streams_per_identity if stream else self.limits.unary_per_identity
            if self._in_flight.get(key, 0) >= cap:
                kind = "open streams" if stream else "calls in flight"
                raise LimitExceeded(
                    f"{identity} already has {cap} {kind} on this server (the limit); "
                    "wait for one to finish"
                )
            pool = self.limits.stream_slots if stream else self.limits.shared_slots
            if not privileged and self._shared[stream] >= pool:
                raise LimitExceeded("this server is busy with other callers; retry shortly")
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            self._shared[stream] += not privileged
            return Slot(self, key, shared=not privileged)

    def _take_token(self, identity: str) -> None:
        bucket = self._buckets.get(identity)
        if bucket is None:
            bucket = TokenBucket(self.limits.rate_per_s, self.limits.burst, self._clock)
            self._buckets[identity] = bucket
        if not bucket.take():
            raise LimitExceeded(
                f"{identity} exceeds {self.limits.rate_per_s:g} requests/s (burst "
                f"{self.limits.burst:g}); slow down"
            )

    def _release(self, slot: Slot) -> None:
        with self._lock:
            if slot._released:
                return
            slot._released = True
            left = self._in_flight[slot._key] - 1
            if left:
                self._in_flight[slot._key] = left
            else:
                del self._in_flight[slot._key]
            self._shared[slot._key[1]] -= slot._shared

    def in_flight(self) -> int:
        """Calls counted now (all identities)."""
        with self._lock:
            return sum(self._in_flight.values())
