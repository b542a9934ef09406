"""One ledger replica: the state machine replicated through Raft (pysyncobj).

Each Raft log entry is one transaction; applying it appends one block. Log compaction is
off, so a restarted or newly added replica rebuilds its state by replaying the log, and its
chain on disk comes out identical to everyone else's.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

from openswarm.ledger.block import genesis_block
from openswarm.ledger.head import sign_head, write_head
from openswarm.ledger.state import LedgerState, Rejected
from openswarm.ledger.store import ChainStore
from openswarm.ledger.tx import Transaction
from openswarm.pki import CertIdentity, Identity

log = logging.getLogger(__name__)

_NEVER = 2**62


class LedgerReplica(SyncObj):
    """A Raft replica of the ledger; thread-safe reads, writes only through `submit`."""

    def __init__(
        self,
        genesis: dict[str, Any],
        data_dir: Path,
        raft_address: str,
        partners: list[str] | tuple[str, ...],
        raft_secret: str,
        *,
        signer: Identity | None = None,
    ) -> None:
        self._state = LedgerState(genesis)
        self._data_dir = Path(data_dir)
        self._signer = signer
        self._head: dict[str, Any] | None = None
        self._head_block: dict[str, Any] | None = None  # the newest block, head not yet signed
        self._head_wanted = threading.Event()
        self._head_lock = threading.Lock()
        self._closing = False
        self._store = ChainStore(data_dir)
        self._blocks: list[dict[str, Any]] = []
        self._record(genesis_block(genesis))
        self._flush_head()
        # Heads are signed off the commit path, coalesced: one signature covers every block
        # committed meanwhile (within milliseconds), and close() signs the last one.
        self._head_writer = threading.Thread(target=self._sign_heads, daemon=True,
                                             name="ledger-head")  # fmt: skip
        self._head_writer.start()
        self._changed = threading.Condition()
        conf = SyncObjConf(
            password=raft_secret,
            journalFile=str(Path(data_dir) / "raft.journal"),
            dynamicMembershipChange=True,
            commandsWaitLeader=True,  # ride out elections; submit() bounds the wait
            logCompactionMinEntries=_NEVER,
            logCompactionMinTime=_NEVER,
            leaderFallbackTimeout=3.0,
            connectionRetryTime=0.5,
            connectionTimeout=2.0,
            raftMinTimeout=0.3,
            raftMaxTimeout=0.9,
            # Followers learn of new entries once per period, so it bounds commit latency.
            appendEntriesPeriod=0.01,
            autoTickPeriod=0.01,
        )
        super().__init__(raft_address, list(partners), conf)

    # --- replicated -----------------------------------------------------------------------
    @replicated
    def commit_tx(self, tx_json: str) -> dict[str, Any]:
        with self._changed:
            block = self._state.commit(tx_json)
            self._record(block)
            self._changed.notify_all()
        return block

    def _record(self, block: dict[str, Any]) -> None:
        """Store a block, then ask for a signed head of it (after the block, so a head is
        never ahead of the chain on disk)."""
        new = self._store.append(block)
        self._blocks.append(block)
        if self._signer is not None and (new or block["height"] == self._store.stored_height):
            self._head_block = block
            self._head_wanted.set()

    def _sign_heads(self) -> None:
        while not self._closing:
            self._head_wanted.wait()
            self._head_wanted.clear()
            self._flush_head()

    def _flush_head(self) -> None:
        """Sign and write the head of the newest stored block, if not done yet."""
        with self._head_lock:
            block = self._head_block
            if self._signer is None or block is None:
                return
            if self._head is not None and self._head["height"] >= block["height"]:
                return
            head = sign_head(self._signer, self._state.swarm, block)
            write_head(self._data_dir, head)
            self._head = head

    def submit(self, tx_json: str, done: Callable[[dict[str, Any] | None, int], None]) -> None:
        """Queue a transaction for Raft; `done(block, fail_reason)` runs once it commits."""
        self.commit_tx(tx_json, callback=done)

    # --- checks before ordering -----------------------------------------------------------
    def precheck(self, tx: Transaction) -> CertIdentity:
        """`LedgerState.precheck` against the current state (raises Rejected)."""
        # The signature, the costly part, is verified outside the lock that commits take.
        with contextlib.suppress(Rejected):
            self._state.check_signature(tx, tx.sender)
        with self._changed:
            return self._state.precheck(tx)

    def admits(self, name: str, role: str) -> bool:
        with self._changed:
            return self._state.admits(name, role)

    # --- reads ----------------------------------------------------------------------------
    def signed_head(self) -> dict[str, Any] | None:
        """The last head this replica signed (None without a signer)."""
        with self._changed:
            return self._head

    def nonce_info(self) -> dict[str, float | int]:
        with self._changed:
            return {"ledger_time": self._state.ledger_time, "nonces": self._state.nonce_count()}

    @property
    def is_leader(self) -> bool:
        return bool(self._isLeader())

    @property
    def height(self) -> int:
        with self._changed:
            return self._state.height

    def snapshot(self, contract: str | None = None) -> dict[str, Any]:
        with self._changed:
            return self._state.snapshot(contract)

    def block(self, height: int) -> dict[str, Any] | None:
        with self._changed:
            return self._blocks[height] if 0 <= height < len(self._blocks) else None

    def blocks(self, start: int, stop: int | None = None) -> list[dict[str, Any]]:
        with self._changed:
            return self._blocks[max(start, 0) : stop]

    def height_of_tx(self, tx_id: str) -> int | None:
        with self._changed:
            return self._state.tx_heights.get(tx_id)

    def wait_for_height(self, height: int, timeout: float) -> bool:
        """Block until the chain reaches `height` or the timeout passes."""
        with self._changed:
            return self._changed.wait_for(lambda: self._state.height >= height, timeout)

    def raft_status(self) -> dict[str, Any]:
        status = self.getStatus()
        leader = status.get("leader")
        partners = sorted(node.id for node in self.otherNodes)
        connected = sorted(node.id for node in self.otherNodes if self.isNodeConnected(node))
        return {
            "self": self.selfNode.id,
            "leader": leader.id if leader is not None else None,
            "state": ("follower", "candidate", "leader")[status.get("state", 0)],
            "has_quorum": bool(status.get("has_quorum")),
            "replicas": sorted([self.selfNode.id, *partners]),
            "connected": connected,
            "term": status.get("raft_term"),
            "commit_index": status.get("commit_idx"),
            "height": self.height,
        }

    def close(self) -> None:
        self.destroy()
        self._closing = True
        self._head_wanted.set()
        self._head_writer.join(timeout=5)
        self._flush_head()  # the last block's head, whatever the writer had reached
        self._store.close()


FAIL_TEXT = {
    FAIL_REASON.QUEUE_FULL: "the replica's command queue is full; retry later",
    FAIL_REASON.MISSING_LEADER: "no quorum: the ledger has no Raft leader",
    FAIL_REASON.DISCARDED: "discarded by a new Raft leader before commit; resubmit",
    FAIL_REASON.NOT_LEADER: "the Raft leader changed before commit; resubmit",
    FAIL_REASON.LEADER_CHANGED: "the Raft leader changed before commit; resubmit",
    FAIL_REASON.REQUEST_DENIED: "the Raft leader denied the request",
    FAIL_REASON.UNKNOWN_OUTCOME: "unknown outcome; query the transaction id",
}
