"""Attacks on the ledger service by certificate holders, against real replica processes.

Forged transactions, oversized requests, stream and request floods, revoked callers, stale
transactions and truncated chains: each is refused or detected, and the ledger stays healthy.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from harness import run_cli, running_ledger

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.canonical import canonical_bytes
from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.ledger.head import check_head
from openswarm.ledger.local import LocalLedger
from openswarm.ledger.service import SERVICE
from openswarm.ledger.state import MAX_TX_SKEW_S, NONCE_WINDOW_S, LedgerState
from openswarm.ledger.ticks import make_tick
from openswarm.ledger.tx import Transaction, make_transaction
from openswarm.net import secure_channel
from openswarm.net.jsonrpc import decode_json, encode_json
from openswarm.pki import Identity, issue_identity

C = DEFAULT_CONTRACT
DIGEST = "ab" * 32
# An answer this fast is prompt: a starved service leaves the 5 s call deadline to run out.
PROMPT_S = 4.0


def _chain_size(net: LocalLedger) -> int:
    return (net.replicas[0].data_dir / "chain.jsonl").stat().st_size


def _open_stream(net: LocalLedger, name: str) -> Any:
    """A raw Stream call from `name`, started; returns (call, first block or RpcError)."""
    channel = secure_channel(net.endpoints[0], net.identity(name))
    call = channel.unary_stream(
        f"/{SERVICE}/Stream", request_serializer=encode_json, response_deserializer=decode_json
    )({"from": 0})
    try:
        return call, next(call)
    except grpc.RpcError as exc:
        return call, exc


def _timed_status(net: LocalLedger, name: str = "admin") -> float:
    started = time.monotonic()
    with LedgerClient(net.endpoints, net.identity(name), timeout_s=5) as client:
        assert client.status()["height"] >= 0
    return time.monotonic() - started


def test_forged_transactions_never_reach_the_chain(ledger1: LocalLedger) -> None:
    client = ledger1.client("p1")
    p1, admin = ledger1.identity("p1"), ledger1.identity("admin")
    good = make_transaction(p1, "ready", contract=C, round=1, payload={"digest": DIGEST})
    intruder = Identity.load(issue_identity(ledger1.pki_dir, "intruder", "peer"))
    attacks = [
        ("INVALID_ARGUMENT", "certificate refused", {**good.to_dict(), "cert": "x" * 200_000}),
        ("INVALID_ARGUMENT", "bad signature", {**good.to_dict(), "payload": {"digest": "cd"}}),
        ("PERMISSION_DENIED", "not admitted",
         make_transaction(intruder, "finished", contract=C).to_dict()),
        ("PERMISSION_DENIED", "needs role 'admin'",
         make_transaction(p1, "admit", payload={"name": "x", "role": "peer"}).to_dict()),
        ("PERMISSION_DENIED", "needs role 'peer'",
         make_transaction(admin, "finished", contract=C).to_dict()),
    ]  # fmt: skip
    height, size = client.status()["height"], _chain_size(ledger1)
    for code, reason, tx in attacks:
        with pytest.raises(LedgerError, match=code) as caught:
            client.submit_tx(Transaction.from_dict(tx))
        assert reason in str(caught.value)
    assert client.status()["height"] == height
    assert _chain_size(ledger1) == size


def test_an_oversized_request_is_refused_before_parsing(ledger1: LocalLedger) -> None:
    channel = secure_channel(ledger1.endpoints[0], ledger1.identity("p1"))
    submit = channel.unary_unary(f"/{SERVICE}/Submit")
    body = b'{"tx":"' + b"a" * (8 * 1024 * 1024) + b'"}'
    with pytest.raises(grpc.RpcError) as caught:
        submit(body, timeout=10)
    assert caught.value.code() in (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    channel.close()
    assert ledger1.replicas[0].running
    assert _timed_status(ledger1, "p1") < PROMPT_S


def test_a_stream_flood_leaves_room_for_admins(ledger1: LocalLedger) -> None:
    calls = [_open_stream(ledger1, "p1") for _ in range(16)]
    try:
        opened = [first for _, first in calls if isinstance(first, dict)]
        refused = [first for _, first in calls if isinstance(first, grpc.RpcError)]
        assert len(opened) == 2 and len(refused) == 14
        assert all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for e in refused)
        assert "open streams" in (refused[0].details() or "")
        assert _timed_status(ledger1) < PROMPT_S
    finally:
        for call, _ in calls:
            call.cancel()


@pytest.fixture
def ledger_many(tmp_path: Path) -> Iterator[LocalLedger]:
    """One replica with 14 peers: together they can try to take every worker thread."""
    yield from running_ledger(tmp_path / "net", peers=[f"p{i}" for i in range(1, 15)])


def test_many_peers_cannot_take_the_admins_workers(ledger_many: LocalLedger) -> None:
    calls = [_open_stream(ledger_many, f"p{i}") for i in range(1, 15) for _ in range(3)]
    try:
        refused = [first for _, first in calls if isinstance(first, grpc.RpcError)]
        assert len(refused) == 14  # two streams each (every peer watches its contract)
        assert all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for e in refused)
        # 28 open streams hold worker threads of their own: admins and peers' calls go on
        assert all(_timed_status(ledger_many) < PROMPT_S for _ in range(5))
        assert _timed_status(ledger_many, "p1") < PROMPT_S
    finally:
        for call, _ in calls:
            call.cancel()


def test_a_revoked_identity_is_refused_and_its_stream_ends(ledger1: LocalLedger) -> None:
    call, first = _open_stream(ledger1, "p1")
    assert isinstance(first, dict)
    ended: list[grpc.RpcError] = []

    def drain() -> None:
        try:
            for _ in call:
                pass
        except grpc.RpcError as exc:
            ended.append(exc)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    with ledger1.client("admin") as admin:
        admin.submit("revoke", payload={"name": "p1"}).raise_for_status()
    reader.join(10)
    assert ended and ended[0].code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(LedgerError, match=r"PERMISSION_DENIED.*revoked"):
        ledger1.client("p1").status()
    assert ledger1.client("p2").status()["height"] >= 1


@pytest.fixture
def ledger_slow_rate(tmp_path: Path) -> Iterator[LocalLedger]:
    """One replica allowing each identity 20 calls/s (burst 20): a loaded machine's client
    outruns that, as it might not outrun the default 100/s."""
    limits = {"rate_per_s": 20, "rate_burst": 20}
    yield from running_ledger(tmp_path / "net", peers=["p1", "p2"], replica_settings=limits)


def test_a_flooding_identity_is_rate_limited_alone(ledger_slow_rate: LocalLedger) -> None:
    ledger1 = ledger_slow_rate
    channel = secure_channel(ledger1.endpoints[0], ledger1.identity("p1"))
    status = channel.unary_unary(
        f"/{SERVICE}/Status", request_serializer=encode_json, response_deserializer=decode_json
    )
    tripped: grpc.RpcError | None = None
    deadline = time.monotonic() + 30
    while tripped is None and time.monotonic() < deadline:
        try:
            status({}, timeout=5)
        except grpc.RpcError as exc:
            tripped = exc
    channel.close()
    assert tripped is not None and tripped.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "requests/s" in (tripped.details() or "")
    assert _timed_status(ledger1, "p2") < PROMPT_S


def _nonce_tx(peer: Identity, timestamp: float) -> str:
    payload = {"loss": 1.0, "metric": None, "epoch": 1, "total_epochs": 2}
    tx = make_transaction(peer, "metrics", contract=C, round=1, payload=payload,
                          timestamp=timestamp)  # fmt: skip
    return tx.to_json()


def _tick(node: Identity, swarm: str, when: float) -> str:
    return canonical_bytes({"tick": make_tick(node, swarm, when)}).decode("utf-8")


def test_nonces_live_only_within_the_window(ledger1: LocalLedger) -> None:
    # The state machine every node runs, fed records as the orderer feeds them: ledger time
    # comes from the ledger node's ticks, so the window is crossed without waiting 15 min.
    genesis = json.loads(ledger1.genesis_path.read_text())
    state, p1 = LedgerState(genesis), ledger1.identity("p1")
    node = ledger1.identity("ledger-1")
    start = time.time()
    state.commit(_tick(node, genesis["swarm"], start))
    first = _nonce_tx(p1, start)
    state.commit(first)
    for step in range(1, 301):
        state.commit(_tick(node, genesis["swarm"], start + 10 * step))
        last = _nonce_tx(p1, start + 10 * step)
        outcome = state.commit(last)["outcome"]
        assert "ledger time" not in (outcome["reason"] or "")
    assert state.nonce_count() <= NONCE_WINDOW_S / 10 + 1  # bounded, not 301
    assert len(state.tx_heights) <= (NONCE_WINDOW_S + MAX_TX_SKEW_S) / 10 + 2  # ids too
    replayed = state.commit(last)
    assert "replayed transaction" in replayed["outcome"]["reason"]
    stale = state.commit(first)  # its id is forgotten, its timestamp still refuses it
    assert stale["outcome"]["status"] == "rejected"
    assert "off ledger time" in stale["outcome"]["reason"]
    again = state.commit(_nonce_tx(p1, start))  # same time, new nonce: far behind ledger time
    assert "off ledger time" in again["outcome"]["reason"]


def test_a_sender_cannot_move_ledger_time(ledger1: LocalLedger) -> None:
    p1 = ledger1.identity("p1")
    with ledger1.client("p1") as client:
        for offset in (3600.0, 250.0, -250.0):
            tx = Transaction.from_json(_nonce_tx(p1, time.time() + offset))
            with pytest.raises(LedgerError, match="off ledger time"):
                client.submit_tx(tx)  # refused before ordering, with the reason
        honest = Transaction.from_json(_nonce_tx(p1, time.time() + 30))
        assert client.submit_tx(honest).status in ("applied", "rejected")  # ordered
        info = client.status()
    assert abs(info["ledger_time"] - time.time()) < 60  # no sender moved it


def test_verify_detects_truncation_and_reads_a_ledger_folder(
    ledger1: LocalLedger, tmp_path: Path
) -> None:
    with ledger1.client("p1") as client:
        for epoch in range(3):
            payload = {"loss": 1.0, "metric": None, "epoch": epoch, "total_epochs": 9}
            client.submit("metrics", contract=C, round=1, payload=payload)
        head = client.status()["head"]
    genesis = json.loads(ledger1.genesis_path.read_text())
    assert check_head(head, genesis["swarm"], genesis["ca_cert"].encode()).name == "ledger-1"
    ledger1.stop()
    ledger_dir = tmp_path / "ledger"
    shutil.copytree(ledger1.replicas[0].data_dir, ledger_dir / "ledger-1")
    chain = ledger_dir / "ledger-1" / "chain.jsonl"
    lines = chain.read_bytes().splitlines(keepends=True)
    last = len(lines) - 1  # the stopped node signed the head of its last block
    whole = run_cli("ledger", "verify", str(ledger_dir))
    assert whole.returncode == 0 and f"ledger-1: ok: {last + 1} blocks verified" in whole.stdout

    chain.write_bytes(b"".join(lines[:-2]))
    cut = run_cli("ledger", "verify", str(ledger_dir))
    assert cut.returncode == 1 and "Traceback" not in cut.stderr
    assert f"chain ends at block {last - 2} but the signed head of ledger-1 is at {last}" in (
        cut.stderr
    )

    (ledger_dir / "ledger-1" / "head.json").unlink()
    headless = run_cli("ledger", "verify", str(ledger_dir / "ledger-1"))
    assert headless.returncode == 1 and "truncation cannot be ruled out" in headless.stderr
    assert "--no-head" in headless.stderr
    assert run_cli("ledger", "verify", "--no-head", str(ledger_dir)).returncode == 0
    empty = run_cli("ledger", "verify", str(tmp_path / "ledger" / "ledger-1" / "nothing"))
    assert empty.returncode == 1 and "Traceback" not in empty.stderr
