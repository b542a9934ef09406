"""Admin contexts (openswarm.admin.contexts, `openswarm context …`): stored, checked, and
used by admin commands against a real ledger replica in place of --connect/--identity."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import run_cli, running_ledger

from openswarm.admin import ContextError, ContextStore, resolve
from openswarm.ledger.local import LocalLedger
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
