"""Each site brings its own CA: the genesis lists them, and the ledger counts an identity only
when its certificate comes from the CA of the site the ledger admitted its name under."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
from harness import run_cli
from site_pki import (
    SWARM,
    SitePki,
    build_sites,
    commit,
    ledger_time_now,  # noqa: F401 - an autouse fixture: ledger time, per test
    started,
    tick_record,
    tx_record,
)

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.genesis import GenesisError, check_genesis, make_genesis
from openswarm.ledger.head import check_head, sign_head
from openswarm.ledger.state import LedgerState, NotPermitted
from openswarm.pki import (
    Identity,
    PkiError,
    init_ca,
    install_trust,
    issue_identity,
    make_bundle,
    same_trust,
    split_bundle,
    verify_in_bundle,
)

SITES = {
    "a": [("ledger-1", "ledger"), ("adm-a", "admin"), ("pa", "peer")],
    "b": [("adm-b", "admin"), ("pb", "peer")],
}
NOW = round(time.time(), 3)  # ledger time: set again as each test starts (site_pki)


REGISTER = {"endpoint": "127.0.0.1:1", "weight": 1}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SitePki:
    return build_sites(tmp_path_factory.mktemp("sites"), SITES, contracts={DEFAULT_CONTRACT: {}})


def _state(pki: SitePki) -> LedgerState:
    return started(pki.genesis, pki.ids["ledger-1"], NOW)


def _view(state: LedgerState) -> str:
    snap = {k: v for k, v in state.snapshot().items() if k not in ("height", "last_hash")}
    return json.dumps(snap, sort_keys=True)


# --- the genesis ------------------------------------------------------------------------------
def test_genesis_lists_each_site_ca_and_bundles_them(pki: SitePki) -> None:
    genesis = pki.genesis
    assert sorted(genesis["sites"]) == ["a", "b"]
    bundle = genesis["ca_cert"].encode()
    assert len(split_bundle(bundle)) == 2
    cas = [genesis["sites"][s]["ca_cert"].encode() for s in ("a", "b")]
    assert same_trust(bundle, make_bundle(reversed(cas)))  # order does not matter
    assert {e["name"]: e["site"] for e in genesis["admitted"]}["pb"] == "b"


def test_genesis_refuses_what_would_let_one_ca_vouch_for_another_sites_names(
    pki: SitePki, tmp_path: Path
) -> None:
    good = pki.genesis

    def refused(change, match: str) -> None:
        genesis = copy.deepcopy(good)
        change(genesis)
        with pytest.raises(GenesisError, match=match):
            check_genesis(genesis)

    refused(lambda g: g["admitted"][0].pop("site"), "must name its site")
    refused(lambda g: g["admitted"][0].update(site="z"), "must name its site")
    refused(lambda g: g.update(ca_cert=g["sites"]["a"]["ca_cert"]), "bundle of every site")
    refused(lambda g: g["sites"]["b"].update(ca_cert=g["sites"]["a"]["ca_cert"]), "shares its CA")
    other = init_ca(tmp_path / "other", "another-swarm", site="c")
    pem = (other / "ca.crt").read_text()
    refused(lambda g: g["sites"].update(c={"ca_cert": pem}), "serves swarm 'another-swarm'")
    refused(lambda g: g["sites"].update(c={"ca_cert": pem, "x": 1}), "only 'ca_cert'")
    single = make_genesis(SWARM, good["sites"]["a"]["ca_cert"].encode(), [("p", "peer")])
    with pytest.raises(GenesisError, match="lists no sites"):
        check_genesis({**single, "admitted": [{"name": "p", "role": "peer", "site": "a"}]})
    with pytest.raises(GenesisError, match="not both"):
        make_genesis(SWARM, b"x", [], sites={"a": b"x"})


def test_a_single_ca_genesis_is_unchanged(pki: SitePki) -> None:
    ca = pki.genesis["sites"]["a"]["ca_cert"].encode()
    genesis = make_genesis(SWARM, ca, [("p", "peer")])
    assert set(genesis) == {"swarm", "ca_cert", "admitted", "contracts", "created"}
    assert genesis["admitted"] == [{"name": "p", "role": "peer"}]
    assert "sites" not in LedgerState(genesis).genesis


# --- the ledger's checks ----------------------------------------------------------------------
def test_a_sites_ca_cannot_issue_a_working_identity_for_another_site(pki: SitePki) -> None:
    state = _state(pki)
    forged_peer = pki.forge("a", "pb", "peer")  # site a's CA minting site b's peer
    forged_admin = pki.forge("a", "adm-b", "admin")
    before = _view(state)
    for identity, tx_type, fields in (
        (forged_peer, "register", {"contract": DEFAULT_CONTRACT, "payload": REGISTER}),
        (forged_admin, "admit", {"payload": {"name": "x", "role": "peer", "site": "a"}}),
    ):
        with pytest.raises(NotPermitted, match="issued by the CA of site 'a'"):
            state.vouch(identity.cert_pem.decode())
        outcome = commit(state, tx_record(identity, tx_type, NOW, **fields))
        assert outcome["status"] == "rejected"
        assert "only a site's own CA can vouch" in outcome["reason"]
    assert _view(state) == before
    # The genuine holders of those names are accepted.
    assert state.vouch(pki.ids["pb"].cert_pem.decode()).name == "pb"
    genuine = tx_record(pki.ids["pb"], "register", NOW, contract=DEFAULT_CONTRACT,
                        payload=REGISTER)  # fmt: skip
    assert commit(state, genuine)["status"] == "applied"


def test_a_forged_ledger_node_cannot_tick(pki: SitePki, tmp_path: Path) -> None:
    state = _state(pki)
    forged = pki.forge("b", "ledger-1", "ledger")
    outcome = commit(state, tick_record(forged, NOW + 60))
    assert outcome["status"] == "rejected" and "site 'b'" in outcome["reason"]
    assert state.ledger_time == NOW


def test_a_ca_outside_the_genesis_is_refused(pki: SitePki, tmp_path: Path) -> None:
    stranger_ca = init_ca(tmp_path / "stranger", SWARM, site="a")  # same swarm and site name
    stranger = Identity.load(issue_identity(stranger_ca, "pa", "peer"))
    state = _state(pki)
    outcome = commit(state, tx_record(stranger, "register", NOW, contract=DEFAULT_CONTRACT,
                                      payload=REGISTER))  # fmt: skip
    assert outcome["status"] == "rejected"
    assert "none of this swarm's site CAs" in outcome["reason"]


def test_admit_names_the_site_and_binds_the_name_to_it(pki: SitePki) -> None:
    state = _state(pki)
    admin = pki.ids["adm-a"]
    for payload, reason in (
        ({"name": "pc", "role": "peer"}, "must name the site"),
        ({"name": "pc", "role": "peer", "site": "z"}, "must name the site"),
    ):
        outcome = commit(state, tx_record(admin, "admit", NOW, payload=payload))
        assert outcome["status"] == "rejected" and reason in outcome["reason"]
    payload = {"name": "pc", "role": "peer", "site": "b"}
    admitted = commit(state, tx_record(admin, "admit", NOW, payload=payload))
    assert admitted["result"]["events"] == [
        {"kind": "admitted", "name": "pc", "role": "peer", "site": "b"}
    ]
    assert state.snapshot()["sites"]["pc"] == "b"
    with pytest.raises(NotPermitted, match="under site 'b'"):
        state.vouch(pki.forge("a", "pc", "peer").cert_pem.decode())
    assert state.vouch(pki.forge("b", "pc", "peer").cert_pem.decode()).name == "pc"
    commit(state, tx_record(admin, "revoke", NOW, payload={"name": "pc"}))
    assert "pc" not in state.snapshot()["sites"]


def test_admit_with_a_site_is_refused_by_a_single_ca_ledger(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", SWARM)
    node = Identity.load(issue_identity(ca, "ledger-1", "ledger"))
    admin = Identity.load(issue_identity(ca, "admin", "admin"))
    genesis = make_genesis(SWARM, (ca / "ca.crt").read_bytes(),
                           [("ledger-1", "ledger"), ("admin", "admin")])  # fmt: skip
    state = started(genesis, node, NOW)
    payload = {"name": "p", "role": "peer", "site": "a"}
    outcome = commit(state, tx_record(admin, "admit", NOW, payload=payload))
    assert outcome["status"] == "rejected" and "no sites" in outcome["reason"]


def test_replicas_of_a_multi_site_ledger_agree(pki: SitePki) -> None:
    one, two = LedgerState(pki.genesis), LedgerState(pki.genesis)
    records = [
        tick_record(pki.ids["ledger-1"], NOW),
        tx_record(pki.forge("b", "pa", "peer"), "register", NOW, contract=DEFAULT_CONTRACT,
                  payload=REGISTER),
        tx_record(pki.ids["pa"], "register", NOW, contract=DEFAULT_CONTRACT, payload=REGISTER),
        tx_record(pki.ids["adm-b"], "admit", NOW, payload={"name": "pd", "role": "peer",
                                                            "site": "a"}),
        tick_record(pki.ids["ledger-1"], NOW + 1),
    ]  # fmt: skip
    for record in records:
        assert one.commit(record) == two.commit(record)
    assert one.last_hash == two.last_hash and _view(one) == _view(two)


# --- trust bundles and signed heads -----------------------------------------------------------
def test_heads_signed_by_any_sites_ledger_node_check_against_the_bundle(pki: SitePki) -> None:
    bundle = pki.genesis["ca_cert"].encode()
    block = {"height": 3, "hash": "ab" * 32}
    head = sign_head(pki.ids["ledger-1"], SWARM, block)
    assert check_head(head, SWARM, bundle).name == "ledger-1"
    assert verify_in_bundle(pki.ids["pb"].cert_pem, bundle).name == "pb"
    with pytest.raises(PkiError):
        verify_in_bundle(pki.ids["pb"].cert_pem, pki.genesis["sites"]["a"]["ca_cert"].encode())


def test_cli_writes_a_multi_site_genesis_and_installs_the_bundle(tmp_path: Path) -> None:
    for site in ("a", "b"):
        assert run_cli("pki", "init", str(tmp_path / site), "--swarm", SWARM,
                       "--site", site).returncode == 0  # fmt: skip
    issue_identity(tmp_path / "a", "ledger-1", "ledger")
    issue_identity(tmp_path / "a", "ops-a", "admin")
    issue_identity(tmp_path / "b", "ops-b", "admin")
    out = tmp_path / "genesis.json"
    sites = ["--site", f"a={tmp_path / 'a'}", "--site", f"b={tmp_path / 'b'}"]
    done = run_cli("ledger", "genesis", *sites, "--admin-quorum", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "openswarm pki trust" in done.stdout and "2 admins" in done.stdout
    genesis = check_genesis(json.loads(out.read_text()))
    assert genesis["admin_quorum"] == 2
    assert {(e["name"], e["site"]) for e in genesis["admitted"]} == {
        ("ledger-1", "a"), ("ops-a", "a"), ("ops-b", "b")
    }  # fmt: skip
    folder = tmp_path / "a" / "identities" / "ledger-1"
    assert run_cli("pki", "trust", str(folder), "--genesis", str(out)).returncode == 0
    assert same_trust(Identity.load(folder).ca_cert_pem, genesis["ca_cert"].encode())
    too_many = run_cli("ledger", "genesis", "--site", f"a={tmp_path / 'a'}",
                       "--admin-quorum", "3", "--out", str(out))  # fmt: skip
    assert too_many.returncode == 1 and "only 1 admin(s)" in too_many.stderr
    bad = run_cli("ledger", "genesis", "--site", f"b={tmp_path / 'b'}",
                  "--admit", "ops-b:admin", "--out", str(out))  # fmt: skip
    assert bad.returncode == 1 and "NAME:ROLE@SITE" in bad.stderr


def test_install_trust_refuses_a_non_ca_certificate(pki: SitePki, tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="only CA certificates"):
        install_trust(tmp_path, pki.ids["pa"].cert_pem)
