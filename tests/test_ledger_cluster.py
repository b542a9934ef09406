"""Replicated ledgers as real processes: ordering, crashes, catch-up, quorum, membership."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from harness import run_cli

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.client import LedgerClient, NoQuorumError
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
            client.call("Blocks", {"from": 0})  # reachable
            # the replica may still be applying the last entries: wait for the height
            for _ in range(200):
                blocks = client.blocks(0)
                if len(blocks) > height:
                    break
                threading.Event().wait(0.05)
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


def test_single_replica_commits_in_order(ledger1: LocalLedger) -> None:
    _submit_concurrently(ledger1, per_peer=5)
    with ledger1.client("admin") as client:
        height = client.status()["height"]
        blocks = client.blocks(1)
    assert height == 3 * 6
    assert [b["height"] for b in blocks] == list(range(1, height + 1))
    assert all(b["outcome"]["status"] == "applied" for b in blocks)
    _assert_identical_and_valid(ledger1, height)


def test_three_replicas_same_order_everywhere(ledger3: LocalLedger) -> None:
    _submit_concurrently(ledger3, per_peer=5)
    height = 3 * 6
    _assert_identical_and_valid(ledger3, height)
    senders = {b["tx"]["sender"] for b in _chains_of(ledger3, height)[0][1:]}
    assert senders == {"p1", "p2", "p3"}


def test_crash_restart_catch_up_and_quorum(ledger3: LocalLedger) -> None:
    net = ledger3
    client = net.client("p1")
    client.submit("register", contract=C, payload={"endpoint": "127.0.0.1:9"}).raise_for_status()

    net.kill(2)  # one of three down: a majority remains
    for epoch in range(5):
        _metrics(client, epoch)

    net.start(2)  # comes back: catches up from the others
    net.wait_ready()
    _metrics(client, 99)
    _assert_identical_and_valid(net, 7)

    net.kill(1)
    net.kill(2)  # two of three down: nothing can commit, and the client says so
    with pytest.raises(NoQuorumError, match="no quorum"):
        _metrics(client, 100)

    net.start(1)  # a majority again
    net.wait_ready()
    _metrics(client, 101)
    height = client.status()["height"]
    net.start(2)
    net.wait_ready()
    _assert_identical_and_valid(net, height)
    # the refused submission was not silently applied twice
    epochs = [b["tx"]["payload"]["epoch"] for b in client.blocks(1) if b["tx"]["type"] == "metrics"]
    assert epochs.count(101) == 1 and epochs.count(100) <= 1


def test_add_and_remove_a_replica(ledger3: LocalLedger) -> None:
    net = ledger3
    client = net.client("p1")
    client.submit("register", contract=C, payload={"endpoint": "127.0.0.1:9"}).raise_for_status()
    _metrics(client, 0)
    newcomer = net.new_replica()
    with net.client("admin") as admin:  # add first, then start: no stray elections
        admin.add_replica(newcomer.raft_address)
    net.start(3)
    _metrics(client, 1)
    _assert_identical_and_valid(net, 3)
    with net.client("admin") as admin:
        status = admin.status()
        assert newcomer.raft_address in status["replicas"]
        admin.remove_replica(net.replicas[0].raft_address)
    net.stop(0)
    _metrics(client, 2)
    _assert_identical_and_valid(net, 4)


def test_stream_delivers_new_blocks(ledger1: LocalLedger) -> None:
    client = ledger1.client("p1")
    client.submit("register", contract=C, payload={"endpoint": "127.0.0.1:9"}).raise_for_status()
    seen: list[int] = []
    stream = ledger1.client("p2").stream(start=0)

    def consume() -> None:
        for block in stream:
            seen.append(block["height"])
            if block["height"] >= 3:
                stream.cancel()  # type: ignore[attr-defined]
                return

    reader = threading.Thread(target=consume)
    reader.start()
    _metrics(client, 0)
    _metrics(client, 1)
    reader.join(30)
    assert seen == [0, 1, 2, 3]


def test_cli_status_show_and_verify_detects_tampering(ledger1: LocalLedger, tmp_path: Path):
    client = ledger1.client("p1")
    client.submit("register", contract=C, payload={"endpoint": "127.0.0.1:9"}).raise_for_status()
    for epoch in range(3):
        _metrics(client, epoch)
    admin = str(ledger1.pki_dir / "identities" / "admin")
    endpoint = ledger1.endpoints[0]

    status = run_cli("ledger", "status", "--connect", endpoint, "--identity", admin)
    assert status.returncode == 0, status.stderr
    assert "height      4" in status.stdout and "raft leader 127.0.0.1" in status.stdout
    shown = run_cli("ledger", "show", "--connect", endpoint, "--identity", admin)
    assert shown.returncode == 0 and "register" in shown.stdout and "metrics" in shown.stdout

    copy = tmp_path / "copy"
    shutil.copytree(ledger1.replicas[0].data_dir, copy)
    ok = run_cli("ledger", "verify", str(copy))
    assert ok.returncode == 0 and "5 blocks verified" in ok.stdout, ok.stderr

    chain = copy / "chain.jsonl"
    lines = chain.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b'"epoch":1', b'"epoch":7')  # one byte of block 3
    chain.write_bytes(b"\n".join(lines))
    bad = run_cli("ledger", "verify", str(copy))
    assert bad.returncode != 0
    assert "block 3" in bad.stderr and "Traceback" not in bad.stderr
