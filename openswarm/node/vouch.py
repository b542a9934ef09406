"""Asking the ledger whose CA may vouch for a caller, for servers a peer runs.

With several site CAs, a TLS handshake proves only that one of the swarm's CAs issued a
caller's certificate; the ledger knows which site each name belongs to. `LedgerVouch` asks
it (the ledger's Vouch call) and remembers each answer for a few seconds, so that a
leader's repeated fetches cost one ledger call.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

from openswarm.ledger.client import LedgerClient, LedgerError

#: Seconds an answer is remembered; a site change needs k admins, so this is ample.
VOUCH_TTL_S = 10.0
#: Answers remembered at most (the oldest are forgotten first).
VOUCH_CACHE_SIZE = 256


class LedgerVouch:
    """`vouch(cert_pem) -> None | reason`, as the ledger answers it (an exchange hook)."""

    def __init__(
        self,
        ledger: LedgerClient,
        *,
        ttl_s: float = VOUCH_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ledger = ledger
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[float, str | None]] = {}

    def __call__(self, cert_pem: bytes) -> str | None:
        key = hashlib.sha256(cert_pem).hexdigest()
        now = self._clock()
        with self._lock:
            found = self._answers.get(key)
        if found is not None and now - found[0] < self._ttl_s:
            return found[1]
        try:
            reason = self._ledger.vouch(cert_pem)
        except (LedgerError, UnicodeDecodeError) as exc:
            return f"cannot ask the ledger about the caller's certificate right now: {exc}"
        with self._lock:
            self._answers.pop(key, None)
            if len(self._answers) >= VOUCH_CACHE_SIZE:
                del self._answers[next(iter(self._answers))]
            self._answers[key] = (now, reason)
        return reason
