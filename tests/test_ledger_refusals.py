"""Refusals: who-sent-it checks answer before ordering and leave no block; contract-level
refusals are committed as rejected blocks with their reason. Neither changes any state."""

from __future__ import annotations

import dataclasses

import pytest

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.ledger.local import LocalLedger
from openswarm.ledger.tx import Transaction, make_transaction
from openswarm.pki import Identity, init_ca, issue_identity

C = DEFAULT_CONTRACT
DIGEST = "ab" * 32


def _register(client: LedgerClient, endpoint: str) -> None:
    client.submit(
        "register", contract=C, payload={"endpoint": endpoint, "weight": 1}
    ).raise_for_status()


def _contract_state(client: LedgerClient) -> dict:
    return client.state(C)["state"]


def _expect_rejected(client: LedgerClient, tx: Transaction, reason_part: str) -> None:
    before = client.state()
    outcome = client.submit_tx(tx)
    assert outcome.status == "rejected", outcome
    assert reason_part in (outcome.reason or ""), outcome.reason
    after = client.state()
    # Only the chain head moved; admitted identities and every contract are untouched.
    for key in ("admitted", "contracts", "swarm", "genesis_hash"):
        assert after[key] == before[key]
    # one block of this transaction (and any clock ticks the ledger nodes added meanwhile,
    # as an idle ledger does every few seconds: a loaded machine can take that long)
    added = client.blocks(before["height"] + 1, after["height"])
    assert [b for b in added if "tick" not in b] == client.blocks(outcome.height, outcome.height)
    block = client.blocks(outcome.height, outcome.height)[0]
    assert block["outcome"] == {"status": "rejected", "reason": outcome.reason}


def _expect_refused(client: LedgerClient, tx: Transaction, code: str, reason_part: str) -> None:
    """Refused before ordering: an error naming the reason, and nothing committed."""
    before = client.state()
    with pytest.raises(LedgerError, match=code) as caught:
        client.submit_tx(tx)
    assert reason_part in str(caught.value), caught.value
    assert client.state() == before


def test_refusals(ledger1: LocalLedger, tmp_path) -> None:
    p1, p2, p3 = (ledger1.identity(n) for n in ("p1", "p2", "p3"))
    admin = ledger1.identity("admin")
    c1 = ledger1.client("p1")
    for name, port in (("p1", 1001), ("p2", 1002), ("p3", 1003)):
        _register(ledger1.client(name), f"127.0.0.1:{port}")

    # bad signature: the payload was changed after signing
    good = make_transaction(p1, "ready", contract=C, round=1, payload={"digest": DIGEST, "size": 1})
    forged = Transaction.from_dict({**good.to_dict(), "payload": {"digest": DIGEST, "size": 2}})
    _expect_refused(c1, forged, "INVALID_ARGUMENT", "bad signature")

    # signed by an identity of another swarm's CA
    other = tmp_path / "other-ca"
    init_ca(other, "other")
    stranger = Identity.load(issue_identity(other, "p1", "peer"))
    stray = make_transaction(stranger, "finished", contract=C)
    _expect_refused(c1, stray, "INVALID_ARGUMENT", "certificate refused")

    # right CA, but never admitted
    intruder = Identity.load(issue_identity(ledger1.pki_dir, "intruder", "peer"))
    unknown = make_transaction(intruder, "finished", contract=C)
    _expect_refused(c1, unknown, "PERMISSION_DENIED", "not admitted")

    # wrong role both ways
    as_admin = make_transaction(admin, "ready", contract=C, round=1, payload={})
    _expect_refused(c1, as_admin, "PERMISSION_DENIED", "needs role 'peer'")
    as_peer = make_transaction(p1, "admit", payload={"name": "x", "role": "peer"})
    _expect_refused(c1, as_peer, "PERMISSION_DENIED", "needs role")

    # replayed nonce: same nonce, other content
    first = make_transaction(p2, "metrics", contract=C, round=1, nonce="n" * 16,
                             payload={"loss": 1.0, "metric": None, "epoch": 1,
                                      "total_epochs": 2})  # fmt: skip
    original = c1.submit_tx(first)
    assert original.applied
    again = make_transaction(p2, "metrics", contract=C, round=1, nonce="n" * 16,
                             payload={"loss": 0.5, "metric": None, "epoch": 1,
                                      "total_epochs": 2})  # fmt: skip
    _expect_refused(c1, again, "INVALID_ARGUMENT", "replayed nonce")
    # resubmitting the very same transaction is idempotent: the original outcome comes back
    height = c1.status()["height"]
    again_outcome = c1.submit_tx(first)
    assert (again_outcome.height, again_outcome.status) == (original.height, "applied")
    assert c1.status()["height"] == height  # nothing new was committed

    # seal below min_peers (2): only p1 is ready
    ready1 = make_transaction(p1, "ready", contract=C, round=1,
                              payload={"digest": DIGEST, "size": 10})  # fmt: skip
    assert c1.submit_tx(ready1).applied
    _expect_rejected(c1, make_transaction(p1, "seal", contract=C, round=1), "min_peers")

    # merged from a peer that is not the leader
    ready2 = make_transaction(
        p2, "ready", contract=C, round=1, payload={"digest": DIGEST, "size": 10}
    )
    assert c1.submit_tx(ready2).applied
    seal = c1.submit_tx(make_transaction(p3, "seal", contract=C, round=1)).raise_for_status()
    leader = seal.result["leader"]
    non_leader = p2 if leader == "p1" else p1
    merged = make_transaction(non_leader, "merged", contract=C, round=1,
                              payload={"digest": "cd" * 32, "size": 10})  # fmt: skip
    _expect_rejected(c1, merged, "not the leader")
    assert _contract_state(c1)["latest_merged"] is None


def test_malformed_requests_get_clear_errors(ledger1: LocalLedger) -> None:
    from openswarm.ledger.client import LedgerError

    c1 = ledger1.client("p1")
    tx = make_transaction(ledger1.identity("p1"), "finished", contract=C)
    bad = dataclasses.replace(tx, type="explode")
    with pytest.raises(LedgerError, match="unknown transaction type"):
        c1.call("Submit", {"tx": bad.to_dict()})
    with pytest.raises(LedgerError, match="lacks field"):
        c1.call("Submit", {"tx": {"type": "ready"}})
    stale = make_transaction(ledger1.identity("p1"), "finished", contract=C, timestamp=1.0)
    with pytest.raises(LedgerError, match="off ledger time"):
        c1.submit_tx(stale)
