"""Growth and recovery of an etcd-backed ledger: archive, catch-up, backup and restore."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from harness import run_cli

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.ledger.etcd_client import EtcdClient, KeyValue, WatchEvent, prefix_end
from openswarm.ledger.etcd_orderer import EtcdOrderer, record_key
from openswarm.ledger.local import LocalLedger, ReplicaProcess
from openswarm.ledger.store import read_chain
from openswarm.ledger.verify import verify_chain_dir
from openswarm.pki import Identity, init_ca, issue_identity

C = DEFAULT_CONTRACT


def _submit(net: LocalLedger, count: int, start: int = 0) -> None:
    with net.client("p1") as client:
        if start == 0:
            payload = {"endpoint": "127.0.0.1:9"}
            client.submit("register", contract=C, payload=payload).raise_for_status()
        for epoch in range(start, start + count):
            payload = {"loss": 1.0, "metric": 0.5, "epoch": epoch, "total_epochs": 10_000}
            client.submit("metrics", contract=C, round=1, payload=payload).raise_for_status()


def _log_keys(net: LocalLedger, upto: int = 0) -> int:
    """How many ledger records etcd holds (only those ordered at or before `upto`)."""
    member = yaml_member(net.replicas[0])
    etcd = EtcdClient([member["client_url"]], net.identity("ledger-1"))
    try:
        prefix = b"/openswarm/local/log/"
        if not upto:
            return etcd.count(prefix, prefix_end(prefix))
        return len(etcd.range(prefix, end=prefix_end(prefix), max_mod_revision=upto,
                              keys_only=True))  # fmt: skip
    finally:
        etcd.close()


def yaml_member(replica: ReplicaProcess) -> dict:
    import yaml

    return yaml.safe_load(replica.config_path.read_text())["etcd"]["member"]


def _same_chain(net: LocalLedger, replica: ReplicaProcess, height: int) -> None:
    deadline = time.monotonic() + 60
    reference = read_chain(net.replicas[0].data_dir)
    while time.monotonic() < deadline:
        chain = read_chain(replica.data_dir)
        if len(chain) > height and len(reference) > height:
            break
        time.sleep(0.1)
        reference = read_chain(net.replicas[0].data_dir)
    assert read_chain(replica.data_dir)[: height + 1] == reference[: height + 1]
    assert verify_chain_dir(replica.data_dir, require_head=False).ok


def _height(net: LocalLedger, replica: ReplicaProcess) -> int:
    with LedgerClient([replica.grpc_address], net.identity("admin")) as client:
        return int(client.status()["height"])


def test_archive_then_a_new_node_catches_up_from_a_checkpoint(ledger3: LocalLedger) -> None:
    net = ledger3
    _submit(net, 40)
    before = _log_keys(net)
    admin = str(net.identity_dir("admin"))
    archived = run_cli("ledger", "archive", "--connect", ",".join(net.endpoints),
                       "--identity", admin)  # fmt: skip
    assert archived.returncode == 0, archived.stderr
    found = re.search(r"archived up to position (\d+): (\d+) records dropped", archived.stdout)
    assert found is not None, archived.stdout
    upto, dropped = int(found[1]), int(found[2])
    assert dropped >= 41 and _log_keys(net, upto) == 0  # every archived record left etcd
    assert _log_keys(net) <= before - dropped + 10  # a few ticks and the archive itself
    _submit(net, 5, start=40)  # the ledger goes on; nothing was lost from any chain
    height = _height(net, net.replicas[0])
    for replica in net.replicas:
        _same_chain(net, replica, height)
        assert verify_chain_dir(replica.data_dir).ok

    # A new node cannot rebuild the chain from etcd alone any more: it says what to do…
    newcomer = net.new_replica()
    with net.client("admin") as client:
        client.submit("admit", payload={"name": newcomer.name, "role": "ledger"})
        client.add_replica(newcomer.peer_url)
    net.start(3)
    with LedgerClient([newcomer.grpc_address], net.identity("admin")) as client:
        deadline = time.monotonic() + 60
        while client.status()["halted"] is None:
            assert time.monotonic() < deadline, "a node missing archived records went on"
            time.sleep(0.1)
        assert "catch-up" in client.status()["halted"]
        with pytest.raises(LedgerError, match="halted"):
            client.submit("admit", payload={"name": "x", "role": "peer"})
    net.stop(3)
    # …and after catching up from another node's signed chain it follows etcd again.
    for name in ("chain.jsonl", "head.json"):
        (newcomer.data_dir / name).unlink(missing_ok=True)
    caught = run_cli("ledger", "catch-up", "--config", str(newcomer.config_path),
                     "--from", net.endpoints[0])  # fmt: skip
    assert caught.returncode == 0, caught.stderr
    net.start(3)
    _submit(net, 3, start=45)
    height = _height(net, net.replicas[0])
    _same_chain(net, newcomer, height)


def test_backup_and_restore_a_node(ledger3: LocalLedger, tmp_path: Path) -> None:
    net = ledger3
    _submit(net, 10)
    node = net.replicas[2]
    out = tmp_path / "backup"
    made = run_cli("ledger", "backup", "--config", str(node.config_path), "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert (out / "etcd.snapshot").stat().st_size > 0 and (out / "chain.jsonl").exists()
    net.stop(2)
    for name in ("chain.jsonl", "head.json"):
        (node.data_dir / name).unlink()  # the node's chain is lost; its etcd member is not
    refused = run_cli("ledger", "restore", "--from", str(tmp_path), "--config",
                      str(node.config_path))  # fmt: skip
    assert refused.returncode == 1 and "not an openswarm ledger backup" in refused.stderr
    restored = run_cli("ledger", "restore", "--from", str(out), "--config", str(node.config_path))
    assert restored.returncode == 0, restored.stderr
    net.start(2)
    _submit(net, 3, start=10)
    _same_chain(net, node, _height(net, net.replicas[0]))


def test_an_embedded_chain_moves_to_etcd(ledger1: LocalLedger, tmp_path: Path) -> None:
    net = ledger1
    _submit(net, 5)
    net.stop()
    exported = tmp_path / "export" / "chain.jsonl"
    exported.parent.mkdir()
    exported.write_bytes((net.replicas[0].data_dir / "chain.jsonl").read_bytes())
    original = read_chain(exported)
    # The same swarm, now on etcd: a fresh data folder and a config that imports the chain.
    net.backend = "etcd"
    net.replicas.clear()
    net.replica_settings["import_chain"] = str(exported)
    node = net.add_replica_config(1, [f"https://127.0.0.1:{net._port()}"])
    (node.config_path.parent / "ledger-1").rename(tmp_path / "old-data")
    net.start()
    _submit(net, 2, start=5)
    chain = read_chain(node.data_dir)
    assert chain[: len(original)] == original  # identical, block for block
    assert any("tx" in b and b["tx"]["payload"].get("epoch") == 6 for b in chain)
    assert verify_chain_dir(node.data_dir).ok
    with LedgerClient(net.endpoints, net.identity("admin")) as client:
        assert client.status()["ordering"]["kind"] == "etcd"


def _event(kind: str, key: bytes, value: bytes, revision: int, created: int = 0) -> WatchEvent:
    kv = KeyValue(key, value, created or revision, revision, 1 if kind == "PUT" else 0)
    prev = KeyValue(key, b"", created, created, 1) if kind == "DELETE" else None
    return WatchEvent(kind, kv, prev)


def test_an_archive_and_its_deletes_in_one_watch_answer(tmp_path: Path) -> None:
    # etcd may hand a node the archive transaction and the deletions it allows in one
    # answer: the node must apply the archive before it judges the deletes.
    init_ca(tmp_path / "pki", "local")
    issue_identity(tmp_path / "pki", "ledger-1", "ledger", hosts=["127.0.0.1"])
    client = EtcdClient(
        ["https://127.0.0.1:1"], Identity.load(tmp_path / "pki/identities/ledger-1")
    )
    orderer = EtcdOrderer(client, "/openswarm/local/")
    archive = b'{"archive-record": true}'
    key = record_key(orderer.prefix, archive)
    delivered: list[list[tuple[int, str]]] = []
    halted: list[str] = []

    def deliver(batch: list[tuple[int, str]]) -> None:
        delivered.append(batch)
        orderer.allow_archive(8)  # what applying the archive transaction does

    answer = [
        _event("PUT", key, archive, 9),
        _event("DELETE", orderer.log_prefix + b"a", b"", 10, created=4),
        _event("DELETE", orderer.log_prefix + b"b", b"", 10, created=5),
    ]
    assert orderer._consume(answer, deliver, halted.append) and not halted
    assert delivered == [[(9, archive.decode())]] and orderer.applied_revision == 10
    # a delete nothing allowed halts the node
    late = [_event("DELETE", orderer.log_prefix + b"c", b"", 11, created=9)]
    assert not orderer._consume(late, deliver, halted.append)
    assert halted and "was deleted from etcd" in halted[0]
    client.close()


def test_a_backup_of_a_running_node_ends_at_its_signed_head(
    ledger1: LocalLedger, tmp_path: Path
) -> None:
    from openswarm.ledger.catchup import backup, restore

    _submit(ledger1, 3)
    ledger1.stop()
    data = ledger1.replicas[0].data_dir
    chain = data / "chain.jsonl"
    # what a running node does while a backup copies: a block committed after the head
    last = json.loads(chain.read_bytes().splitlines()[-1])
    later = {**last, "height": last["height"] + 1, "hash": "f" * 64}
    chain.write_bytes(chain.read_bytes() + json.dumps(later).encode() + b"\n")
    manifest = backup(data, tmp_path / "backup")
    assert manifest["height"] == last["height"]
    restore(tmp_path / "backup", tmp_path / "restored")
    assert read_chain(tmp_path / "restored")[-1]["hash"] == manifest["hash"]
