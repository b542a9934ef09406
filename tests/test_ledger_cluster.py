"""Ledger nodes as real processes on loopback: order, ticks, etcd membership, CLI, verify.

Crashes, quorum loss and partitions across separate hosts: test_ledger_hosts.py.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from harness import run_cli

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.client import LedgerClient
from openswarm.ledger.local import LocalLedger
from openswarm.ledger.store import read_chain
from openswarm.ledger.verify import verify_chain_dir

C = DEFAULT_CONTRACT


def _metrics(client: LedgerClient, epoch: int) -> None:
    payload = {"loss": 1.0 / (epoch + 1), "metric": 0.5, "epoch": epoch, "total_epochs": 1000}
    client.submit("metrics", contract=C, round=1, payload=payload).raise_for_status()


def _submit_concurrently(net: LocalLedger, per_peer: int) -> None:
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            with net.client(name) as client:
                client.submit(
                    "register", contract=C, payload={"endpoint": f"127.0.0.1:{len(name)}"}
                ).raise_for_status()
                for epoch in range(per_peer):
                    _metrics(client, epoch)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("p1", "p2", "p3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _chains_of(net: LocalLedger, height: int) -> list[list[dict]]:
    chains = []
    for replica in net.replicas:
        if not replica.running:
            continue
        with LedgerClient([replica.grpc_address], net.identity("admin")) as client:
            # the replica may still be applying the last entries: wait for the height
            deadline = time.monotonic() + 30
            blocks = client.blocks(0)
            while len(blocks) <= height and time.monotonic() < deadline:
                threading.Event().wait(0.05)
                blocks = client.blocks(0)
            chains.append(blocks[: height + 1])
    return chains


def _assert_identical_and_valid(net: LocalLedger, height: int) -> None:
    chains = _chains_of(net, height)
    assert all(len(c) == height + 1 for c in chains), [len(c) for c in chains]
    assert all(c == chains[0] for c in chains)
    for replica in net.replicas:
        if replica.running:
            stored = read_chain(replica.data_dir)[: height + 1]
            assert stored == chains[0]
            assert verify_chain_dir(replica.data_dir).ok


def _txs(blocks: list[dict]) -> list[dict]:
    return [b for b in blocks if "tx" in b]


def test_single_replica_commits_in_order(ledger1: LocalLedger) -> None:
    _submit_concurrently(ledger1, per_peer=5)
    with ledger1.client("admin") as client:
        height = client.status()["height"]
        blocks = client.blocks(1)
    assert [b["height"] for b in blocks] == list(range(1, height + 1))
    assert len(_txs(blocks)) == 3 * 6
    assert all(b["outcome"]["status"] == "applied" for b in blocks)
    ticks = [b for b in blocks if "tick" in b]
    assert ticks and {t["tick"]["node"] for t in ticks} == {"ledger-1"}
    _assert_identical_and_valid(ledger1, height)


def test_three_etcd_nodes_same_order_everywhere(ledger3: LocalLedger) -> None:
    _submit_concurrently(ledger3, per_peer=5)
    with ledger3.client("admin") as client:
        height = client.status()["height"]
    _assert_identical_and_valid(ledger3, height)
    txs = _txs(_chains_of(ledger3, height)[0])
    assert len(txs) == 3 * 6 and {b["tx"]["sender"] for b in txs} == {"p1", "p2", "p3"}
    admin = str(ledger3.identity_dir("admin"))
    shown = run_cli(
        "ledger", "status", "--connect", ",".join(ledger3.endpoints), "--identity", admin
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len([x for x in lines if x.startswith("node ")]) == 3, shown.stdout
    members = [x for x in lines if x.startswith("etcd member")]
    assert len(members) == 3 and sum("LEADER" in x for x in members) == 1, shown.stdout


def test_add_and_remove_a_replica(ledger3: LocalLedger) -> None:
    net = ledger3
    client = net.client("p1")
    client.submit("register", contract=C, payload={"endpoint": "127.0.0.1:9"}).raise_for_status()
    _metrics(client, 0)
    newcomer = net.new_replica()
    with net.client("admin") as admin:  # admit its identity and add its member, then start
        admin.submit("admit", payload={"name": newcomer.name, "role": "ledger"}).raise_for_status()
        admin.add_replica(newcomer.peer_url)
    net.start(3)
    _metrics(client, 1)
    with LedgerClient([newcomer.grpc_address], net.identity("admin")) as fresh:
        height = fresh.status()["height"]
    _assert_identical_and_valid(net, height)
    with net.client("admin") as admin:
        names = [m["name"] for m in admin.status()["ordering"]["members"]]
        assert sorted(names) == ["ledger-1", "ledger-2", "ledger-3", "ledger-4"]
    with LedgerClient([net.replicas[1].grpc_address], net.identity("admin")) as admin:
        admin.remove_replica("ledger-1")
    net.stop(0)
    client = LedgerClient(net.endpoints[1:], net.identity("p1"))
    _metrics(client, 2)
    height = client.status()["height"]
    _assert_identical_and_valid(net, height)
    members = client.status()["ordering"]["members"]
    assert sorted(m["name"] for m in members) == ["ledger-2", "ledger-3", "ledger-4"]


def test_stream_delivers_new_blocks(ledger1: LocalLedger) -> None:
    client = ledger1.client("p1")
    client.submit("register", contract=C, payload={"endpoint": "127.0.0.1:9"}).raise_for_status()
    seen: list[int] = []
    kept: list[dict] = []
    stream = ledger1.client("p2").stream(start=0)

    def consume() -> None:
        for block in stream:
            seen.append(block["height"])
            kept.append(block)
            if len([b for b in kept if "tx" in b]) >= 3:
                stream.cancel()  # type: ignore[attr-defined]
                return

    reader = threading.Thread(target=consume)
    reader.start()
    _metrics(client, 0)
    _metrics(client, 1)
    reader.join(30)
    assert seen[0] == 0 and seen == sorted(seen) == list(range(seen[-1] + 1))
    assert [b["tx"]["type"] for b in kept if "tx" in b] == ["register", "metrics", "metrics"]


def test_cli_status_show_and_verify_detects_tampering(ledger1: LocalLedger, tmp_path: Path):
    client = ledger1.client("p1")
    client.submit("register", contract=C, payload={"endpoint": "127.0.0.1:9"}).raise_for_status()
    for epoch in range(3):
        _metrics(client, epoch)
    admin = str(ledger1.pki_dir / "identities" / "admin")
    endpoint = ledger1.endpoints[0]

    status = run_cli("ledger", "status", "--connect", endpoint, "--identity", admin)
    assert status.returncode == 0, status.stderr
    assert "node         ledger-1 " in status.stdout and "NO QUORUM" not in status.stdout
    assert "ordering     embedded" in status.stdout
    shown = run_cli("ledger", "show", "--connect", endpoint, "--identity", admin)
    assert shown.returncode == 0 and "register" in shown.stdout and "metrics" in shown.stdout

    copy = tmp_path / "copy"
    shutil.copytree(ledger1.replicas[0].data_dir, copy)
    ok = run_cli("ledger", "verify", str(copy))
    assert ok.returncode == 0 and " blocks verified" in ok.stdout, ok.stderr

    chain = copy / "chain.jsonl"
    lines = chain.read_bytes().split(b"\n")
    index = next(i for i, line in enumerate(lines) if b'"epoch":1' in line)
    lines[index] = lines[index].replace(b'"epoch":1', b'"epoch":7')  # one byte of that block
    chain.write_bytes(b"\n".join(lines))
    bad = run_cli("ledger", "verify", str(copy))
    assert bad.returncode != 0
    assert f"block {index}" in bad.stderr and "Traceback" not in bad.stderr
