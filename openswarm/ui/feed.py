"""The dashboard's view of the ledger: polled through one client, cached, and a version
number that grows whenever the ledger does, for the pages that wait on it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from openswarm.admin.client import node_status
from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.ui.chain import ChainIndex, read_blocks

log = logging.getLogger(__name__)

#: The least time between two reads of the ledger, however fast blocks come.
MIN_READ_GAP_S = 0.05


class LedgerFeed:
    """Keeps the ledger's state, status and chain index fresh, and wakes the pages waiting in
    `wait_newer` whenever something changed. It reads again as soon as the ledger's block
    stream shows a new block, and every `poll_s` regardless (node health, a broken stream)."""

    def __init__(self, client: LedgerClient, *, poll_s: float = 0.5) -> None:
        self.client = client
        self.poll_s = poll_s
        self.index = ChainIndex()
        self.state: dict[str, Any] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.error: str | None = None
        self.version = 0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ui-feed", daemon=True)
        self._follower = threading.Thread(target=self._follow, name="ui-follow", daemon=True)
        self._lock = threading.Lock()  # guards index, state and nodes while they change
        self._nudge = threading.Event()  # a new block: read now
        self._stream: Any = None
        self._genesis: Any = None  # the chain this view is of

    def start(self) -> None:
        self.refresh()
        self._thread.start()
        self._follower.start()

    def close(self) -> None:
        self._stop.set()
        self._nudge.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()
        with self._changed:
            self._changed.notify_all()
        for thread in (self._thread, self._follower):
            if thread.is_alive():
                thread.join(timeout=5)

    def _follow(self) -> None:
        """Nudge the reader at each new block of the ledger's stream (from the height it has
        read); on a broken stream, open it again after a second."""
        while not self._stop.is_set():
            try:
                self._stream = self.client.stream(self.index.next_height)
                for _ in self._stream:
                    self._nudge.set()
                    if self._stop.is_set():
                        return
            except (LedgerError, grpc.RpcError) as exc:
                log.debug("the ledger's block stream ended: %s", exc)
            self._stop.wait(1.0)

    def _run(self) -> None:
        next_nodes = 0.0
        while not self._stop.is_set():
            self._nudge.wait(self.poll_s)
            self._nudge.clear()
            if self._stop.wait(MIN_READ_GAP_S):  # blocks in a burst: one read for them all
                return
            try:
                self.refresh(with_nodes=time.monotonic() >= next_nodes)
            except Exception:  # a bug here must not end the feed silently
                log.exception("refreshing the dashboard's view of the ledger failed")
            if time.monotonic() >= next_nodes:
                next_nodes = time.monotonic() + 2.0

    def refresh(self, *, with_nodes: bool = True) -> bool:
        """Read what changed; True if anything did."""
        try:
            status = self.client.status()
            if status.get("genesis_hash") != self._genesis:
                self._restart(status.get("genesis_hash"))
            fresh_nodes = node_status(self.client) if with_nodes else None
            blocks: list[dict[str, Any]] = []
            state = None
            if int(status.get("height") or 0) >= self.index.next_height or not self.state:
                # the state first, then the blocks up to its height: a page shows both from
                # the same point of the chain
                state = self.client.state()
                height = int(state.get("height") or 0)
                for chunk in read_blocks(self.client, self.index.next_height, height):
                    blocks.extend(chunk)
            error = None
        except LedgerError as exc:
            error, blocks, state, fresh_nodes = str(exc), [], None, None
        with self._lock:
            changed = error != self.error
            self.error = error
            if blocks:
                changed |= self.index.add(blocks) > 0
            if state is not None:
                self.state, changed = state, True
            if fresh_nodes is not None and _health(fresh_nodes) != _health(self.nodes):
                changed = True
            if fresh_nodes is not None:
                self.nodes = fresh_nodes
        if changed:
            self.touch()
        return changed

    def touch(self) -> None:
        """Wake the waiting pages: something they show changed."""
        with self._changed:
            self.version += 1
            self._changed.notify_all()

    def _restart(self, genesis_hash: Any) -> None:
        """Another chain answers at these addresses (a new swarm there): forget the old one."""
        with self._lock:
            self._genesis = genesis_hash
            self.index = ChainIndex()
            self.state = {}

    def wait_newer(self, version: int, timeout_s: float) -> int:
        """The version once it is past `version`, or after `timeout_s`, or at close."""
        with self._changed:
            self._changed.wait_for(
                lambda: self.version > version or self._stop.is_set(), timeout=timeout_s
            )
            return self.version

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    @contextmanager
    def read(self) -> Iterator[LedgerFeed]:
        """A consistent view to compute a page from (hold it only briefly)."""
        with self._lock:
            yield self


def _health(nodes: dict[str, dict[str, Any]]) -> list[tuple[str, bool, Any]]:
    return [(e, "error" in n, n.get("height")) for e, n in sorted(nodes.items())]
