"""A contract's state as the ledger pushes it: one stream per peer instead of polling.

`ContractWatch` holds the latest state the ledger sent for one training contract (the last
few rounds of history only) and lets threads wait for a newer one. A broken stream is
reopened, on the next ledger replica if the last one is gone, and resumes where it stopped:
the ledger sends a state only if it changed since the one already held.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import grpc

from openswarm.ledger.client import LedgerClient
from openswarm.pki import Identity

log = logging.getLogger("openswarm.peer")

RECENT_ROUNDS = 3  # rounds of history each state carries (a round a peer waits on is recent)
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 2.0


class WatchError(RuntimeError):
    """The ledger could not be watched: refused, or unreachable for longer than allowed."""


class ContractWatch:
    """The latest pushed state of `contract`; `wait_newer()` waits for a change."""

    def __init__(
        self, endpoints: list[str], identity: Identity, contract: str, *, retry_s: float
    ) -> None:
        self.contract = contract
        self.retry_s = retry_s
        self._client = LedgerClient(endpoints, identity)
        self._changed = threading.Condition()
        self._state: dict[str, Any] | None = None
        self._height = 0  # the height of the block that last changed the contract
        self._chain_height = 0  # the ledger's height when that state was read
        self._have_state = False
        self._failing_since: float | None = None
        self._fatal: str | None = None
        self._closed = False
        self._call: Any = None
        self._reconnects = 0
        self._thread = threading.Thread(target=self._run, name=f"watch-{contract}", daemon=True)
        self._thread.start()

    # --- what waiters see -----------------------------------------------------------------
    @property
    def reconnects(self) -> int:
        """How often the stream was reopened after it broke."""
        return self._reconnects

    def latest(self) -> tuple[int, dict[str, Any] | None]:
        """(height of the last change, state); waits for the first state."""
        return self.wait_newer(-1, self.retry_s)

    def wait_newer(self, than: int, timeout: float) -> tuple[int, dict[str, Any] | None]:
        """The state once it changed after height `than`, or the latest when `timeout` passes
        first. WatchError if the ledger refused the watch, or was unreachable for longer
        than `retry_s`."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._changed:
            while True:
                self._raise_if_failed()
                if self._have_state and self._height > than:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    if not self._have_state:  # never had one: keep waiting up to retry_s
                        self._changed.wait(0.1)
                        continue
                    break
                self._changed.wait(left)
            return self._height, self._state

    def wait_applied(self, height: int, timeout: float) -> dict[str, Any] | None:
        """The state once the ledger's height reached `height` (a transaction this peer saw
        applied there), or the latest after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._chain_height < height:
                self._raise_if_failed()
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self._state

    def _raise_if_failed(self) -> None:
        if self._fatal is not None:
            raise WatchError(self._fatal)
        since = self._failing_since
        if since is not None and time.monotonic() - since > self.retry_s:
            raise WatchError(
                f"no ledger replica could be watched for {time.monotonic() - since:.0f} s"
            )

    def close(self) -> None:
        with self._changed:
            self._closed = True
            call = self._call
            self._changed.notify_all()
        if call is not None:
            call.cancel()
        self._thread.join(timeout=5)
        self._client.close()

    # --- the stream -----------------------------------------------------------------------
    def _run(self) -> None:
        attempt, pause = 0, _RETRY_FIRST_S
        while True:
            with self._changed:
                if self._closed:
                    return
                self._call = call = self._client.watch(
                    self.contract, start=self._height, recent=RECENT_ROUNDS, attempt=attempt
                )
            try:
                for answer in call:
                    self._take(answer)
                    pause = _RETRY_FIRST_S
            except grpc.RpcError as exc:
                if self._closed:
                    return
                if exc.code() in (grpc.StatusCode.PERMISSION_DENIED,
                                  grpc.StatusCode.INVALID_ARGUMENT):  # fmt: skip
                    self._fail(
                        f"the ledger refused to be watched: {exc.code().name}: {exc.details()}"
                    )
                    return
                log.debug("watch of %s broke (%s); reopening", self.contract, exc.details())
            if self._closed:
                return
            with self._changed:
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                self._changed.notify_all()
            self._reconnects += 1
            attempt += 1  # the next replica: this one may be down
            time.sleep(pause)
            pause = min(pause * 2, _RETRY_MAX_S)

    def _take(self, answer: dict[str, Any]) -> None:
        with self._changed:
            self._failing_since = None
            changed_at = int(answer.get("changed_at", 0))
            if changed_at >= self._height or not self._have_state:
                self._height = max(changed_at, 0)
                self._state = answer.get("state")
                self._have_state = True
            self._chain_height = max(self._chain_height, int(answer.get("height", 0)))
            self._changed.notify_all()

    def _fail(self, reason: str) -> None:
        with self._changed:
            self._fatal = reason
            self._changed.notify_all()
