"""The ledger's gRPC service (JSON messages over mutual TLS), served by every replica."""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from openswarm.ledger.blobs import PIECE_BYTES, BlobError, BlobStore
from openswarm.ledger.ordering import OrderingError
from openswarm.ledger.replica import LedgerHalted, LedgerReplica
from openswarm.ledger.state import NotPermitted, Rejected
from openswarm.ledger.tx import Transaction, TxFormatError
from openswarm.net import caller_certificate, require_role
from openswarm.net.jsonrpc import decode_json, encode_json
from openswarm.net.limits import CallLimiter, CallLimits, LimitExceeded, Slot
from openswarm.pki import CertIdentity, PkiError
from openswarm.protocol import LEDGER_SERVICE, NO_QUORUM

SERVICE = LEDGER_SERVICE
MAX_TX_BYTES = 256 * 1024
#: Largest request the server reads. A transaction of MAX_TX_BYTES (UTF-8) can take up to
#: three times that on the wire once clients escape non-ASCII text; gRPC refuses anything
#: larger before it is parsed.
MAX_REQUEST_BYTES = 3 * MAX_TX_BYTES + 64 * 1024
#: Largest certificate (PEM characters) a Vouch call asks about.
MAX_CERT_CHARS = 16 * 1024
STREAM_POLL_S = 0.5
#: Most rounds of history a contract watch sends with each state.
WATCH_RECENT = 16
#: Server worker threads: the peers' unary calls and streams (CallLimits.shared_slots and
#: stream_slots), the rest kept for admins and for refusing calls over a limit.
MAX_WORKERS = CallLimits().workers
SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
)
"""`make_server` options of a ledger replica."""

Handler = Callable[[dict[str, Any], grpc.ServicerContext], Any]


def outcome_of(block: dict[str, Any]) -> dict[str, Any]:
    """What a submitter learns about its committed transaction."""
    outcome = block["outcome"]
    return {
        "tx_id": block.get("tx_id", ""),
        "height": block["height"],
        "block_hash": block["hash"],
        "status": outcome["status"],
        "reason": outcome.get("reason"),
        "result": outcome.get("result"),
    }


class LedgerService:
    """Request handlers over one replica."""

    def __init__(
        self,
        replica: LedgerReplica,
        *,
        submit_timeout_s: float = 5.0,
        limits: CallLimits | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        self.replica = replica
        self.blobs = blobs
        self.submit_timeout_s = submit_timeout_s
        self.limiter = CallLimiter(limits)
        self.served = ServedCounts()

    # --- every call -----------------------------------------------------------------------
    def _admit(self, context: grpc.ServicerContext, *, stream: bool) -> tuple[CertIdentity, Slot]:
        """The caller, if admitted now with its certificate's role (and from its own site's
        CA) and within its limits."""
        caller = self._vouched(context)
        try:
            slot = self.limiter.acquire(
                caller.name, stream=stream, privileged=caller.role == "admin"
            )
        except LimitExceeded as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        context.add_callback(slot.release)  # also when the caller goes away mid-call
        return caller, slot

    def _vouched(self, context: grpc.ServicerContext) -> CertIdentity:
        """Who the caller is, if the ledger admits it now; aborts the call otherwise. TLS
        proved that a CA the swarm trusts issued its certificate; with several site CAs,
        only the ledger knows whether that is the CA of the site its name belongs to."""
        try:
            cert = caller_certificate(context).decode("ascii")
        except (PkiError, UnicodeDecodeError) as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        try:
            return self.replica.vouch(cert)
        except NotPermitted as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except Rejected as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        raise AssertionError("unreachable: abort raises")

    # --- writes ---------------------------------------------------------------------------
    def submit(self, request: dict[str, Any], context: grpc.ServicerContext) -> dict[str, Any]:
        tx = self._checked_tx(request, context)
        known = self.replica.height_of_tx(tx.tx_id)
        if known is not None:
            return outcome_of(self.replica.block(known) or {})
        if not self.replica.wait_for_time(self.submit_timeout_s):
            if self.replica.halted is not None:
                context.abort(
                    grpc.StatusCode.UNAVAILABLE, f"this ledger node halted: {self.replica.halted}"
                )
            context.abort(grpc.StatusCode.UNAVAILABLE, self._no_quorum("no ledger time yet"))
        # Refused here, a forged, stale or unauthorised transaction is never ordered.
        try:
            self.replica.precheck(tx)
        except NotPermitted as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"transaction refused: {exc}")
        except Rejected as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"transaction refused: {exc}")
        return self._order(tx, context)

    def _checked_tx(self, request: dict[str, Any], context: grpc.ServicerContext) -> Transaction:
        try:
            tx = Transaction.from_dict(request.get("tx"))
        except TxFormatError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed transaction: {exc}")
        size = len(tx.to_json().encode("utf-8"))
        if size > MAX_TX_BYTES:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"transaction of {size} bytes exceeds {MAX_TX_BYTES}; models never go "
                "on the ledger, only their digests",
            )
        return tx

    def _order(self, tx: Transaction, context: grpc.ServicerContext) -> dict[str, Any]:
        """Hand a checked transaction to the ordering layer and wait for its block."""
        try:
            block = self.replica.order(tx, self.submit_timeout_s)
        except LedgerHalted as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except OrderingError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, self._no_quorum(str(exc)))
        return outcome_of(block)

    def _no_quorum(self, why: str) -> str:
        return (
            f"{NO_QUORUM}: {why}; the ordering layer (etcd) needs a majority of its members "
            "— start the missing ledger nodes, then resubmit (the same transaction is "
            "applied at most once)"
        )

    def add_replica(self, request: dict[str, Any], context: grpc.ServicerContext) -> dict:
        """Add an etcd member (by peer URL) before its ledger node is started."""
        require_role(context, "admin")
        peer_url = request.get("peer_url")
        if not isinstance(peer_url, str) or not peer_url.startswith("https://"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "give the new member's https peer URL")
        return self._membership(context, lambda: self.replica.add_member(peer_url), added=peer_url)

    def remove_replica(self, request: dict[str, Any], context: grpc.ServicerContext) -> dict:
        """Remove an etcd member by its name (its ledger node is stopped afterwards)."""
        require_role(context, "admin")
        name = request.get("name")
        if not isinstance(name, str) or not name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "give the member's name")
        return self._membership(context, lambda: self.replica.remove_member(name), removed=name)

    def _membership(
        self, context: grpc.ServicerContext, change: Callable[[], list], **done: str
    ) -> dict[str, Any]:
        try:
            members = change()
        except (OrderingError, ValueError) as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return {**done, "members": members}

    def archive(self, request: dict[str, Any], context: grpc.ServicerContext) -> dict:
        """Drop archived records from etcd (`purge`), compact etcd's history past their
        deletion (`compact`: a revision) or give the space back (neither); the records stay in
        every node's chain. An admin's 'archive' transaction must allow a purge first."""
        require_role(context, "admin")
        upto = request.get("upto")
        if isinstance(upto, bool) or not isinstance(upto, int) or upto < 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "'upto' must be a positive integer")
        compact = request.get("compact")
        if compact is not None and (isinstance(compact, bool) or not isinstance(compact, int)):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "'compact' must be a revision")
        try:
            if compact is not None:
                return self.replica.compact(compact)
            if request.get("purge", True):
                return self.replica.purge(upto)
            self.replica.defragment()
        except LedgerHalted as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except OrderingError as exc:
            code = (
                grpc.StatusCode.UNAVAILABLE
                if exc.transient
                else grpc.StatusCode.FAILED_PRECONDITION
            )
            context.abort(code, str(exc))
        return {"deleted": 0, "compacted_at": None}

    # --- reads ----------------------------------------------------------------------------
    def status(self, request: dict[str, Any], context: grpc.ServicerContext) -> dict[str, Any]:
        snapshot = self.replica.summary()
        ordering = self.replica.ordering_status()
        return {
            "node": self.replica.name,
            "height": snapshot["height"],
            "position": self.replica.position,
            "halted": self.replica.halted,
            "has_quorum": bool(ordering.get("has_quorum")) and self.replica.halted is None,
            "ordering": ordering,
            "swarm": snapshot["swarm"],
            "genesis_hash": snapshot["genesis_hash"],
            "last_hash": snapshot["last_hash"],
            "head": self.replica.signed_head(),
            "served": self.served.totals(),
            **self.replica.time_info(),
        }

    def state(self, request: dict[str, Any], context: grpc.ServicerContext) -> dict[str, Any]:
        contract = request.get("contract")
        if contract is not None and not isinstance(contract, str):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "'contract' must be a string")
        recent = None if request.get("recent") is None else _int(request, "recent", 0, context)
        return self.replica.snapshot(contract, recent if contract is not None else None)

    def blocks(self, request: dict[str, Any], context: grpc.ServicerContext) -> dict[str, Any]:
        start, stop = _int(request, "from", 0, context), request.get("to")
        if stop is not None:
            stop = _int(request, "to", 0, context) + 1
        answer = {"height": self.replica.height, "blocks": self.replica.blocks(start, stop)}
        if request.get("positions"):
            answer["positions"] = self.replica.positions(start, stop)
        return answer

    def vouch(self, request: dict[str, Any], context: grpc.ServicerContext) -> dict[str, Any]:
        """Whether the ledger vouches for a certificate (`cert`, PEM) now: its name admitted
        with its role, issued by its own site's CA. What a peer asks about a caller."""
        cert = request.get("cert")
        if not isinstance(cert, str) or not cert or len(cert) > MAX_CERT_CHARS:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"'cert' must be a PEM certificate of at most {MAX_CERT_CHARS} characters",
            )
        try:
            who = self.replica.vouch(cert)
        except Rejected as exc:
            return {"vouched": False, "reason": str(exc)}
        return {"vouched": True, "name": who.name, "role": who.role, "reason": None}

    def tx(self, request: dict[str, Any], context: grpc.ServicerContext) -> dict[str, Any]:
        height = self.replica.height_of_tx(str(request.get("tx_id", "")))
        if height is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such transaction on this replica")
        return outcome_of(self.replica.block(height) or {})

    def stream(
        self, request: dict[str, Any], context: grpc.ServicerContext, caller: CertIdentity
    ) -> Iterator[dict[str, Any]]:
        """Every block from `from` on, then new ones as they commit, until cancelled; with
        `watch`, a contract's state instead (see `watch`).

        Ends with PERMISSION_DENIED once the caller is revoked.
        """
        if request.get("watch"):
            yield from self.watch(request, context, caller)
            return
        next_height = _int(request, "from", 0, context)
        contract = request.get("contract")
        while context.is_active():
            self._vouched(context)  # ends the stream once the caller is revoked
            for block in self.replica.blocks(next_height):
                next_height = block["height"] + 1
                if contract is None or block.get("tx", {}).get("contract") == contract:
                    yield block
            self.replica.wait_for_height(next_height, STREAM_POLL_S)

    def watch(
        self, request: dict[str, Any], context: grpc.ServicerContext, caller: CertIdentity
    ) -> Iterator[dict[str, Any]]:
        """`contract`'s state (last `recent` rounds of history) now, then again each time a
        block changes it, until cancelled. Changes that come in a burst are sent once, as
        their latest state; a state the caller already has (`from`: the height of the last
        one it got) is not sent again."""
        contract = request.get("contract")
        if not isinstance(contract, str) or not contract:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "watch needs a 'contract' name")
        recent = _int(request, "recent", WATCH_RECENT, context)
        seen = _int(request, "from", 0, context)
        while context.is_active():
            self._vouched(context)  # ends the watch once the caller is revoked
            if self.replica.halted is not None:
                context.abort(grpc.StatusCode.UNAVAILABLE, f"ledger node halted: "
                              f"{self.replica.halted}")  # fmt: skip
            answer = self.replica.snapshot(contract, min(recent, WATCH_RECENT))
            if answer["changed_at"] > seen or seen == 0:
                seen = max(answer["changed_at"], 1)
                yield answer
            self.replica.wait_for_change(contract, seen, STREAM_POLL_S)

    # --- tasks and their files ------------------------------------------------------------
    def tasks(self, request: dict[str, Any], context: grpc.ServicerContext) -> dict[str, Any]:
        """Tasks and operators; with `task`, that task's whole definition too."""
        task = request.get("task")
        if task is not None and not isinstance(task, str):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "'task' must be a string")
        return self.replica.tasks(task)

    def put_blob(self, request: dict[str, Any], context: grpc.ServicerContext) -> dict:
        """A piece of a bundle file, from an admin: {digest, size, offset, data (base64)}."""
        require_role(context, "admin")
        store = self._blob_store(context)
        try:
            data = base64.b64decode(str(request.get("data", "")), validate=True)
            return store.put(request.get("digest"), request.get("size"),  # type: ignore[arg-type]
                             _int(request, "offset", 0, context), data)  # fmt: skip
        except (BlobError, binascii.Error) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"file refused: {exc}")
        except OSError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"this node cannot store files: {exc}")
        raise AssertionError("unreachable: abort raises")

    def get_blob(self, request: dict[str, Any], context: grpc.ServicerContext) -> dict:
        """A piece of a bundle file, for an operator or admin: {digest, offset, length}."""
        require_role(context, "operator", "admin")
        store = self._blob_store(context)
        try:
            data, size = store.get(request.get("digest"),  # type: ignore[arg-type]
                                   _int(request, "offset", 0, context),
                                   _int(request, "length", PIECE_BYTES, context))  # fmt: skip
        except BlobError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except FileNotFoundError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return {"size": size, "data": base64.b64encode(data).decode("ascii")}

    def _blob_store(self, context: grpc.ServicerContext) -> BlobStore:
        if self.blobs is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this ledger node stores no files")
        return self.blobs

    # --- wiring ---------------------------------------------------------------------------
    def handler(self) -> grpc.GenericRpcHandler:
        unary = {
            "Submit": self.submit,
            "Status": self.status,
            "State": self.state,
            "Blocks": self.blocks,
            "Tx": self.tx,
            "Vouch": self.vouch,
            "AddReplica": self.add_replica,
            "RemoveReplica": self.remove_replica,
            "Archive": self.archive,
            "Tasks": self.tasks,
            "PutBlob": self.put_blob,
            "GetBlob": self.get_blob,
        }
        methods = {
            name: grpc.unary_unary_rpc_method_handler(
                self._guarded(fn), response_serializer=self.served.serializer(name)
            )
            for name, fn in unary.items()
        }
        methods["Stream"] = grpc.unary_stream_rpc_method_handler(
            self._guarded_stream, response_serializer=self.served.serializer("Stream")
        )
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    def _guarded(self, fn: Handler) -> Callable[[bytes, grpc.ServicerContext], Any]:
        """Admission and limits first, then the JSON request is parsed and handled."""

        def call(data: bytes, context: grpc.ServicerContext) -> Any:
            _, slot = self._admit(context, stream=False)
            with slot:
                return fn(_request(data, context), context)

        return call

    def _guarded_stream(self, data: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
        caller, slot = self._admit(context, stream=True)
        with slot:
            yield from self.stream(_request(data, context), context, caller)


class ServedCounts:
    """Messages and bytes this node sent, per method (a stream counts each message): what
    a swarm costs the ledger, in `status`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, list[int]] = {}

    def serializer(self, method: str) -> Callable[[Any], bytes]:
        def encode(message: Any) -> bytes:
            data = encode_json(message)
            with self._lock:
                counts = self._counts.setdefault(method, [0, 0])
                counts[0] += 1
                counts[1] += len(data)
            return data

        return encode

    def totals(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {m: {"messages": c[0], "bytes": c[1]} for m, c in sorted(self._counts.items())}


def _request(data: bytes, context: grpc.ServicerContext) -> dict[str, Any]:
    """The request as a JSON object (empty: an empty object); INVALID_ARGUMENT otherwise."""
    try:
        request = decode_json(data) if data else {}
    except ValueError as exc:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request is not valid JSON: {exc}")
    if request is None:
        request = {}
    if not isinstance(request, dict):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request must be a JSON object")
    return request


def _int(request: dict[str, Any], key: str, default: int, context: grpc.ServicerContext) -> int:
    value = request.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{key!r} must be a non-negative integer")
    return value
