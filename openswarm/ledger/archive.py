"""Archiving: drop records from etcd once every ledger node holds them in its chain file.

An admin's signed 'archive' transaction allows it, up to the lowest position every node
has applied; one node then deletes those records from etcd and compacts etcd's history, and
every node defragments its member. Chains lose nothing: `verify` and new nodes (which catch
up from another node's chain) still see every block.
"""

from __future__ import annotations

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
    done: dict[str, Any] = {"upto": upto}
    for index, endpoint in enumerate(client.endpoints):
        with LedgerClient([endpoint], client.identity, timeout_s=ARCHIVE_TIMEOUT_S) as one:
            answer = one.call("Archive", {"upto": upto, "purge": index == 0})
            if index == 0:
                done.update(answer)
    after = []
    for endpoint in client.endpoints:
        with LedgerClient([endpoint], client.identity, timeout_s=client.timeout_s) as one:
            after.append(one.status())
    return {**done, "before": _sizes(statuses), "after": _sizes(after)}


def _sizes(statuses: list[dict[str, Any]]) -> dict[str, int]:
    """Database size (bytes) of each etcd member, as the nodes report them."""
    sizes: dict[str, int] = {}
    for status in statuses:
        for member in status["ordering"].get("members") or []:
            size = (member.get("status") or {}).get("dbSize")
            if size is not None:
                sizes[str(member.get("name"))] = int(size)
    return sizes
