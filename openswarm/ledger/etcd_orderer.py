"""Ordering through etcd: write-once keys under the swarm's prefix, etcd's revision the order.

Each record is stored at PREFIX/log/SHA256(record), written only if the key never existed,
so a resubmitted record is ordered once. Every node watches PREFIX/log/ from the revision
after the last one it applied. etcd tolerates crashes, not hostile members, so as records
arrive the node checks that each is a first write whose key matches its content, that
revisions only increase, and that nothing is deleted except what an archive allowed; it
halts with an alarm otherwise. A watch that etcd can no longer serve from this node's
position (compacted away) is reported too: the node then catches up from another node.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

from openswarm.ledger.etcd_client import (
    EtcdClient,
    EtcdError,
    WatchCompacted,
    b64,
    prefix_end,
)
from openswarm.ledger.ordering import Deliver, Halt, Orderer, OrderingError

log = logging.getLogger(__name__)

RECONNECT_S = 0.2
MEMBERSHIP_WAIT_S = 20.0
#: Records deleted per etcd transaction when archiving (managed members allow this many;
#: etcd's default limit of 128 is used when a cluster refuses more).
DELETE_BATCH = 2000
SMALL_DELETE_BATCH = 128


def record_key(prefix: bytes, record: bytes) -> bytes:
    return prefix + b"log/" + hashlib.sha256(record).hexdigest().encode("ascii")


class EtcdOrderer(Orderer):
    """Orders records through an etcd cluster."""

    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix.encode("utf-8")
        self.log_prefix = self.prefix + b"log/"
        self.archived_upto = 0  # deletes of records created at or before it are expected
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.applied_revision = 0

    # --- genesis --------------------------------------------------------------------------
    def claim_genesis(self, genesis_hash: str) -> str:
        """Record `genesis_hash` for the swarm's prefix if none is; the hash etcd holds."""
        key = self.prefix + b"genesis"
        created, _ = self.client.put_once(key, genesis_hash.encode("ascii"))
        if created:
            return genesis_hash
        stored = self.client.get(key)
        return stored.value.decode("ascii", "replace") if stored is not None else ""

    # --- ordering -------------------------------------------------------------------------
    def append(self, record: str, timeout_s: float) -> int:
        data = record.encode("utf-8")
        try:
            _, revision = self.client.put_once(
                record_key(self.prefix, data), data, timeout_s=timeout_s
            )
        except EtcdError as exc:
            raise OrderingError(f"etcd could not order the record: {exc}",
                                transient=exc.transient) from exc  # fmt: skip
        return revision

    def start(self, after: int, deliver: Deliver, halt: Halt) -> None:
        self.applied_revision = after
        self._thread = threading.Thread(
            target=self._watch, args=(deliver, halt), daemon=True, name="ledger-etcd-watch"
        )
        self._thread.start()

    def _watch(self, deliver: Deliver, halt: Halt) -> None:
        end = prefix_end(self.log_prefix)
        while not self._closing.is_set():
            try:
                for events in self.client.watch(self.log_prefix, end, self.applied_revision + 1):
                    if not self._consume(events, deliver, halt):
                        return
            except WatchCompacted as exc:
                if not self._after_compaction(exc.compact_revision, deliver, halt):
                    return
            except EtcdError as exc:
                if not self._closing.is_set():
                    log.info("etcd watch interrupted (%s); resuming", exc)
            except Exception as exc:  # the node could not apply or store what it was given
                halt(f"applying the ordered records failed: {exc}")
                return
            self._closing.wait(RECONNECT_S)

    def _after_compaction(self, compacted: int, deliver: Deliver, halt: Halt) -> bool:
        """Compaction (after an archive, or by the operator) outran the watch. If this node
        holds every archived record, the records it missed are all still stored: read them
        and go on (True). Otherwise halt (False)."""
        try:
            if self.applied_revision >= self._archived_mark() and self._read_missed(
                compacted, deliver
            ):
                return True
        except EtcdError as exc:
            log.info("etcd unavailable while catching up after compaction (%s)", exc)
            return True  # the watch is retried, and compaction reported again
        halt(
            f"etcd compacted its history up to revision {compacted}, and records this node "
            "never applied were archived: stop it, run 'openswarm ledger catch-up --config "
            "… --from OTHER_NODE' and start it again"
        )
        return False

    def _read_missed(self, compacted: int, deliver: Deliver) -> bool:
        """Deliver the stored records created after this node's position up to `compacted`."""
        start = self.applied_revision + 1
        while True:
            kvs = [
                kv
                for kv in self.client.range(
                    self.log_prefix,
                    end=prefix_end(self.log_prefix),
                    limit=500,
                    min_create_revision=start,
                    by_creation=True,
                )
                if kv.create_revision <= compacted
            ]
            batch = []
            for kv in kvs:
                if kv.version != 1 or record_key(self.prefix, kv.value) != kv.key:
                    return False
                batch.append((kv.create_revision, kv.value.decode("utf-8")))
            if batch:
                deliver(batch)
                start = batch[-1][0] + 1
            if len(kvs) < 500:
                self.applied_revision = compacted
                return True

    # --- archiving ------------------------------------------------------------------------
    def _archived_mark(self) -> int:
        """The highest position any archive dropped records up to (etcd's mark, or ours)."""
        stored = self.client.get(self.prefix + b"archived")
        mark = int(stored.value) if stored is not None and stored.value.isdigit() else 0
        return max(mark, self.archived_upto)

    def allow_archive(self, upto: int) -> None:
        """An applied archive transaction lets records created at or before `upto` go."""
        self.archived_upto = max(self.archived_upto, upto)

    def purge(self, upto: int) -> dict[str, Any]:
        """Delete archived records (created at or before `upto`) from etcd. Compacting etcd's
        history past the deletions (`compact`) waits until every node has seen them: a node
        whose watch lags would otherwise get a deletion without the record it deletes."""
        if upto > self.archived_upto:
            raise OrderingError(
                f"records up to {upto} are not archived (an admin's 'archive' transaction "
                f"allows up to {self.archived_upto})",
                transient=False,
            )
        deleted, last = 0, 0
        try:
            mark = str(max(upto, self._archived_mark())).encode("ascii")
            self.client.call(
                "/v3/kv/put", {"key": b64(self.prefix + b"archived"), "value": b64(mark)}
            )
            batch = DELETE_BATCH
            while True:
                kvs = self.client.range(
                    self.log_prefix, end=prefix_end(self.log_prefix), limit=batch,
                    max_mod_revision=upto, keys_only=True,
                )  # fmt: skip
                if not kvs:
                    break
                try:
                    self.client.delete([kv.key for kv in kvs])
                except EtcdError as exc:
                    if "too many operations" not in str(exc) or batch == SMALL_DELETE_BATCH:
                        raise
                    batch = SMALL_DELETE_BATCH  # an external cluster with etcd's default
                    continue
                deleted += len(kvs)
            last = self.client.revision()
        except EtcdError as exc:
            raise OrderingError(f"archiving failed: {exc}", transient=exc.transient) from exc
        return {"deleted": deleted, "revision": last}

    def compact(self, revision: int) -> dict[str, Any]:
        """Compact etcd's history up to `revision` (once every node's watch has passed it),
        then defragment this node's member."""
        deadline = time.monotonic() + MEMBERSHIP_WAIT_S
        while self.applied_revision < revision and time.monotonic() < deadline:
            self._closing.wait(0.05)  # our own watch passes the deletions first
        try:
            self.client.compact(revision)
            self.client.defragment(0)
        except EtcdError as exc:
            raise OrderingError(f"compacting failed: {exc}", transient=exc.transient) from exc
        return {"compacted_at": revision}

    def defragment(self) -> None:
        try:
            self.client.defragment(0)
        except EtcdError as exc:
            raise OrderingError(f"defragmenting failed: {exc}", transient=exc.transient) from exc

    def _consume(self, events: list[Any], deliver: Deliver, halt: Halt) -> bool:
        """Check and deliver one watch answer; False after halting. Records before a delete
        are applied before the delete is judged: an archive transaction among them is what
        allows it."""
        start = 0
        while start < len(events):
            # a run of records, or one delete alone: the records are applied first
            stop = next(
                (i for i in range(start, len(events)) if events[i].kind == "DELETE"),
                len(events),
            )
            stop = max(stop, start + 1)
            batch = self._checked(events[start:stop], halt)
            if batch is None:
                return False
            if batch:
                deliver(batch)
            self.applied_revision = max(self.applied_revision, events[stop - 1].kv.mod_revision)
            start = stop
        return True

    def _checked(self, events: list[Any], halt: Halt) -> list[tuple[int, str]] | None:
        """The records of a run of watch events (or of one delete), or None after halting
        on a broken invariant."""
        batch: list[tuple[int, str]] = []
        last = self.applied_revision
        for event in events:
            kv = event.kv
            name = kv.key.decode("utf-8", "replace")
            # One etcd transaction is one revision: a batch of deletes shares it.
            backwards = (
                kv.mod_revision < last if event.kind == "DELETE" else kv.mod_revision <= last
            )
            if backwards:
                halt(f"etcd delivered revision {kv.mod_revision} after {last} ({name})")
                return None
            last = kv.mod_revision
            if event.kind == "DELETE":
                created = event.prev.create_revision if event.prev is not None else None
                if created is not None and created <= self.archived_upto:
                    continue
                halt(f"ledger record {name} was deleted from etcd at revision {kv.mod_revision}")
                return None
            if kv.version != 1 or kv.create_revision != kv.mod_revision:
                halt(f"ledger record {name} was rewritten in etcd (version {kv.version})")
                return None
            if record_key(self.prefix, kv.value) != kv.key:
                halt(f"ledger record {name} does not match its content")
                return None
            try:
                batch.append((kv.mod_revision, kv.value.decode("utf-8")))
            except UnicodeDecodeError:
                halt(f"ledger record {name} is not UTF-8 text")
                return None
        return batch

    def status(self) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": "etcd", "position": self.applied_revision}
        try:
            own = self.client.status(0)  # this node's member (other members' client ports
            # listen on their own hosts' loopback: each node reports its own size)
            info["members"] = [self._member(m, own) for m in self.client.members()]
            info["revision"] = self.client.revision()
            info["has_quorum"] = True
        except EtcdError as exc:
            info["has_quorum"] = False
            info["error"] = str(exc)
        return info

    def _member(self, member: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": member.get("name", ""),
            "id": str(member.get("ID", "")),
            "peer_urls": list(member.get("peerURLs") or []),
            "client_urls": list(member.get("clientURLs") or []),
            "leader": str(own.get("leader")) == str(member.get("ID", "")),
        }
        if str(own.get("header", {}).get("member_id")) == entry["id"]:
            keep = ("version", "dbSize", "dbSizeInUse", "raftIndex", "raftTerm", "leader")
            entry["status"] = {key: own.get(key) for key in keep}
            entry["self"] = True
        return entry

    def add_member(self, peer_url: str) -> list[dict[str, Any]]:
        # etcd adds a member only once every current one has been connected for a few
        # seconds ("unhealthy cluster" until then): keep asking for a bounded time.
        deadline = time.monotonic() + MEMBERSHIP_WAIT_S
        while True:
            try:
                answer = self.client.add_member(peer_url)
                return list(answer.get("members") or [])
            except EtcdError as exc:
                if not exc.transient or time.monotonic() > deadline:
                    raise OrderingError(f"etcd refused to add {peer_url}: {exc}") from exc
            self._closing.wait(RECONNECT_S)

    def remove_member(self, name: str) -> list[dict[str, Any]]:
        try:
            members = self.client.members()
            found = [m for m in members if m.get("name") == name]
            if not found:
                names = ", ".join(sorted(str(m.get("name", "?")) for m in members))
                raise ValueError(f"no etcd member called {name!r}; members: {names}")
            answer = self.client.remove_member(str(found[0]["ID"]))
        except EtcdError as exc:
            raise OrderingError(f"etcd refused to remove {name}: {exc}") from exc
        return list(answer.get("members") or [])

    def close(self) -> None:
        self._closing.set()
        self.client.abort_streams()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.client.close()
