"""One ledger node: the deterministic state, fed in order by the ordering layer.

The node checks transactions before they are ordered, hands them to its orderer (embedded
or etcd), applies every record the orderer delivers, in order, to the ledger state, and
stores each block in its chain file. It also ticks: now and then it orders a signed reading
of its clock, from which the state derives ledger time (ticks.py). On start it replays its
own chain file through the state, so a chain file that was altered, or that belongs to
another genesis, is refused before anything is served.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openswarm.ledger.block import genesis_block
from openswarm.ledger.canonical import canonical_bytes
from openswarm.ledger.head import sign_head, write_head
from openswarm.ledger.ordering import Orderer, OrderingError
from openswarm.ledger.state import LedgerState, Rejected
from openswarm.ledger.store import ChainStore, StoreError, read_chain, truncate_torn_tail
from openswarm.ledger.ticks import make_tick
from openswarm.ledger.tx import Transaction
from openswarm.pki import CertIdentity, Identity

log = logging.getLogger(__name__)

#: Seconds between ticks while the ledger is live, and while it is idle. It is live while
#: anything but ticks was ordered within the last ACTIVE_WINDOW_S (a running swarm's sites
#: heartbeat every few seconds), so ledger time then trails real time by about one tick.
TICK_S = 1.0
IDLE_TICK_S = 10.0
ACTIVE_WINDOW_S = 30.0
#: Least time between two signed heads: one signature covers every block committed meanwhile.
HEAD_INTERVAL_S = 0.2
WINDOW_BLOCKS = 1024  # recent blocks kept in memory (at most twice as many)


class LedgerHalted(RuntimeError):
    """The node found its log or chain untrustworthy and stopped serving; str() says why."""


class LedgerReplica:
    """A ledger node's state and chain; thread-safe reads, writes only through `order`."""

    def __init__(
        self,
        genesis: dict[str, Any],
        data_dir: Path,
        orderer: Orderer,
        *,
        signer: Identity | None = None,
        tick_s: float = TICK_S,
        idle_tick_s: float = IDLE_TICK_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = LedgerState(genesis)
        self._data_dir = Path(data_dir)
        self._signer = signer
        self._orderer = orderer
        self._clock = clock
        self._tick_s = tick_s
        self._idle_tick_s = idle_tick_s
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self.halted: str | None = None
        # The last blocks, from height _window_base on; older ones are read from the chain
        # file, so memory does not grow with the chain.
        self._window: list[dict[str, Any]] = []
        self._window_base = 0
        self._positions = array("q")  # ordering position of each block, by height
        self._active_at = -ACTIVE_WINDOW_S  # monotonic time something besides a tick came
        self._head: dict[str, Any] | None = None
        self._head_block: dict[str, Any] | None = None
        self._head_wanted = threading.Event()
        self._head_lock = threading.Lock()
        offsets: list[int] = []
        self._replay_stored(genesis, offsets)
        self._store = ChainStore(data_dir, offsets=offsets)
        if self._store.stored_height < 0:
            self._store.append(self._window[0], 0)
            self._store.flush(sync=True)
        self._head_block = self._window[-1]
        self._trim_window()
        self._flush_head()
        # Heads are signed off the commit path, coalesced: one signature covers every block
        # committed meanwhile, and close() signs the last one.
        self._threads = [
            threading.Thread(target=self._sign_heads, daemon=True, name="ledger-head"),
        ]
        orderer.start(self._positions[-1], self._deliver, self._halt)
        if signer is not None and signer.role == "ledger":
            self._threads.append(
                threading.Thread(target=self._tick_loop, daemon=True, name="ledger-tick")
            )
        for thread in self._threads:
            thread.start()

    # --- start: the chain on disk ---------------------------------------------------------
    def _replay_stored(self, genesis: dict[str, Any], offsets: list[int]) -> None:
        """Apply the stored chain again; refuse a chain of another genesis or an altered one.
        Collects where each stored block starts in the file into `offsets`."""
        truncate_torn_tail(self._data_dir)
        positions: list[int] = []
        stored = read_chain(self._data_dir, positions=positions, offsets=offsets)
        first = genesis_block(genesis)
        if stored and stored[0] != first:
            raise StoreError(
                f"{self._data_dir}: the stored chain starts from another genesis (hash "
                f"{stored[0].get('hash', '?')[:16]}…, this config's is {first['hash'][:16]}…); "
                "point the node at its own data folder or move the old one away"
            )
        self._window.append(first)
        self._positions.append(0)
        for block, position in zip(stored[1:], positions[1:], strict=True):
            try:
                again: dict[str, Any] | None = self._state.commit(self._state.record_of(block))
            except (ValueError, KeyError, TypeError):
                again = None  # not even a block this ledger could have written
            if again != block:
                raise StoreError(
                    f"{self._data_dir}: stored block {block.get('height')} differs from what "
                    "its record yields; the chain file was altered — run 'openswarm ledger "
                    "verify' on it and move it away to resync from the other nodes"
                )
            self._window.append(block)
            self._positions.append(position)
            self._note_archive(block, position)

    def _note_archive(self, block: dict[str, Any], position: int) -> None:
        """An applied archive transaction lets the orderer drop records up to its `upto`
        (never past the archive record itself)."""
        tx = block.get("tx")
        archive = isinstance(tx, dict) and tx.get("type") == "archive"
        if archive and block["outcome"]["status"] == "applied":
            self._orderer.allow_archive(min(int(tx["payload"]["upto"]), position))

    # --- applying what the orderer delivers -----------------------------------------------
    def _deliver(self, batch: list[tuple[int, str]]) -> None:
        if self.halted:
            return
        with self._changed:
            for position, record in batch:
                block = self._state.commit(record)
                self._store.append(block, position)
                self._window.append(block)
                self._positions.append(position)
                self._note_archive(block, position)
                if "tick" not in block:
                    self._active_at = time.monotonic()
            self._store.flush(sync=self._orderer.durable_by_node)
            self._trim_window()
            self._changed.notify_all()
        if self._signer is not None:
            self._head_block = self._window[-1]
            self._head_wanted.set()

    def _halt(self, reason: str) -> None:
        if self._closing.is_set():
            return
        log.critical("LEDGER NODE HALTED: %s", reason)
        with self._changed:
            self.halted = reason
            self._changed.notify_all()

    # --- ordering -------------------------------------------------------------------------
    def order(self, tx: Transaction, timeout_s: float) -> dict[str, Any]:
        """Order a checked transaction and return its block (the first one, if it was
        ordered before). OrderingError if it is not applied within `timeout_s`."""
        self._check_running()
        self._active_at = time.monotonic()
        deadline = time.monotonic() + timeout_s
        self._orderer.append(tx.to_json(), timeout_s)
        tx_id = tx.tx_id
        with self._changed:
            self._changed.wait_for(
                lambda: tx_id in self._state.tx_heights or self.halted is not None,
                max(deadline - time.monotonic(), 0.0),
            )
            self._check_running()
            height = self._state.tx_heights.get(tx_id)
            if height is None:
                raise OrderingError(f"not applied within {timeout_s:g} s")
            return self._block_locked(height)

    def _check_running(self) -> None:
        if self.halted is not None:
            raise LedgerHalted(f"this ledger node halted: {self.halted}")
        if self._closing.is_set():
            raise OrderingError("this ledger node is shutting down")

    # --- ticks ----------------------------------------------------------------------------
    def _tick_loop(self) -> None:
        assert self._signer is not None
        last = -self._idle_tick_s  # monotonic time of this node's last tick
        first = True
        while not self._closing.wait(0.0 if first else self._tick_s):
            first = False
            now = time.monotonic()
            live = now - self._active_at < ACTIVE_WINDOW_S
            idle = self._state.time_established and not live
            if idle and now - last < self._idle_tick_s:
                continue
            if not self.admits(self._signer.name, "ledger"):
                continue  # not (yet) admitted: its ticks would only be refused
            try:
                self.tick()
                last = now
            except (OrderingError, LedgerHalted) as exc:
                log.debug("tick not ordered: %s", exc)

    def tick(self) -> None:
        """Order one tick of this node's clock (never earlier than its previous tick)."""
        assert self._signer is not None
        name = self._signer.name
        with self._changed:
            previous = self._state.latest_ticks.get(name, 0.0)
        when = max(round(self._clock(), 3), round(previous + 0.001, 3))
        tick = make_tick(self._signer, self._state.swarm, when)
        self._check_running()
        self._orderer.append(canonical_bytes({"tick": tick}).decode("utf-8"), TICK_S * 5)

    def wait_for_time(self, timeout_s: float) -> bool:
        """Block until ledger time is established (a majority of nodes ticked)."""
        with self._changed:
            return (
                self._changed.wait_for(
                    lambda: self._state.time_established or self.halted is not None, timeout_s
                )
                and self.halted is None
            )

    # --- heads ----------------------------------------------------------------------------
    def _sign_heads(self) -> None:
        while not self._closing.is_set():
            self._head_wanted.wait()
            self._head_wanted.clear()
            self._flush_head()
            self._closing.wait(HEAD_INTERVAL_S)

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

    def vouch(self, cert_pem: str) -> CertIdentity:
        """`LedgerState.vouch` against the current state (raises Rejected)."""
        with self._changed:
            return self._state.vouch(cert_pem)

    # --- reads ----------------------------------------------------------------------------
    def signed_head(self) -> dict[str, Any] | None:
        """The last head this node signed (None without a signer)."""
        with self._changed:
            return self._head

    def time_info(self) -> dict[str, Any]:
        with self._changed:
            return {
                "ledger_time": self._state.ledger_time,
                "ticks": dict(sorted(self._state.latest_ticks.items())),
                "nonces": self._state.nonce_count(),
            }

    @property
    def height(self) -> int:
        with self._changed:
            return self._state.height

    @property
    def position(self) -> int:
        with self._changed:
            return self._positions[-1]

    def snapshot(self, contract: str | None = None, recent: int | None = None) -> dict[str, Any]:
        with self._changed:
            return self._state.snapshot(contract, recent)

    def tasks(self, task: str | None = None) -> dict[str, Any]:
        """The tasks and operators (what an operator watches), with the ledger time; with
        `task`, that task's whole definition as well (its bundle's file list included)."""
        with self._changed:
            state = self._state
            answer: dict[str, Any] = {"height": state.height, "ledger_time": state.ledger_time,
                                      "tasks": state.tasks.snapshot(),
                                      "operators": state.operators.snapshot()}  # fmt: skip
            if task is not None:
                found = state.tasks.tasks.get(task)
                answer["spec"] = None if found is None else json.loads(json.dumps(found["spec"]))
            return answer

    def summary(self) -> dict[str, Any]:
        """Height, last hash, swarm and genesis hash: the state without its contracts."""
        with self._changed:
            state = self._state
            return {"height": state.height, "last_hash": state.last_hash,
                    "swarm": state.swarm, "genesis_hash": state.genesis_hash}  # fmt: skip

    def wait_for_change(self, contract: str, after: int, timeout: float) -> bool:
        """Block until a block after height `after` changes `contract` (or the node halts);
        False when the timeout passed first."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._state.changed_at.get(contract, 0) > after or self.halted is not None,
                timeout,
            )

    def block(self, height: int) -> dict[str, Any] | None:
        with self._changed:
            if not 0 <= height <= self._state.height:
                return None
            return self._block_locked(height)

    def blocks(self, start: int, stop: int | None = None) -> list[dict[str, Any]]:
        """Blocks of heights start..stop-1 (to the last one without `stop`)."""
        with self._changed:
            end = self._state.height + 1 if stop is None else min(stop, self._state.height + 1)
            start = max(start, 0)
            base = self._window_base
            recent = self._window[max(start, base) - base : max(end, base) - base]
            older_stop = min(end, base)
        older = self._store.read(start, older_stop) if start < older_stop else []
        return older + recent

    def _block_locked(self, height: int) -> dict[str, Any]:
        if height >= self._window_base:
            return self._window[height - self._window_base]
        return self._store.read(height, height + 1)[0]

    def _trim_window(self) -> None:
        """Keep WINDOW_BLOCKS to 2 x WINDOW_BLOCKS recent blocks in memory."""
        if len(self._window) > 2 * WINDOW_BLOCKS:
            drop = len(self._window) - WINDOW_BLOCKS
            del self._window[:drop]
            self._window_base += drop

    def positions(self, start: int, stop: int | None = None) -> list[int]:
        """Where each block's record sits in the ordering layer (an etcd revision)."""
        with self._changed:
            return list(self._positions[max(start, 0) : stop])

    def height_of_tx(self, tx_id: str) -> int | None:
        with self._changed:
            return self._state.tx_heights.get(tx_id)

    def wait_for_height(self, height: int, timeout: float) -> bool:
        """Block until the chain reaches `height` or the timeout passes."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._state.height >= height or self.halted is not None, timeout
            )

    @property
    def name(self) -> str:
        return self._signer.name if self._signer is not None else ""

    def ordering_status(self) -> dict[str, Any]:
        return self._orderer.status()

    def purge(self, upto: int) -> dict[str, Any]:
        """Drop archived records up to position `upto` from the ordering layer."""
        self._check_running()
        if upto > self.position:
            raise OrderingError(f"this node has applied records only up to {self.position}")
        return self._orderer.purge(upto)

    def compact(self, revision: int) -> dict[str, Any]:
        """Forget the ordering layer's history up to `revision` (after a purge)."""
        self._check_running()
        return self._orderer.compact(revision)

    def defragment(self) -> None:
        self._orderer.defragment()

    def add_member(self, peer_url: str) -> list[dict[str, Any]]:
        return self._orderer.add_member(peer_url)

    def remove_member(self, name: str) -> list[dict[str, Any]]:
        return self._orderer.remove_member(name)

    def close(self) -> None:
        self._closing.set()
        self._orderer.close()
        self._head_wanted.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._flush_head()  # the last block's head, whatever the writer had reached
        self._store.close()
