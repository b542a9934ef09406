"""Archiving: drop records from etcd once every ledger node holds them in its chain file.

An admin's signed 'archive' transaction allows it, up to the lowest position every node
has applied; one node then deletes those records from etcd and compacts etcd's history, and
every node defragments its member. Chains lose nothing: `verify` and new nodes (which catch
up from another node's chain) still see every block.
"""

from __future__ import annotations

import time
from typing import Any

from openswarm.ledger.client import LedgerClient, LedgerError

#: How long one node may take to drop archived records and defragment its member.
ARCHIVE_TIMEOUT_S = 600.0


def archive(client: LedgerClient, *, keep: int = 0) -> dict[str, Any]:
    """Archive everything but the last `keep` positions, through every endpoint of `client`
    (they must be all the ledger's nodes). Returns what was done, with database sizes."""
    statuses = []
    for endpoint in client.endpoints:
        with LedgerClient([endpoint], client.identity, timeout_s=client.timeout_s) as one:
            statuses.append(one.status())
    if any(s["ordering"].get("kind") != "etcd" for s in statuses):
        raise LedgerError("only an etcd-backed ledger archives; an embedded one has no etcd")
    upto = min(int(s["position"]) for s in statuses) - keep
    if upto < 1:
        return {"upto": 0, "deleted": 0, "before": _sizes(statuses), "after": _sizes(statuses)}
    client.submit("archive", payload={"upto": upto}).raise_for_status()
    first, *others = client.endpoints
    with LedgerClient([first], client.identity, timeout_s=ARCHIVE_TIMEOUT_S) as one:
        purged = one.call("Archive", {"upto": upto, "purge": True})
        done: dict[str, Any] = {"upto": upto, "deleted": purged.get("deleted", 0)}
        if done["deleted"]:
            # Only once every node's watch has passed the deletions may etcd forget them.
            _wait_applied(client, int(purged["revision"]))
            done.update(one.call("Archive", {"upto": upto, "compact": purged["revision"]}))
    for endpoint in others:
        with LedgerClient([endpoint], client.identity, timeout_s=ARCHIVE_TIMEOUT_S) as one:
            one.call("Archive", {"upto": upto, "purge": False})
    after = []
    for endpoint in client.endpoints:
        with LedgerClient([endpoint], client.identity, timeout_s=client.timeout_s) as one:
            after.append(one.status())
    return {**done, "before": _sizes(statuses), "after": _sizes(after)}


def _wait_applied(client: LedgerClient, revision: int) -> None:
    """Until every node that answers has applied everything up to `revision`; a node that
    is down misses the deletions and, when it comes back, halts and asks for a catch-up."""
    deadline = time.monotonic() + ARCHIVE_TIMEOUT_S
    pending = list(client.endpoints)
    while pending and time.monotonic() < deadline:
        endpoint = pending[0]
        try:
            with LedgerClient([endpoint], client.identity, timeout_s=5) as one:
                status = one.status()
        except LedgerError:
            pending.pop(0)  # down: it cannot lag behind the compaction, only miss it
            continue
        # the revision its etcd watch has passed, deletions included
        if int(status["ordering"].get("position", 0)) >= revision or status.get("halted"):
            pending.pop(0)
        else:
            time.sleep(0.05)


def _sizes(statuses: list[dict[str, Any]]) -> dict[str, int]:
    """Database size (bytes) of each etcd member, as the nodes report them."""
    sizes: dict[str, int] = {}
    for status in statuses:
        for member in status["ordering"].get("members") or []:
            size = (member.get("status") or {}).get("dbSize")
            if size is not None:
                sizes[str(member.get("name"))] = int(size)
    return sizes
