"""Model exchange between peers: safetensors bytes streamed over mutual-TLS gRPC.

Each peer serves the snapshots it has published (its local parameters for a round, and the
merged parameters when it led one). Fetchers name the digest they expect and check it on
arrival, so a peer can never be handed other parameters than the ledger recorded. A fetcher
that knows the snapshot's chunk root (from `ready`) asks for its chunk digests first and
checks every chunk as it arrives (openswarm.node.receive), instead of the whole at the end.

Neither side trusts the other with its resources: a fetch stops at the size the ledger
recorded, when the server goes silent and at a deadline; a server asks an `authorize` hook
about every fetch and serves each caller at most MAX_FETCHES_PER_CALLER at a time. Where the
swarm trusts several site CAs, a `vouch` hook (the ledger: `node/vouch.py`) must also confirm
that the caller's certificate comes from its own site's CA, or the fetch is refused.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import grpc

from openswarm.codec import CodecError, digest_encoded, digest_file
from openswarm.codec.chunks import CHUNK_BYTES, chunk_count, leaves
from openswarm.net import (
    FAST_RECONNECT,
    caller_certificate,
    make_server,
    require_role,
    secure_channel,
)
from openswarm.node.memory import release_freed_memory
from openswarm.node.receive import ReceiveError, Receiver
from openswarm.pki import CertIdentity, Identity, PkiError, identity_host, split_bundle
from openswarm.protocol import MODEL_KINDS

SERVICE = "openswarm.node.Exchange"
KINDS = MODEL_KINDS
_WIRED_KEPT = 4  # compressed models a server keeps ready
MAX_FETCHES_PER_CALLER = 2
"""Fetches one caller (by SPIFFE id) may have in flight at one server; more are refused."""
MAX_CHUNK_BYTES = 4 * CHUNK_BYTES
"""Largest single message a fetcher accepts: how far one chunk can overshoot max_bytes."""
_KEEP_ROUNDS = 3
_TRIM_AFTER_BYTES = 8 << 20  # after a fetch this large, freed memory goes back to the system
_CLIENT_OPTIONS = (*FAST_RECONNECT, ("grpc.max_receive_message_length", MAX_CHUNK_BYTES))

Buffer = bytes | bytearray | memoryview
"""A model's bytes as held: received models are views of memory mapped for them."""
Authorize = Callable[[CertIdentity, str, int, tuple[int, int] | None], str | None]
"""authorize(caller, kind, round, chunks): None allows the fetch (of chunks [first, stop)
only, or of the whole model: None); a string is the reason to refuse."""
Vouch = Callable[[bytes], str | None]
"""vouch(caller's certificate PEM): None if its own site's CA issued it; else the reason."""


class ExchangeError(RuntimeError):
    """A snapshot could not be fetched, or arrived other than the ledger recorded."""


@dataclass
class Snapshot:
    kind: str
    round: int
    digest: str
    data: Buffer
    _leaves: bytes | None = field(default=None, repr=False)

    @property
    def leaves(self) -> bytes:
        """Its chunk digests (openswarm.codec.chunks), computed once."""
        if self._leaves is None:
            self._leaves = leaves(self.data)
        return self._leaves


class SnapshotStore:
    """What this peer serves: its snapshot of the newest round, the merged model of a few
    recent rounds (one per round), and, as a round's leader, the other participants'
    snapshots of the newest round it pulled ("mirror", for the round's auditors) and the
    shards of the newest round it merged ("shard")."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, int, str], Snapshot] = {}
        self.on_forget: list[Callable[[str, int], None]] = []  # e.g. copies made for the wire

    def publish(self, kind: str, round: int, digest: str, data: Buffer,
                leaves: bytes | None = None) -> None:  # fmt: skip
        """Serve `data` as `kind` of `round`; `leaves`, its chunk digests, if known."""
        with self._lock:
            if kind not in ("mirror", "shard"):  # several of those per round
                for key in [k for k in self._items if k[:2] == (kind, round)]:
                    del self._items[key]
            self._items[(kind, round, digest)] = Snapshot(kind, round, digest, data, leaves)
            newest = max(r for _, r, _ in self._items)
            # a local snapshot (and its mirror) is fetched only in its own round
            for key in [k for k in self._items if k[1] < newest - _KEEP_ROUNDS
                        or (k[0] in ("local", "mirror", "shard") and k[1] < newest)]:  # fmt: skip
                del self._items[key]

    def forget(self, kind: str, round: int) -> None:
        """Stop serving `kind` of `round` (e.g. a local snapshot once its round is over)."""
        with self._lock:
            for key in [k for k in self._items if k[:2] == (kind, round)]:
                del self._items[key]
        for listener in self.on_forget:
            listener(kind, round)

    def find(self, kind: str, round: int, digest: str) -> Snapshot | None:
        with self._lock:
            found = self._items.get((kind, round, digest))
            if found is None:  # the merged model of an older round is asked for by digest
                found = next(
                    (s for s in self._items.values() if s.kind == kind and s.digest == digest),
                    None,
                )
        return found


class _CallerSlots:
    """A per-caller count of fetches in flight, refused (never waited for) past the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._busy: dict[str, int] = {}

    def try_take(self, caller: str) -> bool:
        with self._lock:
            if self._busy.get(caller, 0) >= self.limit:
                return False
            self._busy[caller] = self._busy.get(caller, 0) + 1
            return True

    def give_back(self, caller: str) -> None:
        with self._lock:
            left = self._busy.pop(caller, 1) - 1
            if left > 0:
                self._busy[caller] = left


class ByteCount:
    """A running count of bytes moved, safe to add to from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0

    def add(self, count: int) -> None:
        with self._lock:
            self._total += count

    @property
    def total(self) -> int:
        return self._total


class ExchangeServer:
    """gRPC server of one peer's snapshots; only peers of the same swarm may fetch.

    `authorize(caller, kind, round, chunks)`, if given, is asked about every fetch after the role
    check: None allows it, a string refuses it with PERMISSION_DENIED and that reason.
    When `identity` trusts several site CAs, `vouch(certificate)` is asked first (without
    it, every fetch is refused: TLS alone cannot tell whose CA may vouch for a name).
    """

    def __init__(
        self,
        identity: Identity,
        listen: str,
        authorize: Authorize | None = None,
        vouch: Vouch | None = None,
    ) -> None:
        self.store = SnapshotStore()
        self.sent = ByteCount()  # bytes of models served to other peers
        # What goes over the wire for a model's bytes (the contract's compression), if not
        # the bytes themselves; the last few results are kept, as several fetch each model.
        self.compress: Callable[[bytes], bytes] | None = None
        self._wired: dict[tuple[str, int, str], bytes] = {}
        self._wired_lock = threading.Lock()
        self.store.on_forget.append(self._forget_wired)
        self._authorize = authorize
        self._vouch = vouch
        self._several_cas = len(split_bundle(identity.ca_cert_pem)) > 1
        self._slots = _CallerSlots(MAX_FETCHES_PER_CALLER)
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
        caller = require_role(context, "peer")
        # Taken before `authorize`, which may ask the ledger: the bound covers that work too.
        release = self._take_slot(caller.spiffe_id, context)
        try:
            yield from self._serve(caller, request, context)
        finally:  # before the final status goes out, so a caller's next fetch finds it free
            release()

    def _serve(
        self, caller: CertIdentity, request: bytes, context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        kind, round, digest, with_leaves, chunks = _parse_ask(request, context)
        reason = self._site_refusal(context)
        if reason is None and self._authorize is not None:
            reason = self._authorize(caller, kind, round, chunks)
        if reason is not None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
        snapshot = self.store.find(kind, round, digest)
        if snapshot is None:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"no {kind} snapshot of round {round} with that digest"
            )
        if with_leaves:
            yield snapshot.leaves
        if chunks is None:
            view = memoryview(self._on_wire(snapshot))
        else:  # a range of chunks goes as it is (a compressed stream cannot be cut)
            first, stop = chunks
            if not with_leaves or not 0 <= first <= stop <= chunk_count(len(snapshot.data)):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"chunks {first}-{stop} (with leaves) are not chunks of this "
                              f"{len(snapshot.data)}-byte snapshot")  # fmt: skip
            view = memoryview(snapshot.data)[first * CHUNK_BYTES : stop * CHUNK_BYTES]
        for start in range(0, len(view), CHUNK_BYTES):
            chunk = bytes(view[start : start + CHUNK_BYTES])
            yield chunk
            self.sent.add(len(chunk))

    def _on_wire(self, snapshot: Snapshot) -> bytes:
        """The bytes that go over the wire for `snapshot`."""
        compress = self.compress
        if compress is None:
            return snapshot.data
        key = (snapshot.kind, snapshot.round, snapshot.digest)
        with self._wired_lock:
            found = self._wired.get(key)
        if found is None:
            found = compress(snapshot.data)
            with self._wired_lock:
                self._wired[key] = found
                while len(self._wired) > _WIRED_KEPT:
                    del self._wired[next(iter(self._wired))]
        return found

    def _forget_wired(self, kind: str, round: int) -> None:
        with self._wired_lock:
            for key in [k for k in self._wired if k[:2] == (kind, round)]:
                del self._wired[key]

    def _site_refusal(self, context: grpc.ServicerContext) -> str | None:
        """With several site CAs: why the caller's certificate is not its own site's, if so."""
        if not self._several_cas:
            return None  # one CA: the TLS handshake checked the issuer
        if self._vouch is None:
            return (
                "this site trusts several site CAs but has no ledger to ask which of them may "
                "vouch for the caller; refusing (the exchange server needs a vouch hook)"
            )
        try:
            return self._vouch(caller_certificate(context))
        except PkiError as exc:
            return str(exc)

    def _take_slot(self, caller: str, context: grpc.ServicerContext) -> Callable[[], None]:
        """Take one of the caller's slots (or abort); returns its once-only release."""
        if not self._slots.try_take(caller):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{caller} already has {self._slots.limit} fetches in flight here",
            )
        once = threading.Lock()

        def release() -> None:
            if once.acquire(blocking=False):
                self._slots.give_back(caller)

        # A cancelled call may never resume the handler's generator; this callback still runs.
        if not context.add_callback(release):
            release()
        return release

    def stop(self) -> None:
        self.server.stop(0.5).wait()


def _parse_ask(request: bytes, context: grpc.ServicerContext,
               ) -> tuple[str, int, str, bool, tuple[int, int] | None]:  # fmt: skip
    try:
        asked = json.loads(request)
        with_leaves = asked.get("leaves", False)
        if not isinstance(with_leaves, bool):
            raise TypeError("leaves must be true or false")
        chunks = asked.get("chunks")
        if chunks is not None:
            first, stop = chunks
            if not all(type(n) is int for n in (first, stop)):
                raise TypeError("chunks must be two integers")
            chunks = (first, stop)
        return (str(asked["kind"]), int(asked["round"]), str(asked["digest"]), with_leaves,
                chunks)  # fmt: skip
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError, AttributeError):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      "ask for {kind, round, digest, leaves?, chunks?: [first, stop]}")  # fmt: skip
        raise  # unreachable: abort raises


class _IdleWatch:
    """Cancels a call when no chunk has arrived for `idle_s` seconds (reset by `touch`)."""

    def __init__(self, call: grpc.RpcContext, idle_s: float) -> None:
        self.fired = False
        self._call, self._idle_s = call, idle_s
        self._last = time.monotonic()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="openswarm-fetch-idle", daemon=True)
        self._thread.start()

    def touch(self) -> None:
        self._last = time.monotonic()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self._last + self._idle_s - time.monotonic()):
            if time.monotonic() - self._last >= self._idle_s:
                self.fired = True
                self._call.cancel()
                return


class ExchangeClient:
    """Fetches snapshots from other peers, keeping one channel per endpoint."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.received = ByteCount()  # bytes of models fetched from other peers
        self._channels: dict[tuple[str, str | None], grpc.Channel] = {}
        self._lock = threading.Lock()

    def fetch(
        self,
        endpoint: str,
        kind: str,
        round: int,
        digest: str,
        *,
        max_bytes: int,
        deadline_s: float = 120.0,
        idle_s: float = 30.0,
        peer: str | None = None,
        size: int | None = None,
        root: str | None = None,
        zstd: bool = False,
        into: BinaryIO | None = None,
        key: str | None = None,
        chunks: tuple[int, int] | None = None,
        target: memoryview | None = None,
    ) -> Buffer:
        """The snapshot's bytes, checked; ExchangeError otherwise.

        `max_bytes` bounds the model's bytes, `size` (if known: the ledger's record) fixes
        them, so the buffer is allocated once. With `root` (the snapshot's chunk root) every
        chunk is checked against it as it arrives and no digest is computed; without it the
        whole is checked against `digest`. `zstd`: the wire is zstd-compressed (it is
        decompressed as it comes, never past the bound). `into`: a file (opened for writing
        and reading) that takes the bytes instead of memory; then the result is empty.
        `key`: what the server holds it under, if not `digest` (a leader's mirror).
        `chunks`: (first, stop), only those chunks, plain and checked against `root`
        (`size` is the whole model's); the result holds just them. `target`: a buffer of
        `size` bytes the model is written into (and returned) instead of a new one.

        The call is cancelled as soon as more bytes arrive than that, when no chunk comes
        for `idle_s` seconds, and in any case after `deadline_s` seconds. With `peer`, the
        server must hold that peer's identity (so a site cannot register another's address
        and have its snapshot counted as its own).
        """
        _check_limits(max_bytes, deadline_s, idle_s)
        what = f"the {kind} model of round {round} from {peer or endpoint}"
        if size is not None and not 0 <= size <= max_bytes:
            raise ExchangeError(
                f"fetching {what}: the ledger records {size} bytes, more than the {max_bytes} "
                "this site accepts"
            )
        if root is not None and size is None:
            raise ExchangeError(f"fetching {what}: checking chunks needs the model's size")
        if chunks is not None and root is None:
            raise ExchangeError(f"fetching part of {what}: checking it needs its chunk root")
        try:
            receiver = Receiver(size, max_bytes, root, zstd and chunks is None, into, chunks,
                                target)  # fmt: skip
        except ValueError as exc:
            raise ExchangeError(f"fetching {what}: {exc}") from None
        ask: dict[str, object] = {"kind": kind, "round": round, "digest": key or digest}
        if root is not None:
            ask["leaves"] = True
        if chunks is not None:
            ask["chunks"] = list(chunks)
        call = self._stub(endpoint, peer)(json.dumps(ask).encode(), timeout=deadline_s)
        watch = _IdleWatch(call, idle_s)
        try:
            for message in call:
                watch.touch()
                receiver.add(message)
            data = receiver.finish() or bytearray()
        except ReceiveError as exc:
            call.cancel()
            raise ExchangeError(f"fetching {what}: {exc}; cancelled") from None
        except grpc.RpcError as exc:
            if watch.fired:
                raise ExchangeError(
                    f"fetching {what}: the peer went silent for {idle_s:g} s; cancelled"
                ) from exc
            raise ExchangeError(_rpc_failure(exc, what, deadline_s)) from exc
        finally:
            watch.stop()
            self.received.add(receiver.wire_bytes)
            if receiver.wire_bytes >= _TRIM_AFTER_BYTES:  # gRPC's buffers of it stay in the heap
                release_freed_memory()
        if root is None and into is None:
            _check_digest(data, digest, endpoint, kind, round)
        elif root is None:
            _check_file_digest(into, digest, endpoint, kind, round)  # type: ignore[arg-type]
        return data

    def _stub(self, endpoint: str, peer: str | None) -> grpc.UnaryStreamMultiCallable:
        with self._lock:
            channel = self._channels.get((endpoint, peer))
            if channel is None:
                options = list(_CLIENT_OPTIONS)
                if peer is not None:
                    options.append(("grpc.ssl_target_name_override", identity_host("peer", peer)))
                channel = secure_channel(endpoint, self.identity, options=options)
                self._channels[(endpoint, peer)] = channel
        return channel.unary_stream(
            f"/{SERVICE}/Fetch", request_serializer=None, response_deserializer=None
        )

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()


def _check_limits(max_bytes: int, deadline_s: float, idle_s: float) -> None:
    # The limits come from the ledger and the clock: a bad one is a refusal, not a bug.
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ExchangeError(f"max_bytes must be a positive int, got {max_bytes!r}")
    if not deadline_s > 0:
        raise ExchangeError(f"no time left to fetch (deadline_s={deadline_s!r})")
    if not idle_s > 0:
        raise ExchangeError(f"idle_s must be positive, got {idle_s!r}")


def _rpc_failure(exc: grpc.RpcError, what: str, deadline_s: float) -> str:
    code, details = exc.code(), exc.details()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"fetching {what}: not done within the {deadline_s:g} s deadline"
    return f"fetching {what} failed: {code.name}: {details}"


def _check_file_digest(into: BinaryIO, digest: str, endpoint: str, kind: str,
                       round: int) -> None:  # fmt: skip
    try:
        got = digest_file(into.name)
    except (CodecError, OSError) as exc:
        raise ExchangeError(f"{endpoint} sent a malformed {kind} model: {exc}") from exc
    if got != digest:
        raise ExchangeError(
            f"{endpoint} sent a {kind} model of round {round} whose digest {got[:12]}… "
            f"differs from the ledger's {digest[:12]}…"
        )


def _check_digest(buffer: Buffer, digest: str, endpoint: str, kind: str, round: int) -> None:
    try:
        got = digest_encoded(buffer)
    except CodecError as exc:
        raise ExchangeError(f"{endpoint} sent a malformed {kind} model: {exc}") from exc
    if got != digest:
        raise ExchangeError(
            f"{endpoint} sent a {kind} model of round {round} whose digest {got[:12]}… "
            f"differs from the ledger's {digest[:12]}…"
        )
