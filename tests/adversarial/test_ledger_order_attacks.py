"""Attacks on the ledger's ordering layer (etcd), its clocks and its files, on real processes.

A ledger node whose clock runs an hour ahead, an etcd-level attacker who rewrites or deletes
an ordered record, a node started with another genesis, an altered chain file, junk on every
ledger port, a certificate without the ledger role on etcd's peer port, and pickle anywhere
in the ledger path: each is refused or detected, and the honest nodes stay healthy.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import http.client
import json
import re
import socket
import ssl
import struct
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import yaml

import openswarm
from openswarm.ledger.canonical import canonical_bytes
from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.ledger.etcd_client import EtcdClient
from openswarm.ledger.etcd_orderer import record_key
from openswarm.ledger.local import LocalLedger
from openswarm.ledger.service import SERVICE
from openswarm.ledger.state import LedgerState
from openswarm.ledger.ticks import make_tick
from openswarm.ledger.tx import Transaction, make_transaction
from openswarm.net import secure_channel
from openswarm.net.jsonrpc import decode_json, encode_json
from openswarm.pki import Identity, init_ca, issue_identity
from openswarm.pki.ca import IDENTITY_CERT, IDENTITY_KEY

PEERS = ("p1", "p2", "p3")
HOUR = 3600.0
T = TypeVar("T")


# --- helpers ----------------------------------------------------------------------------------
def _poll(what: str, probe: Callable[[], T | None], timeout_s: float = 30.0) -> T:
    """The first truthy answer of `probe`, polled until the deadline (then the test fails)."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = probe()
        if answer:
            return answer
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def _cluster(root: Path) -> Iterator[LocalLedger]:
    """Three etcd-backed ledger nodes; killed at the end (a clean stop of an etcd leader
    waits seconds for a leadership transfer, and nothing here is kept)."""
    net = LocalLedger.create(root, replicas=3, peers=PEERS, contract_settings={})
    try:
        net.start()
        net.wait_ready()
        yield net
    finally:
        for index in range(len(net.replicas)):
            net.kill(index)
        net.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalLedger]:
    """A ledger of three nodes for a test that breaks it."""
    yield from _cluster(tmp_path / "net")


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLedger]:
    """A ledger of three nodes shared by the tests that leave it working."""
    yield from _cluster(tmp_path_factory.mktemp("order") / "net")


def _member(net: LocalLedger, index: int) -> dict[str, Any]:
    config = yaml.safe_load(net.replicas[index].config_path.read_text())
    return config["etcd"]["member"]


def _etcd(net: LocalLedger, index: int = 0) -> EtcdClient:
    """etcd's client port of node `index`, as the hostile (or faulty) ledger node ledger-3."""
    return EtcdClient([_member(net, index)["client_url"]], net.identity("ledger-3"))


def _prefix(net: LocalLedger) -> bytes:
    return f"/openswarm/{net.swarm}/".encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _status(net: LocalLedger, index: int) -> dict[str, Any]:
    with LedgerClient([net.endpoints[index]], net.identity("admin"), timeout_s=5) as client:
        return client.status()


def _submit_raw(net: LocalLedger, index: int, tx: Transaction) -> grpc.RpcError | dict:
    """Submit `tx` to node `index` alone: its answer, or the error it was refused with."""
    channel = secure_channel(net.endpoints[index], net.identity(tx.sender))
    try:
        submit = channel.unary_unary(
            f"/{SERVICE}/Submit", request_serializer=encode_json, response_deserializer=decode_json
        )
        return submit({"tx": tx.to_dict()}, timeout=10)
    except grpc.RpcError as exc:
        return exc
    finally:
        channel.close()


def _admit(admin: Identity, name: str, **tx: Any) -> Transaction:
    return make_transaction(admin, "admit", payload={"name": name, "role": "peer"}, **tx)


def _log_tail(net: LocalLedger, index: int) -> str:
    replica = net.replicas[index]
    assert replica.log_path is not None
    return replica.log_path.read_bytes()[replica.log_offset :].decode(errors="replace")


def _tick_record(node: Identity, swarm: str, when: float) -> bytes:
    return canonical_bytes({"tick": make_tick(node, swarm, when)})


# --- 1. a node's clock an hour ahead --------------------------------------------------------
def test_ticks_an_hour_ahead_do_not_move_ledger_time(shared_cluster: LocalLedger) -> None:
    net = shared_cluster
    node3, prefix = net.identity("ledger-3"), _prefix(net)
    ahead = time.time() + HOUR
    with contextlib.closing(_etcd(net)) as etcd:
        for step in range(3):
            record = _tick_record(node3, net.swarm, round(ahead + step, 3))
            created, _ = etcd.put_once(record_key(prefix, record), record)
            assert created
    for index in range(3):
        ticks = _poll(
            f"ledger-3's tick on node {index + 1}",
            lambda i=index: (s := _status(net, i))["ticks"].get("ledger-3", 0) >= ahead and s,
        )
        assert abs(ticks["ledger_time"] - time.time()) < 60, ticks
    admin = net.identity("admin")
    for index in range(3):
        late = _submit_raw(net, index, _admit(admin, f"late{index}", timestamp=time.time() + HOUR))
        assert isinstance(late, grpc.RpcError), late
        assert late.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "off ledger time" in (late.details() or "")
        honest = _submit_raw(net, index, _admit(admin, f"honest{index}"))
        assert isinstance(honest, dict) and honest["status"] == "applied", honest


@pytest.fixture(scope="module")
def three_ledger_nodes(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[Identity]]:
    """A genesis admitting ledger-1..3 and an admin, and their identities (nothing runs)."""
    from openswarm.ledger.genesis import make_genesis

    pki = tmp_path_factory.mktemp("pki")
    init_ca(pki, "local")
    roles = [("ledger-1", "ledger"), ("ledger-2", "ledger"), ("ledger-3", "ledger")]
    roles.append(("admin", "admin"))
    identities = [Identity.load(issue_identity(pki, name, role)) for name, role in roles]
    genesis = make_genesis("local", (pki / "ca.crt").read_bytes(), roles)
    return genesis, identities


def test_ledger_time_is_what_a_majority_of_nodes_reached(
    three_ledger_nodes: tuple[dict, list[Identity]],
) -> None:
    genesis, (one, two, three, admin) = three_ledger_nodes
    now = round(time.time(), 3)

    def tick(state: LedgerState, node: Identity, when: float) -> dict[str, Any]:
        return state.commit(_tick_record(node, "local", when).decode())["outcome"]

    fast = LedgerState(genesis)
    assert tick(fast, one, now)["status"] == "applied" and not fast.time_established
    tick(fast, two, now)
    assert fast.ledger_time == now
    assert tick(fast, three, now + HOUR)["status"] == "applied"
    assert fast.ledger_time == now  # a node an hour ahead moves nothing
    back = tick(fast, three, now - HOUR)
    assert back["status"] == "rejected" and "not after its last one" in back["reason"]
    assert fast.ledger_time == now

    slow = LedgerState(genesis)
    tick(slow, one, now)
    tick(slow, two, now)
    assert tick(slow, three, now - HOUR)["status"] == "applied"
    assert slow.ledger_time == now  # nor can one an hour behind pull it back
    tick(slow, one, now + 5)
    assert slow.ledger_time == now  # one node alone is no majority
    tick(slow, two, now + 4)
    assert slow.ledger_time == now + 4  # nor hold it back once a majority moved on
    # A fourth node makes the slow one part of every majority: ledger time still stays.
    grow = make_transaction(admin, "admit", payload={"name": "ledger-4", "role": "ledger"})
    assert slow.commit(grow.to_json())["outcome"]["status"] == "applied"
    assert slow.ledger_time == now + 4


# --- 2./3. an etcd-level attacker rewrites or deletes a record -----------------------------
def _assert_halted(net: LocalLedger, reason: str, revision: int, tx_id: str) -> None:
    """Every node halted for `reason`, applied nothing from `revision` on, refuses writes."""
    admin = net.identity("admin")
    for index in range(3):
        status = _poll(
            f"node {index + 1} to halt",
            lambda i=index: (s := _status(net, i))["halted"] is not None and s,
        )
        assert re.search(reason, status["halted"]), status["halted"]
        assert status["has_quorum"] is False
        assert status["position"] < revision  # nothing from the attack on was applied
        with (
            LedgerClient([net.endpoints[index]], admin, timeout_s=5) as client,
            pytest.raises(LedgerError, match="NOT_FOUND"),
        ):
            client.tx(tx_id)  # put into etcd after the attack: never applied
        assert net.replicas[index].running  # halted, not crashed: it still answers
    for index in range(3):  # and a submitter learns why it cannot write
        refused = _submit_raw(net, index, _admit(admin, f"after{index}"))
        assert isinstance(refused, grpc.RpcError), refused
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        details = refused.details() or ""
        assert "halted" in details and re.search(reason, details), details


def _ordered_tx(net: LocalLedger) -> tuple[Transaction, bytes]:
    """An applied transaction and its key in etcd."""
    tx = _admit(net.identity("admin"), "victim")
    with net.client("admin") as client:
        client.submit_tx(tx).raise_for_status()
    return tx, record_key(_prefix(net), tx.to_json().encode())


@pytest.mark.parametrize(
    ("content", "reason"),
    [("other", "rewritten|does not match"), ("same", "rewritten")],
    ids=["other-bytes", "same-bytes"],
)
def test_a_rewritten_record_halts_every_node(
    cluster: LocalLedger, content: str, reason: str
) -> None:
    net = cluster
    tx, key = _ordered_tx(net)
    forged = make_transaction(
        net.identity("admin"), "admit", payload={"name": "mallory", "role": "admin"}
    )
    # Other bytes: a validly signed record in another's place. The same bytes: the record
    # would be delivered (and applied) a second time.
    value = (forged if content == "other" else tx).to_json().encode()
    with contextlib.closing(_etcd(net)) as etcd:
        assert etcd.get(key) is not None
        answer = etcd.call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})
        revision = int(answer["header"]["revision"])
        later = _admit(net.identity("admin"), "later")
        etcd.put_once(record_key(_prefix(net), later.to_json().encode()), later.to_json().encode())
    _assert_halted(net, reason, revision, later.tx_id)
    with net.client("admin") as client:
        assert "mallory" not in client.state()["admitted"]


def test_a_record_under_a_forged_key_halts_every_node(cluster: LocalLedger) -> None:
    net = cluster
    _ordered_tx(net)
    forged = _admit(net.identity("admin"), "mallory")
    with contextlib.closing(_etcd(net)) as etcd:  # a first write, but its key names other content
        _, revision = etcd.put_once(
            record_key(_prefix(net), b"something else"), forged.to_json().encode()
        )
    _assert_halted(net, "does not match its content", revision, forged.tx_id)
    with net.client("admin") as client:
        admitted = client.state()["admitted"]
    assert "victim" in admitted and "mallory" not in admitted  # what came before stays


def test_a_deleted_record_halts_every_node(cluster: LocalLedger) -> None:
    net = cluster
    _, key = _ordered_tx(net)
    with contextlib.closing(_etcd(net)) as etcd:
        answer = etcd.call("/v3/kv/deleterange", {"key": _b64(key)})
        assert int(answer.get("deleted", 0)) == 1
        revision = int(answer["header"]["revision"])
        later = _admit(net.identity("admin"), "later")
        etcd.put_once(record_key(_prefix(net), later.to_json().encode()), later.to_json().encode())
    _assert_halted(net, "deleted", revision, later.tx_id)


# --- 4./5. another genesis, an altered chain file --------------------------------------------
def test_a_node_with_another_genesis_refuses_to_serve(cluster: LocalLedger) -> None:
    net = cluster
    net.stop(2)
    replica = net.replicas[2]
    genesis = json.loads(net.genesis_path.read_text())
    genesis["contracts"]["other"] = {}
    altered = net.root / "genesis-altered.json"
    altered.write_text(json.dumps(genesis, indent=2, sort_keys=True))
    config = yaml.safe_load(replica.config_path.read_text())
    config["genesis"] = str(altered)
    config["etcd"]["member"]["data_dir"] = str(replica.data_dir / "etcd")  # same member
    config["data_dir"] = str(net.root / "ledger-3-fresh")
    replica.config_path.write_text(yaml.safe_dump(config))
    with pytest.raises(LedgerError, match="refusing to serve"):
        net.start(2)
    assert replica.process is not None and replica.process.wait(10) != 0
    log = _log_tail(net, 2)
    assert "refusing to serve" in log and "Traceback" not in log
    assert "serving on" not in log
    for index in (0, 1):  # the others serve on
        assert _status(net, index)["halted"] is None
    with net.client("admin") as client:
        client.submit_tx(_admit(net.identity("admin"), "still")).raise_for_status()


def test_an_altered_chain_file_is_refused_at_start(ledger1: LocalLedger) -> None:
    with ledger1.client("admin") as client:
        for name in ("alpha", "bravo", "charlie"):
            client.submit("admit", payload={"name": name, "role": "peer"}).raise_for_status()
    ledger1.stop()
    chain = ledger1.replicas[0].data_dir / "chain.jsonl"
    data = chain.read_bytes()
    at = data.index(b'"payload":{"name":"bravo"')  # the signed transaction, not its outcome
    assert data.count(b'"payload":{"name":"bravo"') == 1
    chain.write_bytes(data[:at] + data[at:].replace(b'"bravo"', b'"bravO"', 1))
    with pytest.raises(LedgerError, match="altered"):
        ledger1.start()
    assert ledger1.replicas[0].process is not None
    assert ledger1.replicas[0].process.wait(10) != 0
    log = _log_tail(ledger1, 0)
    assert "altered" in log and "Traceback" not in log


# --- 6./7. junk on every port, the wrong certificate on etcd's peer port --------------------
def _junk(kind: int) -> bytes:
    return [
        b"",  # says nothing: holds a handshake open
        b"\x16\x03\x01\xff\xff" + bytes(range(256)) * 4,  # a TLS record far over the limit
        b"\xff\xff\xff\xff" + b"\x00" * 1024,  # a 4 GiB length prefix
        b"\x00\x7f\xff\xff\xff" + b"junk" * 256,  # a 2 GiB message, gRPC style, in cleartext
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\x00\x00\x00\x00\x00\x00",  # cleartext h2
        b"POST /raft HTTP/1.1\r\nContent-Length: 1000000000000\r\n\r\n" + b"x" * 4096,
    ][kind % 6]


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    header = struct.pack(">I", len(payload))[1:] + bytes([kind, flags])
    return header + struct.pack(">I", stream) + payload


def _literal(name: str, value: str) -> bytes:  # HPACK: literal, not indexed, short strings
    return b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


def _huge_grpc_message(address: str, identity_dir: Path, ca_pem: bytes) -> ssl.SSLSocket:
    """An authenticated HTTP/2 connection whose Submit says a 2 GiB message follows, then
    sends the first 16000 bytes of it."""
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    context.load_cert_chain(identity_dir / IDENTITY_CERT, identity_dir / IDENTITY_KEY)
    context.set_alpn_protocols(["h2"])
    host, port = address.rsplit(":", 1)
    sock = context.wrap_socket(socket.create_connection((host, int(port)), timeout=10),
                               server_hostname=host)  # fmt: skip
    headers = b"".join(
        _literal(name, value)
        for name, value in (
            (":method", "POST"), (":scheme", "https"), (":path", f"/{SERVICE}/Submit"),
            (":authority", host), ("content-type", "application/grpc"), ("te", "trailers"),
        )
    )  # fmt: skip
    message = b"\x00" + struct.pack(">I", 0x7FFFFFFF) + b"x" * 16000
    sock.sendall(
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + _h2_frame(4, 0, 0, b"")  # SETTINGS
        + _h2_frame(1, 4, 1, headers)  # HEADERS, END_HEADERS
        + _h2_frame(0, 0, 1, message)  # DATA, the stream left open
    )
    return sock


def _stream_end(sock: ssl.SSLSocket, timeout_s: float = 10.0) -> bytes:
    """The frame that ended stream 1 (RST_STREAM, or trailers); fails if none comes."""
    sock.settimeout(timeout_s)
    buffer = b""
    while True:
        while len(buffer) >= 9:
            length, kind, flags = int.from_bytes(buffer[:3], "big"), buffer[3], buffer[4]
            stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            if len(buffer) < 9 + length:
                break
            frame, buffer = buffer[: 9 + length], buffer[9 + length :]
            if stream == 1 and (kind == 3 or (kind == 1 and flags & 1)):
                return frame
        data = sock.recv(65536)  # socket.timeout (an OSError) fails the test
        assert data, "the server closed the connection without ending the stream"
        buffer += data


def test_junk_connections_to_every_port_do_not_stop_commits(
    shared_cluster: LocalLedger,
) -> None:
    net = shared_cluster
    targets = []
    for index, replica in enumerate(net.replicas):
        for url in (replica.peer_url, _member(net, index)["client_url"]):
            host, port = url.removeprefix("https://").rsplit(":", 1)
            targets.append((host, int(port)))
        host, port = replica.grpc_address.rsplit(":", 1)
        targets.append((host, int(port)))
    ca_pem = (net.pki_dir / "ca.crt").read_bytes()
    sockets: list[socket.socket] = []
    try:
        for address in targets:
            for kind in range(20):
                sock = socket.create_connection(address, timeout=5)
                sockets.append(sock)
                with contextlib.suppress(OSError):  # a server may hang up at once: fine
                    sock.sendall(_junk(kind))
        huge = [
            _huge_grpc_message(replica.grpc_address, net.identity_dir(peer), ca_pem)
            for replica in net.replicas
            for peer in PEERS
        ]
        sockets.extend(huge)
        admin = net.identity("admin")
        deadline = time.monotonic() + 60
        with net.client("admin", timeout_s=10) as client:
            outcomes = [client.submit_tx(_admit(admin, f"busy{i}")) for i in range(20)]
        assert time.monotonic() < deadline
        assert all(o.applied for o in outcomes)
        heights = [_status(net, index)["height"] for index in range(3)]
        assert min(heights) >= max(o.height for o in outcomes)
        assert all(replica.running for replica in net.replicas)
        for sock in huge:  # refused from its length prefix, not buffered up to 2 GiB
            end = _stream_end(sock)
            assert end[3] == 3 or b"grpc-status" not in end or b"grpc-status\x018" in end, end
    finally:
        for sock in sockets:
            sock.close()


def _peer_get(url: str, identity_dir: Path, ca_pem: bytes, path: str = "/members") -> Any:
    """GET `path` on an etcd peer URL presenting the identity in `identity_dir`: the HTTP
    status, or the exception the connection failed with."""
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    context.load_cert_chain(identity_dir / IDENTITY_CERT, identity_dir / IDENTITY_KEY)
    host, port = url.removeprefix("https://").rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        return exc
    finally:
        conn.close()


def test_etcd_peer_port_takes_only_ledger_certificates(
    shared_cluster: LocalLedger, tmp_path: Path
) -> None:
    net = shared_cluster
    ca_pem = (net.pki_dir / "ca.crt").read_bytes()
    other = tmp_path / "other-ca"
    init_ca(other, net.swarm)  # same swarm name, another CA
    outsider = issue_identity(other, "ledger-1", "ledger", hosts=["localhost", "127.0.0.1"])
    for replica in net.replicas:
        assert _peer_get(replica.peer_url, net.identity_dir("ledger-1"), ca_pem) == 200
        for who, folder in (
            ("p1", net.identity_dir("p1")),
            ("admin", net.identity_dir("admin")),
            ("ledger-1 of another CA", outsider),
        ):
            answer = _peer_get(replica.peer_url, folder, ca_pem)
            # etcd refuses the handshake (bad certificate); an HTTP refusal would do too
            assert isinstance(answer, Exception) or answer >= 400, (who, answer)
    assert all(_status(net, index)["halted"] is None for index in range(3))


# --- 8. nothing pickled ---------------------------------------------------------------------
UNPICKLERS = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "shelve", "pysyncobj"}


def _imports(tree: ast.AST) -> Iterator[str]:
    """Every module `tree` imports, statically or by name (importlib, __import__)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = ast.unparse(node.func)
            if called in ("__import__", "importlib.import_module", "import_module"):
                yield str(node.args[0].value)


def test_no_pickle_in_the_ledger_path() -> None:
    package = Path(openswarm.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for name in _imports(ast.parse(text, filename=str(path))):
            if name.split(".")[0] in UNPICKLERS:
                found.append(f"{path.relative_to(package)} imports {name}")
        if "pysyncobj" in text.lower():
            found.append(f"{path.relative_to(package)} mentions pysyncobj")
    assert not found, found
    project = tomllib.loads((package.parent / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        wanted.extend(extra)
    names = {re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0].lower() for spec in wanted}
    assert names and not names & {n.lower() for n in UNPICKLERS}, sorted(names)
