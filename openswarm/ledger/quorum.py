"""Admin quorum: an admin change takes effect once k distinct admins have approved it.

With `admin_quorum` k > 1 in the genesis, an admit, revoke or contract_create sent by one
admin is a pending proposal, keyed by the digest of what it does (type, contract, payload).
Each admin who sends the same transaction content adds an approval; the k-th applies it.
Every approval is its own signed transaction on the chain. Pending proposals are bounded:
each expires PROPOSAL_WINDOW_S of ledger time after it was opened, and each admin holds at
most MAX_APPROVALS_PER_ADMIN pending approvals. Pure: no clock, no I/O; `now` is ledger time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from openswarm.ledger.canonical import canonical_bytes, sha256_hex

#: Admin transaction types that need the quorum. 'archive' does not: it only lets the
#: ordering layer drop records every node already holds in its chain (nothing is lost, no
#: member, contract or weight changes), and it is routine housekeeping; nor does 'task_logs',
#: which only asks the operators for the end of their runs' logs.
QUORUM_TYPES = frozenset(
    {"admit", "revoke", "contract_create", "task_create", "task_assign", "task_reset"}
)
#: Events of pending proposals: the first approval opens one, later ones add to it. The
#: change itself, once approved, has its usual event with an `approvers` list.
QUORUM_EVENT_KINDS = ("proposed", "approved")
#: Seconds of ledger time a proposal waits for its approvals (as long as a nonce is kept).
PROPOSAL_WINDOW_S = 900.0
#: Pending approvals one admin may hold at a time (bounds what pending proposals take).
MAX_APPROVALS_PER_ADMIN = 16


class QuorumError(ValueError):
    """An approval that cannot count; str() is the reason."""


def proposal_digest(tx_type: str, contract: str, payload: Mapping[str, Any]) -> str:
    """What a proposal is: the same digest for every admin sending the same change."""
    return sha256_hex(canonical_bytes({"type": tx_type, "contract": contract,
                                       "payload": dict(payload)}))  # fmt: skip


@dataclass
class Proposal:
    """A change some admins approved, waiting for the rest."""

    type: str
    contract: str
    payload: dict[str, Any]
    opened: float
    approvers: list[str] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        return {"type": self.type, "contract": self.contract, "payload": self.payload,
                "opened": self.opened, "approvers": list(self.approvers)}  # fmt: skip


class Proposals:
    """The pending proposals of one ledger state."""

    def __init__(self, quorum: int) -> None:
        self.quorum = quorum
        self.pending: dict[str, Proposal] = {}

    def approve(
        self, tx_type: str, contract: str, payload: Mapping[str, Any], admin: str, now: float
    ) -> tuple[str, list[str], bool]:
        """Count `admin`'s approval: (digest, approvers so far, whether the quorum is now
        reached). A reached proposal is removed; the caller applies the change. Raises
        QuorumError, changing nothing, if the approval cannot count. Expiry is the caller's
        (`expire`, each time ledger time moves), so `now` only dates a new proposal."""
        digest = proposal_digest(tx_type, contract, payload)
        found = self.pending.get(digest)
        approvers = [] if found is None else found.approvers
        if admin in approvers:
            raise QuorumError(
                f"admin {admin!r} already approved proposal {digest[:12]}…; it needs "
                f"{self.quorum - len(approvers)} more approval(s) from other admins"
            )
        held = sum(admin in p.approvers for p in self.pending.values())
        if held >= MAX_APPROVALS_PER_ADMIN and len(approvers) + 1 < self.quorum:
            raise QuorumError(
                f"admin {admin!r} already holds {held} pending approvals (limit "
                f"{MAX_APPROVALS_PER_ADMIN}); wait until they are applied or expire "
                f"({PROPOSAL_WINDOW_S:.0f} s of ledger time after each was proposed)"
            )
        approvers = [*approvers, admin]
        if len(approvers) >= self.quorum:
            self.pending.pop(digest, None)
            return digest, approvers, True
        if found is None:
            found = Proposal(tx_type, contract, dict(payload), now)
            self.pending[digest] = found
        found.approvers = approvers
        return digest, approvers, False

    def expire(self, now: float) -> None:
        """Drop proposals opened more than PROPOSAL_WINDOW_S before `now`."""
        oldest = now - PROPOSAL_WINDOW_S
        for digest in [d for d, p in self.pending.items() if p.opened < oldest]:
            del self.pending[digest]

    def keep_approvers(self, still_admin: Callable[[str], bool]) -> None:
        """Drop the approvals of those no longer admins, and proposals left without any."""
        for digest, proposal in list(self.pending.items()):
            proposal.approvers = [a for a in proposal.approvers if still_admin(a)]
            if not proposal.approvers:
                del self.pending[digest]

    def snapshot(self) -> dict[str, Any]:
        return {digest: p.snapshot() for digest, p in sorted(self.pending.items())}


__all__ = [
    "MAX_APPROVALS_PER_ADMIN",
    "PROPOSAL_WINDOW_S",
    "QUORUM_EVENT_KINDS",
    "QUORUM_TYPES",
    "Proposal",
    "Proposals",
    "QuorumError",
    "proposal_digest",
]
