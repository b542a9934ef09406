"""Operators on the ledger: which site's operator runs tasks as which peer, and when it last
said it was alive.

An operator (role `operator` in the PKI, admitted like any identity) announces itself with
`operator_heartbeat {peer, host, heartbeat_s}`: the peer identity of its own site that its
task runs use. A peer is run by one operator only, and with several site CAs only by an
operator of the same site. Deterministic, like the rest of the state machine.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from openswarm.ledger.contract_checks import ContractError, check_number, check_str

Events = list[dict[str, Any]]
MAX_HOST_CHARS = 100
#: Longest heartbeat interval an operator may announce (liveness is judged against it).
MAX_HEARTBEAT_S = 3600.0
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class OperatorError(ContractError):
    """An operator transaction the ledger refuses; the message names the fix."""


class OperatorRoster:
    """Every operator that has announced itself, with the peer it runs as."""

    def __init__(self) -> None:
        self.operators: dict[str, dict[str, Any]] = {}

    def heartbeat(
        self,
        payload: Any,
        sender: str,
        now: float,
        admitted: Mapping[str, str],
        sites: Mapping[str, str],
    ) -> Callable[[], Events]:
        """The checked heartbeat of operator `sender`, to apply later; OperatorError if not."""
        if not isinstance(payload, Mapping) or not {"peer"} <= set(payload) <= {
            "peer",
            "host",
            "heartbeat_s",
        }:
            raise OperatorError("'operator_heartbeat' needs payload {peer, host, heartbeat_s}")
        peer = payload["peer"]
        if not isinstance(peer, str) or admitted.get(peer) != "peer":
            raise OperatorError(
                f"operator {sender}: {str(peer)[:80]!r} is not a peer admitted "
                "to this swarm; name the peer identity of your own site"
            )
        if sites.get(peer) != sites.get(sender):
            raise OperatorError(
                f"operator {sender} of site {sites.get(sender)!r} may not run "
                f"peer {peer} of site {sites.get(peer)!r}"
            )
        holder = next((n for n, o in self.operators.items() if o["peer"] == peer), sender)
        if holder != sender:
            raise OperatorError(
                f"peer {peer} is run by operator {holder} already; one peer identity, one operator"
            )
        host = payload.get("host", "")
        if host != "":
            host = check_str(host, "operator host")
            if len(host) > MAX_HOST_CHARS or _CONTROL.search(host):
                raise OperatorError(
                    f"operator host must be at most {MAX_HOST_CHARS} printable characters"
                )
        interval = check_number(payload.get("heartbeat_s", 10.0), "heartbeat_s", minimum=0.1)
        if interval > MAX_HEARTBEAT_S:
            raise OperatorError(f"heartbeat_s must be at most {MAX_HEARTBEAT_S:g}")

        def apply() -> Events:
            known = self.operators.get(sender)
            first = now if known is None else known["first_seen"]
            self.operators[sender] = {
                "peer": peer,
                "host": host,
                "heartbeat_s": interval,
                "first_seen": first,
                "last_seen": now,
            }
            return (
                []
                if known is not None
                else [{"kind": "operator_joined", "operator": sender, "peer": peer}]
            )

        return apply

    def forget(self, name: str) -> None:
        """Drop a revoked operator."""
        self.operators.pop(name, None)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: dict(entry) for name, entry in sorted(self.operators.items())}


def alive(entry: Mapping[str, Any], ledger_time: float, misses: float = 3.0) -> bool:
    """Whether an operator is alive at `ledger_time`: its last heartbeat is at most `misses`
    of its intervals old."""
    return ledger_time - float(entry["last_seen"]) <= misses * float(entry["heartbeat_s"])


__all__ = ["OperatorError", "OperatorRoster", "alive"]
