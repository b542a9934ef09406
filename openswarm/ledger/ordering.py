"""The ordering layer under a ledger node: one total order of records, delivered in order.

A ledger node hands each checked record (a signed transaction or a tick) to its orderer and
applies whatever the orderer delivers, in order, to the deterministic state. Two orderers
exist: `EmbeddedOrderer` (this process alone; the node's own chain file is the log) and
`EtcdOrderer` (etcd's revision is the order, see etcd_orderer.py). Everything above this
layer is shared.
"""

from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

#: Called with records in order: (position, record) pairs; positions strictly increase.
Deliver = Callable[[list[tuple[int, str]]], None]
#: Called once when the log can no longer be trusted; the node stops serving.
Halt = Callable[[str], None]


class OrderingError(RuntimeError):
    """A record could not be ordered; `transient` if resubmitting later may work."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class Orderer(ABC):
    """Orders records and delivers them to one ledger node."""

    #: True if delivered blocks must reach the disk before a submitter is answered.
    durable_by_node: bool = False

    @abstractmethod
    def start(self, after: int, deliver: Deliver, halt: Halt) -> None:
        """Begin delivering every record after position `after`, on a thread of its own."""

    @abstractmethod
    def append(self, record: str, timeout_s: float) -> int:
        """Put `record` into the order; its position. OrderingError if it cannot."""

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """What the ordering layer looks like from this node (for `ledger status`)."""

    @abstractmethod
    def close(self) -> None:
        """Stop delivering; records appended meanwhile may or may not be delivered."""

    def allow_archive(self, upto: int) -> None:  # noqa: B027 - nothing to allow by default
        """An applied archive transaction allows dropping records up to position `upto`."""

    def purge(self, upto: int) -> dict[str, Any]:
        """Drop archived records from the ordering layer (nothing to drop when embedded)."""
        return {"deleted": 0, "revision": 0}

    def compact(self, revision: int) -> dict[str, Any]:
        """Forget the ordering layer's history up to `revision` (nothing when embedded)."""
        return {"compacted_at": None}

    def defragment(self) -> None:  # noqa: B027 - nothing to give back by default
        """Give back the space purged records took."""

    def add_member(self, peer_url: str) -> list[dict[str, Any]]:
        """Add a member to the ordering cluster; the members after the change."""
        raise ValueError(_ONE_NODE)

    def remove_member(self, name: str) -> list[dict[str, Any]]:
        """Remove the member called `name`; the members after the change."""
        raise ValueError(_ONE_NODE)


_ONE_NODE = (
    "an embedded ledger has exactly one node; membership changes need an etcd-backed "
    "ledger (export the chain and import it into one)"
)


class EmbeddedOrderer(Orderer):
    """A single-process order: records are delivered in the order they were appended, in
    batches, and the node writes and fsyncs each batch before anyone is answered."""

    durable_by_node = True

    def __init__(self) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._position = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def start(self, after: int, deliver: Deliver, halt: Halt) -> None:
        self._position = after
        self._thread = threading.Thread(
            target=self._run, args=(deliver, halt), daemon=True, name="ledger-embedded-order"
        )
        self._thread.start()

    def append(self, record: str, timeout_s: float) -> int:
        with self._lock:
            if self._closed:
                raise OrderingError("the ledger node is shutting down")
            self._queue.put(record)
        return -1  # known once delivered

    def _run(self, deliver: Deliver, halt: Halt) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            records = [first]
            while len(records) < 512:  # group commit: one fsync for everything queued
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                records.append(item)
            batch = []
            for record in records:
                self._position += 1
                batch.append((self._position, record))
            try:
                deliver(batch)
            except Exception as exc:  # the node could not store its own blocks
                halt(f"the embedded ledger could not apply or store a block: {exc}")
                return

    def status(self) -> dict[str, Any]:
        return {"kind": "embedded", "position": self._position, "has_quorum": not self._closed}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)
