"""Admin contexts (openswarm.admin.contexts, `openswarm context …`): stored, checked, and
used by admin commands against a real ledger replica in place of --connect/--identity."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import run_cli, running_ledger

from openswarm.admin import Admin, AdminError, ContextError, ContextStore, resolve
from openswarm.ledger.local import LocalLedger
from openswarm.node.peer import SwarmPeer
from openswarm.node.settings import NetworkConfig, SwarmSettings
from openswarm.pki.ca import init_ca, issue_identity


@pytest.fixture
def contexts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A contexts file of this test's own (also for the CLI processes it starts)."""
    path = tmp_path / "config" / "contexts.yaml"
    monkeypatch.setenv("OPENSWARM_CONTEXTS", str(path))
    monkeypatch.delenv("OPENSWARM_IDENTITY", raising=False)
    return path


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    ca = init_ca(tmp_path / "pki", "clinic")
    issue_identity(ca, "ops", "admin")
    issue_identity(ca, "site-a", "peer")
    return ca / "identities"


def test_contexts_are_kept_chosen_and_forgotten(contexts: Path, pki: Path) -> None:
    store = ContextStore()
    first = store.add("prod", "10.0.0.1:7100, 10.0.0.2:7100", pki / "ops")
    assert first.ledger == ("10.0.0.1:7100", "10.0.0.2:7100") and first.identity.is_absolute()
    assert store.current == "prod"  # the first one added
    store.add("lab", "127.0.0.1:7100", pki / "ops")
    assert store.current == "prod" and store.names() == ["lab", "prod"]
    assert store.use("lab").name == "lab" and ContextStore(contexts).current == "lab"
    assert resolve(None, None) == (("127.0.0.1:7100",), pki.joinpath("ops").resolve())
    # what a command is given wins over the context, one part at a time
    assert resolve("10.9.9.9:1", None) == (("10.9.9.9:1",), pki.joinpath("ops").resolve())
    assert resolve("10.9.9.9:1", pki / "site-a") == (("10.9.9.9:1",), pki / "site-a")
    assert resolve(None, None, "prod")[0] == ("10.0.0.1:7100", "10.0.0.2:7100")
    # $OPENSWARM_IDENTITY (a site's own) comes before the context's admin identity
    os.environ["OPENSWARM_IDENTITY"] = str(pki / "site-a")
    try:
        assert resolve(None, None) == (("127.0.0.1:7100",), pki / "site-a")
    finally:
        del os.environ["OPENSWARM_IDENTITY"]
    assert oct(contexts.stat().st_mode & 0o777) == "0o600"  # readable by its owner only
    store.remove("lab")
    assert store.current is None and store.names() == ["prod"]
    with pytest.raises(ContextError, match="no context is chosen: add one with"):
        resolve(None, None)


@pytest.mark.parametrize(
    ("ledger", "identity", "match"),
    [
        ("10.0.0.1", "ops", "is not HOST:PORT"),
        ("10.0.0.1:99999", "ops", "is not HOST:PORT"),
        ("", "ops", "one node at least"),
        ("10.0.0.1:7100", "site-a", "holds a peer identity .* --role admin"),
        ("10.0.0.1:7100", "nowhere", "identity folder .*nowhere"),
    ],
)
def test_a_context_that_cannot_work_is_refused(contexts: Path, pki: Path, ledger: str,
                                               identity: str, match: str) -> None:  # fmt: skip
    with pytest.raises(ContextError, match=match):
        ContextStore().add("prod", ledger, pki / identity)
    assert not contexts.exists()  # nothing half-written


def test_unknown_names_and_a_foreign_file_are_named(contexts: Path, pki: Path) -> None:
    ContextStore().add("prod", "10.0.0.1:7100", pki / "ops")
    with pytest.raises(ContextError, match=r"no context named 'dev' .*known: prod"):
        ContextStore().use("dev")
    with pytest.raises(ContextError, match="context name"):
        ContextStore().add("-bad name", "10.0.0.1:7100", pki / "ops")
    contexts.write_text("- just a list\n")
    with pytest.raises(ContextError, match="is not one openswarm wrote"):
        ContextStore().names()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[LocalLedger]:
    yield from running_ledger(tmp_path / "net", replicas=1, peers=["site-a"])


def _ok(*args: str) -> str:
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_admin_commands_use_the_current_context(contexts: Path, ledger: LocalLedger) -> None:
    endpoints = ",".join(ledger.endpoints)
    admin = str(ledger.identity_dir("admin"))
    out = _ok("context", "add", "local", "--ledger", endpoints, "--identity", admin)
    assert "context local (current)" in out and str(contexts) in out
    assert _ok("context", "list").split() == ["*", "local"]
    assert endpoints in _ok("context", "show")
    # no --connect, no --identity: the context's
    assert "swarm" in _ok("ledger", "status")
    created = _ok("ledger", "contract-create", "trial", "--settings", '{"min_peers": 3}')
    assert "trial" in created
    assert "admin quorum 1" in _ok("ledger", "proposals")
    assert "trial" in _ok("status", "--contract", "trial", "--json")
    blocks = _ok("ledger", "show", "--json")
    assert "contract_create" in blocks
    refused = run_cli("ledger", "status", "--context", "nope")
    assert refused.returncode == 1 and "no context named 'nope'" in refused.stderr
    _ok("context", "remove", "local")
    missing = run_cli("ledger", "status")
    assert missing.returncode == 1 and "openswarm context add" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_contracts_nodes_and_perf_through_a_context(contexts: Path, ledger: LocalLedger) -> None:
    _ok("context", "add", "local", "--ledger", ",".join(ledger.endpoints),
        "--identity", str(ledger.identity_dir("admin")))  # fmt: skip
    assert "trial" in _ok("contract", "create", "trial", "--settings",
                          '{"min_peers": 3, "merge_topology": "sharded"}')  # fmt: skip
    bad = run_cli("contract", "create", "odd", "--settings", '{"merge_method": "krum", '
                  '"merge_topology": "sharded"}')  # fmt: skip
    assert bad.returncode == 1 and "stays with merge_topology leader" in bad.stderr
    network = NetworkConfig(ledger=tuple(ledger.endpoints), identity=ledger.identity_dir("site-a"))
    peer = SwarmPeer(SwarmSettings(contract="trial", min_peers=3), network)
    try:
        peer.register()
        listed = _ok("contract", "list")
        assert "trial: round 1 (0 merged), 1/1 members active" in listed
        assert "mean, sharded, min_peers 3, audit 0" in listed
        shown = _ok("contract", "show", "trial")
        assert '"merge_topology": "sharded"' in shown and "member    site-a" in shown
        assert "present" in shown
        nodes = _ok("nodes")
        assert "ledger node" in nodes and "height" in nodes
        assert "admins" in nodes and "peers        site-a" in nodes
        assert "peer         site-a (trial)" in nodes and "present" in nodes
        assert "contract trial: round 1" in _ok("perf", "trial")
        missing = run_cli("contract", "show", "nope")
        assert missing.returncode == 1 and "no training contract named 'nope'" in missing.stderr
    finally:
        peer.close()


def test_the_python_api_drives_the_same_flow(contexts: Path, ledger: LocalLedger) -> None:
    ContextStore().add("local", ",".join(ledger.endpoints), ledger.identity_dir("admin"))
    with Admin() as admin:  # the current context
        admin.create_contract("study", min_peers=3, merge_method="coordmedian")
        with pytest.raises(AdminError, match="coordinate-wise merge method"):
            admin.create_contract("odd", merge_method="krum", merge_topology="sharded")
        [row] = admin.contracts()
        assert (row["contract"], row["merge_method"], row["min_peers"]) == (
            "study",
            "coordmedian",
            3,
        )
        network = NetworkConfig(ledger=tuple(ledger.endpoints),
                                identity=ledger.identity_dir("site-a"))  # fmt: skip
        peer = SwarmPeer(SwarmSettings(contract="study", min_peers=3,
                                       merge_method="coordmedian"), network)  # fmt: skip
        try:
            peer.register()
            peer.report_metrics(1, loss=0.5, metric=0.8, epoch=1, total_epochs=4)
            state = admin.contract("study")
            assert state is not None and list(state["members"]) == ["site-a"]
            seen = admin.nodes()
            assert [m["name"] for m in seen["members"]["study"]] == ["site-a"]
            assert seen["members"]["study"][0]["present"] and seen["identities"]["peer"]
            assert all("height" in n for n in seen["nodes"].values())
            perf = admin.perf("study")
            assert perf["site-a"]["loss"] == 0.5 and perf["site-a"]["epoch"] == 1
        finally:
            peer.close()
        assert admin.contract("nope") is None
        with pytest.raises(AdminError, match="no training contract named 'nope'"):
            admin.perf("nope")
    with pytest.raises(AdminError, match="no context named 'other'"):
        Admin("other")
