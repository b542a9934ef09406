"""No single key holder rules the swarm, against a real ledger node over mTLS gRPC.

Three sites bring their own CAs; the genesis lists them and needs two of the three admins
for every admin change. Site a's CA mints certificates naming site b's peer and admin: TLS
lets them in (every site CA is trusted), but the ledger service, the ledger state and a
peer's model exchange all refuse them, and every ledger node refuses the ticks it signs for
other sites' ledger nodes. One admin alone can propose an admit, a revoke or a contract,
never make it happen; the second admin's approval does, each one a signed block.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from harness import run_cli

from openswarm import DEFAULT_CONTRACT
from openswarm.codec import digest_encoded, encode
from openswarm.ledger.canonical import canonical_bytes
from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.ledger.etcd_client import EtcdClient
from openswarm.ledger.etcd_orderer import record_key
from openswarm.ledger.local import LocalLedger
from openswarm.ledger.ticks import make_tick
from openswarm.ledger.tx import make_transaction
from openswarm.node.exchange import ExchangeClient, ExchangeError, ExchangeServer
from openswarm.node.vouch import LedgerVouch
from openswarm.pki import Identity, init_ca, install_trust, issue_identity

SITES = {
    "a": ["ledger-1", "pa", "adm-a"],
    "b": ["pb", "adm-b"],
    "c": ["adm-c"],
}
REGISTER = {"endpoint": "127.0.0.1:9", "weight": 1}
DATA = encode({"w": np.arange(8, dtype=np.float32)})
DIGEST = digest_encoded(DATA)
OWN_CA_ONLY = "only a site's own CA can vouch"


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[LocalLedger]:
    """One ledger node of a swarm whose three sites each have a CA; admin quorum 2 of 3."""
    net = LocalLedger.create(tmp_path / "net", peers=("pa", "pb"),
                             admins=("adm-a", "adm-b", "adm-c"), sites=SITES, admin_quorum=2,
                             contract_settings={})  # fmt: skip
    try:
        net.start()
        net.wait_ready("adm-a")
        yield net
    finally:
        net.close()


def _minted(net: LocalLedger, by_site: str, name: str, role: str, tmp_path: Path) -> Identity:
    """A certificate for `name` from `by_site`'s CA, trusting every site CA (as an attacker
    holding that CA would set it up)."""
    folder = issue_identity(
        net.site_ca_dir(by_site), name, role, out_dir=tmp_path / "minted" / name
    )
    install_trust(folder, net.identity("adm-a").ca_cert_pem)
    return Identity.load(folder)


def _client(net: LocalLedger, identity: Identity) -> LedgerClient:
    return LedgerClient(net.endpoints, identity, timeout_s=10)


def _height(net: LocalLedger) -> int:
    with net.client("adm-a") as client:
        return client.status()["height"]


# --- a site's CA cannot issue a working identity for another site ----------------------------
def test_a_sites_ca_cannot_issue_a_working_identity_for_another_site(
    sites: LocalLedger, tmp_path: Path
) -> None:
    net = sites
    fake_pb = _minted(net, "a", "pb", "peer", tmp_path)
    fake_admin = _minted(net, "a", "adm-b", "admin", tmp_path)
    height = _height(net)
    # The ledger service refuses the minted identities after the TLS handshake ...
    for fake in (fake_pb, fake_admin):
        with _client(net, fake) as client, pytest.raises(LedgerError) as caught:
            client.status()
        assert "PERMISSION_DENIED" in str(caught.value) and OWN_CA_ONLY in str(caught.value)
    # ... and their transactions, relayed by a genuine member, never reach the chain.
    with net.client("pa") as relay:
        for tx in (
            make_transaction(fake_pb, "register", contract=DEFAULT_CONTRACT, payload=REGISTER),
            make_transaction(fake_admin, "admit", payload={"name": "x", "role": "peer",
                                                           "site": "a"}),
        ):  # fmt: skip
            with pytest.raises(LedgerError, match="PERMISSION_DENIED") as caught:
                relay.submit_tx(tx)
            assert OWN_CA_ONLY in str(caught.value)
        assert relay.vouch(fake_pb.cert_pem) is not None
        assert relay.vouch(net.identity("pb").cert_pem) is None
    assert _height(net) == height
    # The genuine holder of the name, from its own site's CA, is served.
    with net.client("pb") as genuine:
        genuine.submit("register", contract=DEFAULT_CONTRACT, payload=REGISTER).raise_for_status()
        assert "pb" in genuine.state(DEFAULT_CONTRACT)["state"]["members"]


def test_a_peer_serves_its_model_only_to_identities_of_their_own_site(
    sites: LocalLedger, tmp_path: Path
) -> None:
    net = sites
    fake_pb = _minted(net, "a", "pb", "peer", tmp_path)
    with net.client("pa") as ledger:
        server = ExchangeServer(net.identity("pa"), "127.0.0.1:0", vouch=LedgerVouch(ledger))
        blind = ExchangeServer(net.identity("pa"), "127.0.0.1:0")  # no ledger to ask
        fetchers = [ExchangeClient(fake_pb), ExchangeClient(net.identity("pb"))]
        try:
            for exchange in (server, blind):
                exchange.store.publish("merged", 1, DIGEST, DATA)
            with pytest.raises(ExchangeError, match="PERMISSION_DENIED") as caught:
                fetchers[0].fetch(server.endpoint, "merged", 1, DIGEST, max_bytes=len(DATA))
            assert OWN_CA_ONLY in str(caught.value)
            got = fetchers[1].fetch(server.endpoint, "merged", 1, DIGEST, max_bytes=len(DATA))
            assert got == DATA
            with pytest.raises(ExchangeError, match="no ledger to ask"):
                fetchers[1].fetch(blind.endpoint, "merged", 1, DIGEST, max_bytes=len(DATA))
        finally:
            for fetcher in fetchers:
                fetcher.close()
            server.stop()
            blind.stop()


def test_a_ca_outside_the_genesis_gets_no_tls_connection(
    sites: LocalLedger, tmp_path: Path
) -> None:
    outsider_ca = init_ca(tmp_path / "outsider", sites.swarm, site="a")  # same names, new key
    folder = issue_identity(outsider_ca, "pa", "peer")
    install_trust(folder, sites.identity("pa").ca_cert_pem)  # it trusts the ledger's server
    with (
        _client(sites, Identity.load(folder)) as client,
        pytest.raises(LedgerError, match="no ledger replica answered"),
    ):
        client.status()  # but the ledger does not trust its certificate


# --- one admin alone cannot admit, revoke or create a contract when k = 2 --------------------
def test_one_admin_alone_cannot_admit_revoke_or_create_a_contract(
    sites: LocalLedger, tmp_path: Path
) -> None:
    net = sites
    pc = Identity.load(issue_identity(net.site_ca_dir("b"), "pc", "peer",
                                      out_dir=tmp_path / "pc"))  # fmt: skip
    install_trust(pc.folder, net.identity("pb").ca_cert_pem)
    pc = Identity.load(pc.folder)
    changes = [
        ("admit", "", {"name": "pc", "role": "peer", "site": "b"},
         lambda s: s["admitted"].get("pc") == "peer"),
        ("revoke", "", {"name": "pb"}, lambda s: "pb" not in s["admitted"]),
        ("contract_create", "c1", {"min_peers": 3}, lambda s: "c1" in s["contracts"]),
    ]  # fmt: skip
    with net.client("adm-a") as first, net.client("adm-c") as second:
        for tx_type, contract, payload, done in changes:
            proposed = first.submit(tx_type, contract=contract, payload=payload)
            event = proposed.raise_for_status().result["events"][0]
            assert event["kind"] == "proposed" and event["approvers"] == ["adm-a"]
            assert not done(first.state())
            again = first.submit(tx_type, contract=contract, payload=payload)
            assert again.status == "rejected" and "already approved" in (again.reason or "")
            approved = second.submit(tx_type, contract=contract, payload=payload)
            assert approved.raise_for_status().result["events"][0]["approvers"] == [
                "adm-a", "adm-c"
            ]  # fmt: skip
            assert done(first.state())
            assert first.state()["proposals"] == {}
        # each approval is its own signed block
        approvals = [b["tx"]["sender"] for b in first.blocks(0) if b.get("tx", {}).get("type")
                     in ("admit", "revoke", "contract_create")
                     and b["outcome"]["status"] == "applied"]  # fmt: skip
        assert approvals == ["adm-a", "adm-c"] * 3
    with _client(net, pc) as client:  # admitted by two admins: served now
        assert client.status()["height"] > 0
    with net.client("pb") as client, pytest.raises(LedgerError, match="PERMISSION_DENIED"):
        client.status()  # revoked by two admins


def test_the_cli_says_a_proposal_awaits_more_approvals(sites: LocalLedger) -> None:
    net = sites
    connect = ",".join(net.endpoints)

    def admit(admin: str) -> str:
        done = run_cli("ledger", "admit", "pd", "--role", "peer", "--site", "a", "--connect",
                       connect, "--identity", str(net.identity_dir(admin)))  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "awaits 1 more admin approval" in admit("adm-b")
    listed = run_cli("ledger", "proposals", "--connect", connect,
                     "--identity", str(net.identity_dir("adm-a")))  # fmt: skip
    assert "1 pending proposal" in listed.stdout and "adm-b (1/2)" in listed.stdout
    applied = admit("adm-a")
    assert "admitted: name=pd" in applied and "(approved by adm-b, adm-a)" in applied
    with net.client("adm-a") as client:
        assert client.state()["admitted"]["pd"] == "peer"


# --- a site's CA cannot speak for other sites' ledger nodes --------------------------------------
@pytest.fixture
def three_sites(tmp_path: Path) -> Iterator[LocalLedger]:
    """Three etcd-backed ledger nodes, one per site, each site with its own CA."""
    sites = {"a": ["ledger-1", "adm-a"], "b": ["ledger-2", "adm-b"], "c": ["ledger-3"]}
    net = LocalLedger.create(tmp_path / "net", replicas=3, admins=("adm-a", "adm-b"),
                             sites=sites, admin_quorum=2, contract_settings={})  # fmt: skip
    try:
        net.start()
        net.wait_ready("adm-a")
        yield net
    finally:
        for index in range(len(net.replicas)):
            net.kill(index)
        net.close()


def test_a_sites_ca_cannot_tick_for_other_sites_ledger_nodes(
    three_sites: LocalLedger, tmp_path: Path
) -> None:
    # Site a mints ledger-2 and ledger-3 and writes their ticks, an hour ahead, straight into
    # etcd (which trusts every site CA): accepted, they would be a majority moving ledger time.
    net = three_sites
    ahead = round(time.time() + 3600, 3)
    prefix = f"/openswarm/{net.swarm}/".encode()
    member = yaml.safe_load(net.replicas[0].config_path.read_text())["etcd"]["member"]
    minted = [_minted(net, "a", name, "ledger", tmp_path) for name in ("ledger-2", "ledger-3")]
    revision = 0
    with contextlib.closing(EtcdClient([member["client_url"]], minted[0])) as etcd:
        for node in minted:
            record = canonical_bytes({"tick": make_tick(node, net.swarm, ahead)})
            created, revision = etcd.put_once(record_key(prefix, record), record)
            assert created
    for endpoint in net.endpoints:
        with LedgerClient([endpoint], net.identity("adm-a"), timeout_s=5) as client:
            deadline = time.monotonic() + 30
            while client.status()["position"] < revision and time.monotonic() < deadline:
                time.sleep(0.05)
            status = client.status()
            assert status["position"] >= revision
            assert status["ledger_time"] < time.time() + 60
            assert all(when < ahead for when in status["ticks"].values())
            forged = [b for b in client.blocks(0) if b.get("tick", {}).get("time") == ahead]
            assert len(forged) == 2
            assert all(b["outcome"]["status"] == "rejected" for b in forged)
            assert all(OWN_CA_ONLY in b["outcome"]["reason"] for b in forged)
