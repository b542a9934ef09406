"""Model exchange against hostile peers: real mTLS gRPC servers on loopback, real identities.

A fetch stops at max_bytes, when the server goes silent and at its deadline; a server asks
its authorize hook and serves each caller at most MAX_FETCHES_PER_CALLER fetches at once.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest

from openswarm.codec import digest_encoded, encode
from openswarm.net import make_server
from openswarm.node.exchange import (
    CHUNK_BYTES,
    MAX_CHUNK_BYTES,
    MAX_FETCHES_PER_CALLER,
    SERVICE,
    Authorize,
    ExchangeClient,
    ExchangeError,
    ExchangeServer,
)
from openswarm.pki import CertIdentity, Identity, init_ca, issue_identity

LOOPBACK = "127.0.0.1:0"
DATA = encode({"w": np.arange(3 * CHUNK_BYTES // 4 + 17, dtype=np.float32)})  # > 3 chunks
DIGEST = digest_encoded(DATA)
GENEROUS_S = 30.0
"""An upper bound on wall time that only a hang would reach."""


@dataclass(frozen=True)
class Swarm:
    server: Identity
    alice: Identity
    bob: Identity


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Swarm:
    ca = init_ca(tmp_path_factory.mktemp("exchange") / "ca", "demo")

    def peer(name: str) -> Identity:
        return Identity.load(issue_identity(ca, name, "peer"))

    return Swarm(server=peer("server"), alice=peer("alice"), bob=peer("bob"))


@pytest.fixture
def alice(swarm: Swarm) -> Iterator[ExchangeClient]:
    client = ExchangeClient(swarm.alice)
    yield client
    client.close()


@dataclass
class Hostile:
    """A real Fetch server whose answers come from `behaviour(self)`."""

    behaviour: Callable[[Hostile], Iterator[bytes]]
    sent: int = 0
    ended: threading.Event = field(default_factory=threading.Event)
    quit: threading.Event = field(default_factory=threading.Event)

    def fetch(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        context.add_callback(self.ended.set)
        for chunk in self.behaviour(self):
            self.sent += len(chunk)
            yield chunk


Behaviour = Callable[[Hostile], Iterator[bytes]]
StartHostile = Callable[[Behaviour], str]
StartServer = Callable[..., ExchangeServer]


@pytest.fixture
def hostile(swarm: Swarm) -> Iterator[StartHostile]:
    """Start hostile servers on loopback port 0; each call returns its endpoint."""
    started: list[tuple[grpc.Server, Hostile]] = []

    def start(behaviour: Behaviour) -> str:
        peer = Hostile(behaviour)
        method = grpc.unary_stream_rpc_method_handler(peer.fetch)
        handler = grpc.method_handlers_generic_handler(SERVICE, {"Fetch": method})
        server, port = make_server(swarm.server, LOOPBACK, [handler], max_workers=4)
        server.start()
        started.append((server, peer))
        return f"127.0.0.1:{port}"

    yield start
    for server, peer in started:
        peer.quit.set()
        server.stop(None)


def _fetch(client: ExchangeClient, endpoint: str, **limits: float) -> bytes:
    limits = {"max_bytes": len(DATA), "deadline_s": GENEROUS_S, "idle_s": GENEROUS_S} | limits
    return client.fetch(endpoint, "local", 4, DIGEST, **limits)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the fetching side


def test_a_flood_is_cut_off_just_past_max_bytes(
    alice: ExchangeClient, hostile: StartHostile
) -> None:
    flood = hostile(lambda peer: (b"\x00" * CHUNK_BYTES for _ in range(1_000)))  # 1 GiB
    max_bytes = 3 * CHUNK_BYTES + 5
    with pytest.raises(ExchangeError, match=rf"{flood}: .* more than the {max_bytes} ") as info:
        _fetch(alice, flood, max_bytes=max_bytes)
    match = re.search(r"sent (\d+) bytes", str(info.value))
    assert match is not None, info.value
    assert max_bytes < int(match.group(1)) <= max_bytes + CHUNK_BYTES


def test_the_flooding_server_is_stopped_not_drained(swarm: Swarm, hostile: StartHostile) -> None:
    peers: list[Hostile] = []

    def flood(peer: Hostile) -> Iterator[bytes]:
        peers.append(peer)
        yield from (b"\x00" * CHUNK_BYTES for _ in range(1_000))

    endpoint = hostile(flood)
    client = ExchangeClient(swarm.alice)
    try:
        with pytest.raises(ExchangeError, match="more than"):
            _fetch(client, endpoint, max_bytes=2 * CHUNK_BYTES)
    finally:
        client.close()
    assert peers[0].ended.wait(GENEROUS_S)
    assert peers[0].sent < 100 * CHUNK_BYTES  # flow control held it to a few MiB, not 1 GiB


def test_one_oversized_message_is_refused_by_the_channel(
    alice: ExchangeClient, hostile: StartHostile
) -> None:
    endpoint = hostile(lambda peer: iter([b"\x00" * (2 * MAX_CHUNK_BYTES)]))
    with pytest.raises(ExchangeError, match="RESOURCE_EXHAUSTED"):
        _fetch(alice, endpoint, max_bytes=CHUNK_BYTES)


@pytest.mark.parametrize("chunks_first", [0, 1])
def test_a_silent_server_is_given_up_after_idle_s(
    alice: ExchangeClient, hostile: StartHostile, chunks_first: int
) -> None:
    def silent(peer: Hostile) -> Iterator[bytes]:
        yield from [DATA[:100]] * chunks_first
        peer.quit.wait(GENEROUS_S * 2)

    endpoint = hostile(silent)
    start = time.monotonic()
    with pytest.raises(ExchangeError, match=rf"{endpoint}: the peer went silent for 0.5 s"):
        _fetch(alice, endpoint, idle_s=0.5, deadline_s=GENEROUS_S * 2)
    assert time.monotonic() - start < GENEROUS_S


def test_a_trickle_ends_at_the_deadline(alice: ExchangeClient, hostile: StartHostile) -> None:
    def trickle(peer: Hostile) -> Iterator[bytes]:
        while not peer.quit.wait(0.05):  # one byte every 50 ms: never idle, never done
            yield b"\x00"

    endpoint = hostile(trickle)
    start = time.monotonic()
    with pytest.raises(ExchangeError, match="not done within the 1 s deadline"):
        _fetch(alice, endpoint, deadline_s=1.0, idle_s=2.0)
    assert time.monotonic() - start < GENEROUS_S


def test_a_short_answer_fails_the_digest_check(
    alice: ExchangeClient, hostile: StartHostile
) -> None:
    endpoint = hostile(lambda peer: iter([DATA[:-1]]))
    with pytest.raises(ExchangeError, match="malformed local model: truncated"):
        _fetch(alice, endpoint)


@pytest.mark.parametrize(
    ("limits", "pattern"),
    [
        ({"max_bytes": 0}, "max_bytes must be a positive int"),
        ({"deadline_s": -1.0}, "no time left"),
        ({"idle_s": 0.0}, "idle_s must be positive"),
    ],
)
def test_unusable_limits_are_refused_before_dialling(
    alice: ExchangeClient, limits: dict[str, float], pattern: str
) -> None:
    with pytest.raises(ExchangeError, match=pattern):
        _fetch(alice, "127.0.0.1:1", **limits)


# ---------------------------------------------------------------- the serving side


@pytest.fixture
def serve(swarm: Swarm) -> Iterator[StartServer]:
    servers: list[ExchangeServer] = []

    def start(authorize: Authorize | None = None) -> ExchangeServer:
        server = ExchangeServer(swarm.server, LOOPBACK, authorize=authorize)
        server.store.publish("local", 4, DIGEST, DATA)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_an_allowed_fetch_returns_the_snapshot(alice: ExchangeClient, serve: StartServer) -> None:
    asked: list[tuple[CertIdentity, str, int]] = []
    server = serve(lambda caller, kind, round, chunks: asked.append((caller, kind, round)))
    assert _fetch(alice, server.endpoint) == DATA
    [(caller, kind, round)] = asked
    assert (caller.name, caller.role, kind, round) == ("alice", "peer", "local", 4)


def test_a_snapshot_larger_than_recorded_is_cut_off(
    alice: ExchangeClient, serve: StartServer
) -> None:
    server = serve()
    with pytest.raises(ExchangeError, match=f"more than the {len(DATA) - 1} expected"):
        _fetch(alice, server.endpoint, max_bytes=len(DATA) - 1)


def test_the_authorize_hook_can_refuse(alice: ExchangeClient, serve: StartServer) -> None:
    server = serve(lambda caller, kind, round, chunks: f"{caller.name} did not lead round {round}")
    with pytest.raises(ExchangeError, match="PERMISSION_DENIED: alice did not lead round 4"):
        _fetch(alice, server.endpoint)


def test_a_third_concurrent_fetch_by_one_caller_is_refused(
    swarm: Swarm, serve: StartServer
) -> None:
    entered, release = threading.Semaphore(0), threading.Event()

    def hold(caller: CertIdentity, kind: str, round: int, chunks: object) -> None:
        entered.release()
        release.wait(GENEROUS_S)

    server = serve(hold)
    alice, bob = ExchangeClient(swarm.alice), ExchangeClient(swarm.bob)
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            held = [pool.submit(_fetch, alice, server.endpoint) for _ in range(2)]
            held.append(pool.submit(_fetch, bob, server.endpoint))  # others are not affected
            for _ in held:
                assert entered.acquire(timeout=GENEROUS_S)
            limit = MAX_FETCHES_PER_CALLER
            with pytest.raises(ExchangeError, match=f"RESOURCE_EXHAUSTED: .*alice.* {limit} "):
                _fetch(alice, server.endpoint)
            release.set()
            assert [future.result(GENEROUS_S) for future in held] == [DATA] * 3
        assert _fetch(alice, server.endpoint) == DATA  # the slots were given back
    finally:
        release.set()
        alice.close()
        bob.close()
