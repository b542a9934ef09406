"""Client of the ledger's gRPC service that knows several replicas and fails over."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from openswarm.ledger.tx import Transaction, make_transaction
from openswarm.net import FAST_RECONNECT, secure_channel
from openswarm.net.jsonrpc import decode_json, encode_json, json_stub
from openswarm.pki import Identity, role_host
from openswarm.protocol import LEDGER_SERVICE as SERVICE
from openswarm.protocol import NO_QUORUM

#: How long a client with several endpoints waits for one to connect before trying the next.
CONNECT_WAIT_S = 3.0


def _connects(channel: grpc.Channel, timeout_s: float) -> bool:
    ready = grpc.channel_ready_future(channel)
    try:
        ready.result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        ready.cancel()
        return False
    return True


class LedgerError(RuntimeError):
    """The ledger could not answer (all replicas unreachable, or a refused request).

    `transient` says whether the same request may succeed later (no quorum, replicas
    unreachable or restarting, a rate limit) rather than being refused for good.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class NoQuorumError(LedgerError):
    """Too few replicas are up to commit anything; nothing was lost, resubmit later."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class TxRejected(LedgerError):
    """The ledger committed the transaction as rejected; `reason` says why."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(f"{outcome.reason} (block {outcome.height})")
        self.outcome = outcome
        self.reason = outcome.reason


@dataclass(frozen=True)
class Outcome:
    """The committed result of one transaction."""

    tx_id: str
    height: int
    block_hash: str
    status: str
    reason: str | None
    result: dict[str, Any] | None

    @property
    def applied(self) -> bool:
        return self.status == "applied"

    def raise_for_status(self) -> Outcome:
        if not self.applied:
            raise TxRejected(self)
        return self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome:
        return cls(
            tx_id=data["tx_id"],
            height=data["height"],
            block_hash=data["block_hash"],
            status=data["status"],
            reason=data.get("reason"),
            result=data.get("result"),
        )


class LedgerClient:
    """Talks to any of several replicas over mTLS, moving on when one is down."""

    def __init__(
        self, endpoints: Sequence[str] | str, identity: Identity, *, timeout_s: float = 15.0
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise LedgerError("no ledger endpoints given (host:port, comma separated)")
        self.endpoints = list(endpoints)
        self.identity = identity
        self.timeout_s = timeout_s
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._preferred = 0
        self._answered: set[str] = set()  # endpoints whose last call got an answer

    # --- transport ------------------------------------------------------------------------
    def _channel(self, endpoint: str) -> grpc.Channel:
        with self._lock:  # a client may serve several threads (a peer's snapshot server)
            return self._channel_locked(endpoint)

    def _channel_locked(self, endpoint: str) -> grpc.Channel:
        if endpoint not in self._channels:
            # The server must hold a ledger identity of this swarm's CA, whatever its address.
            options = (*FAST_RECONNECT, ("grpc.ssl_target_name_override", role_host("ledger")))
            self._channels[endpoint] = secure_channel(endpoint, self.identity, options=options)
        return self._channels[endpoint]

    def _order(self) -> list[str]:
        n = len(self.endpoints)
        return [self.endpoints[(self._preferred + i) % n] for i in range(n)]

    def call(self, method: str, request: Mapping[str, Any], timeout_s: float | None = None) -> Any:
        """Unary call on the first replica that answers."""
        failures: list[str] = []
        no_quorum = False
        for endpoint in self._order():
            channel = self._channel(endpoint)
            unproven = endpoint not in self._answered and len(self.endpoints) > 1
            if unproven and not _connects(channel, CONNECT_WAIT_S):
                # A host that does not answer at all (down, cut off) is skipped at once,
                # not after the whole call deadline.
                failures.append(f"{endpoint}: not reachable within {CONNECT_WAIT_S:g} s")
                continue
            stub = json_stub(channel, SERVICE, method)
            try:
                answer = stub(dict(request), timeout=timeout_s or self.timeout_s)
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    self._answered.discard(endpoint)
                    no_quorum = no_quorum or details.startswith(NO_QUORUM)
                    failures.append(f"{endpoint}: {details or code.name}")
                    continue
                raise LedgerError(
                    f"{endpoint}: {code.name}: {details}",
                    transient=code == grpc.StatusCode.RESOURCE_EXHAUSTED,
                ) from exc
            self._preferred = self.endpoints.index(endpoint)
            self._answered.add(endpoint)
            return answer
        summary = "; ".join(failures)
        if no_quorum:
            raise NoQuorumError(summary)
        raise LedgerError(f"no ledger replica answered: {summary}", transient=True)

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- API ------------------------------------------------------------------------------
    def submit_tx(self, tx: Transaction) -> Outcome:
        """Submit a signed transaction; returns its committed outcome (applied or rejected)."""
        return Outcome.from_dict(self.call("Submit", {"tx": tx.to_dict()}))

    def submit(
        self,
        tx_type: str,
        *,
        contract: str = "",
        round: int = 0,
        payload: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """Sign a transaction as this client's identity and submit it."""
        tx = make_transaction(
            self.identity, tx_type, contract=contract, round=round, payload=payload
        )
        return self.submit_tx(tx)

    def status(self) -> dict[str, Any]:
        return self.call("Status", {})

    def state(self, contract: str | None = None, *, recent: int | None = None) -> dict[str, Any]:
        """The ledger's state, or one contract's; `recent` keeps only that many last rounds
        of its history and metrics (cheaper to poll)."""
        request: dict[str, Any] = {} if contract is None else {"contract": contract}
        if recent is not None:
            request["recent"] = recent
        return self.call("State", request)

    def blocks(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        request: dict[str, Any] = {"from": start}
        if stop is not None:
            request["to"] = stop
        return self.call("Blocks", request)["blocks"]

    def tx(self, tx_id: str) -> Outcome:
        return Outcome.from_dict(self.call("Tx", {"tx_id": tx_id}))

    def vouch(self, cert_pem: bytes) -> str | None:
        """None if the ledger vouches for the certificate now (its name admitted with its
        role, issued by its own site's CA); otherwise the reason it does not."""
        answer = self.call("Vouch", {"cert": cert_pem.decode("ascii")})
        if answer.get("vouched") is True:
            return None
        return str(answer.get("reason") or "the ledger does not vouch for this certificate")

    def add_replica(self, peer_url: str) -> dict[str, Any]:
        """Add an etcd member (its https peer URL) before starting its ledger node."""
        return self.call("AddReplica", {"peer_url": peer_url}, timeout_s=30)

    def remove_replica(self, name: str) -> dict[str, Any]:
        """Remove the etcd member `name` from the cluster (then stop its node)."""
        return self.call("RemoveReplica", {"name": name}, timeout_s=30)

    def watch(
        self, contract: str, *, start: int = 0, recent: int = 8, attempt: int = 0
    ) -> Iterator[dict[str, Any]]:
        """`contract`'s state now (unless it has not changed since height `start`), then again
        whenever it changes: `{"height", "changed_at", "state", ...}` with the last `recent`
        rounds of history. `attempt` picks the replica (the preferred one first, then the
        next); `.cancel()` ends it."""
        endpoint = self._order()[attempt % len(self.endpoints)]
        stub = self._channel(endpoint).unary_stream(
            f"/{SERVICE}/Stream", request_serializer=encode_json, response_deserializer=decode_json
        )
        request = {"watch": True, "contract": contract, "from": start, "recent": recent}
        return stub(request)  # type: ignore[no-any-return]

    def stream(self, start: int = 0, contract: str | None = None) -> Iterator[dict[str, Any]]:
        """Blocks from `start` on, live, from the preferred replica; `.cancel()` ends it."""
        request: dict[str, Any] = {"from": start}
        if contract is not None:
            request["contract"] = contract
        endpoint = self._order()[0]
        stub = self._channel(endpoint).unary_stream(
            f"/{SERVICE}/Stream", request_serializer=encode_json, response_deserializer=decode_json
        )
        return stub(request)  # type: ignore[no-any-return]
