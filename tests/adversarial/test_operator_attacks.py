"""Hostile operators, peers and uploads against a real ledger node (issue 14): a peer's
certificate acting as an operator, an operator taking another's peer or another's run,
bundle files uploaded or read by the wrong role, bytes that do not match their digest, and
names that try to leave the store."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from harness import running_ledger

from openswarm import DEFAULT_CONTRACT
from openswarm.admin.bundles import bundle_of, push_bundle
from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.ledger.local import LocalLedger
from openswarm.ledger.service import SERVICE
from openswarm.ledger.tasks import check_task
from openswarm.net import json_method_handlers, make_server
from openswarm.operator.spec import SpecError, agreed_spec
from openswarm.pki import Identity, issue_identity

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLedger]:
    yield from running_ledger(
        tmp_path_factory.mktemp("operator-attacks") / "net", replicas=1,
        peers=["site-a", "site-b"], contract_settings={},
        extra_identities=[("op-a", "operator"), ("op-b", "operator")],
    )  # fmt: skip


def _beat(client: LedgerClient, peer: str) -> str | None:
    """The ledger's reason for refusing the heartbeat (None: applied)."""
    return client.submit("operator_heartbeat", payload={"peer": peer, "heartbeat_s": 5}).reason


def test_a_peer_certificate_cannot_act_as_an_operator(net: LocalLedger, tmp_path: Path) -> None:
    with net.client("site-a") as peer, pytest.raises(LedgerError, match="needs role 'operator'"):
        peer.submit("operator_heartbeat", payload={"peer": "site-a"})
    with net.client("site-a") as peer, pytest.raises(LedgerError, match="needs role 'operator'"):
        peer.submit("task_report", payload={"task": "t", "run": 1, "state": "accepted"})
    config = tmp_path / "operator.yaml"
    (tmp_path / "work").mkdir()
    config.write_text(yaml.safe_dump({
        "ledger": net.endpoints, "identity": str(net.identity_dir("site-a")),
        "peer_identity": str(net.identity_dir("site-a")), "work_dir": str(tmp_path / "work"),
        "allow_admin_approved": True}))  # fmt: skip
    started = subprocess.run(
        [sys.executable, "-m", "openswarm.cli.main", "operator", "start", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode == 2, started.stderr
    assert "a peer's certificate cannot act as an operator" in started.stderr
    assert "Traceback" not in started.stderr


def test_an_operator_runs_as_its_own_peer_only(net: LocalLedger) -> None:
    with net.client("op-a") as op_a, net.client("op-b") as op_b:
        assert "not a peer admitted" in (_beat(op_a, "admin") or "")  # not a peer at all
        assert "not a peer admitted" in (_beat(op_a, "nobody") or "")
        assert _beat(op_a, "site-a") is None
        assert "is run by operator op-a already" in (_beat(op_b, "site-a") or "")
        assert _beat(op_b, "site-b") is None
        refused = op_a.submit("operator_heartbeat", payload={"peer": "site-a", "heartbeat_s": -1})
        assert "heartbeat_s" in (refused.reason or "")
        refused = op_a.submit("operator_heartbeat", payload={"peer": "site-a", "host": "a\nb"})
        assert "printable" in (refused.reason or "")
        refused = op_a.submit("operator_heartbeat", payload={"peer": "site-a", "extra": 1})
        assert "needs payload" in (refused.reason or "")


def _put(client: LedgerClient, data: bytes, digest: str | None = None, offset: int = 0,
         size: int | None = None) -> dict:  # fmt: skip
    return client.call("PutBlob", {
        "digest": digest or hashlib.sha256(data).hexdigest(), "offset": offset,
        "size": len(data) if size is None else size,
        "data": base64.b64encode(data).decode("ascii")})  # fmt: skip


def test_bundle_files_go_in_by_admins_and_out_to_operators_only(net: LocalLedger) -> None:
    data = b"print('hello from a bundle')\n"
    digest = hashlib.sha256(data).hexdigest()
    for name in ("site-a", "op-a"):
        with net.client(name) as other, pytest.raises(LedgerError, match="PERMISSION_DENIED"):
            _put(other, data)
    with net.client("admin") as admin:
        assert _put(admin, data) == {"done": True, "have": len(data)}
    with net.client("site-a") as peer, pytest.raises(LedgerError, match="PERMISSION_DENIED"):
        peer.call("GetBlob", {"digest": digest})
    with net.client("op-a") as operator:
        answer = operator.call("GetBlob", {"digest": digest})
        assert base64.b64decode(answer["data"]) == data and answer["size"] == len(data)
        with pytest.raises(LedgerError, match="NOT_FOUND"):
            operator.call("GetBlob", {"digest": "0" * 64})


def test_uploads_that_lie_store_nothing(net: LocalLedger) -> None:
    store = net.root / "ledger-1" / "blobs"
    data = b"x = 1\n" * 100
    with net.client("admin") as admin:
        with pytest.raises(LedgerError, match="hash to"):
            _put(admin, data, digest="ab" * 32)  # bytes that are not the named file
        assert not (store / ("ab" * 32)).exists()
        assert not list((store / "partial").iterdir())
        for digest in ("../../etc/passwd", "AB" * 32, "ab" * 31):
            with pytest.raises(LedgerError, match="64 lowercase hex"):
                _put(admin, data, digest=digest)
        with pytest.raises(LedgerError, match="start it at offset 0"):
            _put(admin, data, offset=10)  # no upload begun
        half = len(data) // 2
        digest = hashlib.sha256(data).hexdigest()
        _put(admin, data[:half], digest=digest, size=len(data))
        with pytest.raises(LedgerError, match=f"holds {half} bytes; send offset {half}"):
            _put(admin, data[half:], digest=digest, offset=half + 1, size=len(data))  # a gap
        with pytest.raises(LedgerError, match="with 10000 bytes is under way"):
            _put(admin, data[half:], digest=digest, offset=half, size=10000)  # another size
        with pytest.raises(LedgerError, match="past the file's"):
            _put(admin, data, size=10)
        with pytest.raises(LedgerError, match="size must be"):
            _put(admin, data, size=1 << 40)
        assert _put(admin, data[:half], digest=digest, size=len(data)) == {
            "done": False, "have": half}  # fmt: skip
        assert _put(admin, data[half:], digest=digest, offset=half, size=len(data))["done"]
    assert (store / digest).read_bytes() == data


def test_task_payloads_of_unforeseen_shapes_are_refused_not_fatal(net: LocalLedger) -> None:
    """Odd JSON where names belong (objects, lists) is refused; the ledger goes on (a
    state machine that raised instead would halt every replica on the same record)."""
    with net.client("admin") as admin:
        for payload in ({"task": {}, "target": {"all": True}}, {"task": ["x"]},
                        {"task": "t", "target": {"operators": [{}]}},
                        {"task": "t", "target": {"operators": [["op-a"]]}}):  # fmt: skip
            outcome = admin.submit("task_assign", payload=payload)
            assert not outcome.applied, payload
        with net.client("op-a") as operator:
            for payload in ({"peer": {}}, {"peer": ["site-a"]}, {"peer": "site-a", "host": {}}):
                assert not operator.submit("operator_heartbeat", payload=payload).applied
            odd = {"task": "t", "run": {}, "state": []}
            assert not operator.submit("task_report", payload=odd).applied
        assert admin.status()["halted"] is None
        assert admin.submit("task_reset", payload={"task": "nope"}).reason  # still answering


def test_begun_uploads_cannot_outgrow_the_store(tmp_path: Path) -> None:
    """Each upload reserves its declared size when it begins, so many begun (and never
    finished) uploads cannot fill a node's disk past its store; abandoned ones expire."""
    from openswarm.ledger.blobs import MAX_PARTIALS, BlobError, BlobStore

    store = BlobStore(tmp_path / "blobs", capacity=1 << 20)
    store.put("aa" * 32, 600_000, 0, b"x")
    with pytest.raises(BlobError, match="file store is full"):
        store.put("bb" * 32, 600_000, 0, b"x")  # 1.2 MB declared in all
    store.put("aa" * 32, 600_000, 0, b"y")  # restarting one's own upload frees its place
    roomy = BlobStore(tmp_path / "roomy", capacity=1 << 30)
    for index in range(MAX_PARTIALS):
        roomy.put(f"{index:064x}", 10, 0, b"x")
    with pytest.raises(BlobError, match="uploads are under way"):
        roomy.put("cc" * 32, 10, 0, b"x")
    for declared in roomy.partial.glob("*"):
        os.utime(declared, (1.0, 1.0))  # abandoned long ago
    roomy.put("cc" * 32, 10, 0, b"x")
    assert len(list(roomy.partial.glob("*.size"))) == 1


@pytest.fixture
def lying_node(net: LocalLedger, tmp_path: Path) -> Iterator[Any]:
    """Ledger nodes that answer `Tasks` with a definition of their own (each holds a genuine
    ledger certificate of the swarm's CA, as a compromised node would)."""
    servers: list[grpc.Server] = []

    def start(spec: dict[str, Any], name: str) -> str:
        identity = Identity.load(issue_identity(net.pki_dir, name, "ledger",
                                                hosts=["localhost", "127.0.0.1"]))  # fmt: skip
        answer = {"height": 1, "ledger_time": 1.0, "tasks": {}, "operators": {}, "spec": spec}
        handler = json_method_handlers(SERVICE, {"Tasks": lambda request, context: answer})
        server, port = make_server(identity, "127.0.0.1:0", [handler], max_workers=2)
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(None)


def test_an_operator_does_not_take_one_ledger_nodes_word_for_a_task(
    net: LocalLedger, tmp_path: Path, lying_node: Any
) -> None:
    program = tmp_path / "program"
    program.mkdir()
    (program / "train.py").write_text("print('vetted')\n")
    bundle = bundle_of(program)
    spec = {"name": "vetted", "contract": DEFAULT_CONTRACT, "bundle": bundle,
            "entrypoint": "train.py", "private_data": "mnist"}  # fmt: skip
    with net.client("admin") as admin:
        push_bundle(net.endpoints, admin.identity, program, bundle)
        assert admin.submit("task_create", payload={"task": spec}).applied
    changed = {**check_task(spec), "private_data": "patients", "args": ["--upload", "x"]}
    first = lying_node(changed, "ledger-evil-1")
    second = lying_node({**changed, "args": ["--other"]}, "ledger-evil-2")
    escaping = {**check_task(spec), "entrypoint": "../../../../usr/bin/env"}
    third = lying_node(escaping, "ledger-evil-3")
    for endpoints, match in (
        ([*net.endpoints, first], "disagree about its definition"),  # no majority
        ([*net.endpoints, first, second], "3 versions, 1 of 3"),
        ([third], "breaks the ledger's rules"),  # even a node alone must tell a lawful one
    ):
        with (LedgerClient(endpoints, net.identity("op-a")) as operator,
              pytest.raises(SpecError, match=match)):  # fmt: skip
            agreed_spec(operator, "vetted")
    with LedgerClient(net.endpoints, net.identity("op-a")) as operator:
        assert agreed_spec(operator, "vetted") == check_task(spec)
