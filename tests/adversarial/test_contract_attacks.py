"""A peer tries to create, squat on or re-configure training contracts (real replica).

Contracts come only from the genesis or an admin, with their settings: a peer can join one,
never make or change one, and hostile names never reach the chain.
"""

from __future__ import annotations

import base64
import secrets
import time

import pytest

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.client import LedgerError
from openswarm.ledger.local import LocalLedger
from openswarm.ledger.tx import Transaction, TxFormatError
from openswarm.pki import Identity

ENDPOINT = {"endpoint": "127.0.0.1:9"}


def _signed(identity: Identity, tx_type: str, contract: str, payload: dict) -> dict:
    """A correctly signed transaction that skips the client's own format checks."""
    tx = Transaction(type=tx_type, contract=contract, round=0, sender=identity.name,
                     nonce=secrets.token_hex(16), payload=payload, timestamp=time.time(),
                     cert=identity.cert_pem.decode("ascii"))  # fmt: skip
    signature = base64.b64encode(identity.sign(tx.signed_bytes())).decode("ascii")
    return {**tx.body(), "signature": signature}


def test_a_peer_cannot_create_a_contract(ledger1: LocalLedger) -> None:
    peer = ledger1.client("p1")
    height = peer.status()["height"]
    with pytest.raises(LedgerError, match=r"PERMISSION_DENIED.*contract_create.*admin"):
        peer.submit("contract_create", contract="mine", payload={"leader_timeout_s": 1e12})
    outcome = peer.submit("register", contract="mine", payload=ENDPOINT)
    assert not outcome.applied and "does not exist; an admin creates it" in outcome.reason
    assert peer.state("mine")["state"] is None
    assert peer.status()["height"] == height + 1  # the refused register only


def test_hostile_contract_names_never_reach_the_chain(ledger1: LocalLedger) -> None:
    peer = ledger1.client("p1")
    height = peer.status()["height"]
    for name in ("x" * 100_000, "../../etc", "a b"):
        # Our own client refuses to build such a transaction; a hostile one signs it anyway.
        with pytest.raises(TxFormatError, match="contract name"):
            peer.submit("register", contract=name, payload=ENDPOINT)
        forged = _signed(ledger1.identity("p1"), "register", name, ENDPOINT)
        with pytest.raises(LedgerError, match=r"INVALID_ARGUMENT.*contract name"):
            peer.call("Submit", {"tx": forged})
    with ledger1.client("admin") as admin, pytest.raises(LedgerError, match="contract name"):
        admin.call("Submit", {"tx": _signed(ledger1.identity("admin"), "contract_create",
                                            "y" * 65, {})})  # fmt: skip
    assert peer.status()["height"] == height


def test_a_peer_cannot_reconfigure_a_contract_by_registering_first(
    ledger1: LocalLedger,
) -> None:
    before = ledger1.client("admin").state(DEFAULT_CONTRACT)["state"]["settings"]
    squatter = ledger1.client("p1")
    outcome = squatter.submit(
        "register", contract=DEFAULT_CONTRACT, payload={**ENDPOINT, "leader_timeout_s": 1e12}
    )
    assert not outcome.applied and "setting leader_timeout_s conflicts" in outcome.reason
    honest = ledger1.client("p2")
    honest.submit("register", contract=DEFAULT_CONTRACT, payload=ENDPOINT).raise_for_status()
    state = honest.state(DEFAULT_CONTRACT)["state"]
    assert state["settings"] == before and list(state["members"]) == ["p2"]


def test_only_an_admin_creates_a_contract_and_its_settings_hold(ledger1: LocalLedger) -> None:
    with ledger1.client("admin") as admin:
        admin.submit("contract_create", contract="study",
                     payload={"min_peers": 3}).raise_for_status()  # fmt: skip
        again = admin.submit("contract_create", contract="study", payload={"min_peers": 1})
        assert not again.applied and "already exists" in again.reason
        bad = admin.submit("contract_create", contract="other", payload={"min_peer": 1})
        assert not bad.applied and "unknown setting(s) min_peer" in bad.reason
    peer = ledger1.client("p3")
    peer.submit("register", contract="study", payload=ENDPOINT).raise_for_status()
    assert peer.state("study")["state"]["settings"]["min_peers"] == 3
