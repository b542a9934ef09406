"""Model exchange between peers: safetensors bytes streamed over mutual-TLS gRPC.

Each peer serves the snapshots it has published (its local parameters for a round, and the
merged parameters when it led one). Fetchers name the digest they expect and check it on
arrival, so a peer can never be handed other parameters than the ledger recorded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from openswarm.codec import CodecError, digest_encoded
from openswarm.net import FAST_RECONNECT, make_server, require_role, secure_channel
from openswarm.pki import Identity

SERVICE = "openswarm.node.Exchange"
CHUNK_BYTES = 1 << 20
KINDS = ("local", "merged")
_KEEP_ROUNDS = 3


class ExchangeError(RuntimeError):
    """A snapshot could not be fetched, or arrived other than the ledger recorded."""


@dataclass(frozen=True)
class Snapshot:
    kind: str
    round: int
    digest: str
    data: bytes


class SnapshotStore:
    """What this peer serves: a few recent snapshots, keyed by (kind, round)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, int], Snapshot] = {}

    def publish(self, kind: str, round: int, digest: str, data: bytes) -> None:
        with self._lock:
            self._items[(kind, round)] = Snapshot(kind, round, digest, data)
            newest = max(r for _, r in self._items)
            for key in [k for k in self._items if k[1] < newest - _KEEP_ROUNDS]:
                del self._items[key]

    def find(self, kind: str, round: int, digest: str) -> Snapshot | None:
        with self._lock:
            found = self._items.get((kind, round))
            if found is None:  # the merged model of an older round is asked for by digest
                found = next(
                    (s for s in self._items.values() if s.kind == kind and s.digest == digest),
                    None,
                )
        return found if found is not None and found.digest == digest else None


class ExchangeServer:
    """gRPC server of one peer's snapshots; only peers of the same swarm may fetch."""

    def __init__(self, identity: Identity, listen: str) -> None:
        self.store = SnapshotStore()
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Fetch": grpc.unary_stream_rpc_method_handler(
                    self._fetch, request_deserializer=None, response_serializer=None
                )
            },
        )
        self.server, self.port = make_server(identity, listen, [handler], max_workers=8)
        self.host = listen.rpartition(":")[0]
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def _fetch(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        require_role(context, "peer")
        try:
            asked = json.loads(request)
            kind, round, digest = asked["kind"], int(asked["round"]), str(asked["digest"])
        except (ValueError, KeyError, TypeError):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "ask for {kind, round, digest}")
        snapshot = self.store.find(kind, round, digest)
        if snapshot is None:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"no {kind} snapshot of round {round} with that digest"
            )
        view = memoryview(snapshot.data)
        for start in range(0, len(view), CHUNK_BYTES):
            yield bytes(view[start : start + CHUNK_BYTES])

    def stop(self) -> None:
        self.server.stop(0.5).wait()


class ExchangeClient:
    """Fetches snapshots from other peers, keeping one channel per endpoint."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def fetch(
        self, endpoint: str, kind: str, round: int, digest: str, *, timeout_s: float = 120.0
    ) -> bytes:
        """The snapshot's bytes, checked against `digest`; ExchangeError otherwise."""
        with self._lock:
            channel = self._channels.get(endpoint)
            if channel is None:
                channel = secure_channel(endpoint, self.identity, options=FAST_RECONNECT)
                self._channels[endpoint] = channel
        call = channel.unary_stream(
            f"/{SERVICE}/Fetch", request_serializer=None, response_deserializer=None
        )
        request = json.dumps({"kind": kind, "round": round, "digest": digest}).encode()
        buffer = bytearray()
        try:
            for chunk in call(request, timeout=timeout_s):
                buffer += chunk
        except grpc.RpcError as exc:
            raise ExchangeError(
                f"fetching the {kind} model of round {round} from {endpoint} failed: "
                f"{exc.code().name}: {exc.details()}"
            ) from exc
        try:
            got = digest_encoded(buffer)
        except CodecError as exc:
            raise ExchangeError(f"{endpoint} sent a malformed {kind} model: {exc}") from exc
        if got != digest:
            raise ExchangeError(
                f"{endpoint} sent a {kind} model of round {round} whose digest {got[:12]}… "
                f"differs from the ledger's {digest[:12]}…"
            )
        return bytes(buffer)

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
