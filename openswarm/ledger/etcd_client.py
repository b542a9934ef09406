"""A small etcd v3 client over etcd's JSON gateway (HTTPS with a client certificate).

Only what the ledger needs: write-once puts, ranges, deletes, a prefix watch, and the
cluster and maintenance calls behind `openswarm ledger status/backup/add-replica`. Each
thread keeps its own keep-alive connection; a request that cannot reach one endpoint moves
on to the next. Nothing here is pickled: requests and answers are JSON.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import ssl
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from openswarm.pki import Identity

#: A watch answer line longer than this is refused (records are at most ~1 MiB).
MAX_LINE_BYTES = 64 * 1024 * 1024


class EtcdError(RuntimeError):
    """etcd could not do what was asked; `transient` if the same call may work later."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class WatchCompacted(EtcdError):
    """The watch's start revision was compacted away; `compact_revision` is the oldest kept."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(
            f"etcd compacted its history up to revision {compact_revision}; this node is "
            "behind it and must catch up from another ledger node's chain"
        )
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyValue:
        return cls(
            key=_unb64(data.get("key")),
            value=_unb64(data.get("value")),
            create_revision=int(data.get("create_revision", 0)),
            mod_revision=int(data.get("mod_revision", 0)),
            version=int(data.get("version", 0)),
        )


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "PUT" or "DELETE"
    kv: KeyValue
    prev: KeyValue | None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with `prefix`."""
    raw = bytearray(prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"


class EtcdClient:
    """Thread-safe client of one etcd cluster (several client URLs)."""

    def __init__(
        self, endpoints: Sequence[str], identity: Identity, *, timeout_s: float = 5.0
    ) -> None:
        if not endpoints:
            raise EtcdError("no etcd endpoint given")
        self.endpoints = [_parse_url(url) for url in endpoints]
        self.timeout_s = timeout_s
        self._context = ssl.create_default_context(cadata=identity.ca_cert_pem.decode("ascii"))
        _load_identity(self._context, identity)
        self._local = threading.local()
        self._preferred = 0
        self._streams: set[http.client.HTTPSConnection] = set()
        self._every: set[http.client.HTTPSConnection] = set()  # for close()
        self._streams_lock = threading.Lock()

    # --- transport ------------------------------------------------------------------------
    def _connection(self, index: int) -> http.client.HTTPSConnection:
        conns: dict[int, http.client.HTTPSConnection] = self._local.__dict__.setdefault("c", {})
        conn = conns.get(index)
        if conn is None:
            host, port = self.endpoints[index]
            conn = http.client.HTTPSConnection(
                host, port, context=self._context, timeout=self.timeout_s
            )
            conns[index] = conn
            with self._streams_lock:
                self._every.add(conn)
        return conn

    def _drop(self, index: int) -> None:
        conns = self._local.__dict__.get("c", {})
        conn = conns.pop(index, None)
        if conn is not None:
            with self._streams_lock:
                self._every.discard(conn)
            conn.close()

    def call(
        self,
        path: str,
        body: dict[str, Any],
        *,
        endpoint: int | None = None,
        timeout_s: float | None = None,
    ) -> dict:
        """POST `body` to `path` on one endpoint (or any, failing over); the JSON answer."""
        order = [endpoint] if endpoint is not None else self._order()
        last = "no endpoint tried"
        limit = self.timeout_s if timeout_s is None else min(timeout_s, self.timeout_s)
        for index in order:
            for attempt in range(2):  # a kept-alive connection may have been closed meanwhile
                conn = self._connection(index)
                conn.timeout = limit
                if conn.sock is not None:
                    conn.sock.settimeout(limit)
                try:
                    conn.request(
                        "POST", path, json.dumps(body), {"Content-Type": "application/json"}
                    )
                    response = conn.getresponse()
                    data = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    self._drop(index)
                    last = f"{self._url(index)}: {exc}"
                    if attempt == 0 and isinstance(exc, http.client.RemoteDisconnected):
                        continue
                    break
                answer = _json(data, self._url(index))
                if response.status == 200:
                    self._preferred = index
                    return answer
                message = str(answer.get("message") or answer.get("error") or data[:200])
                last = f"{self._url(index)}: {message}"
                if _is_transient(response.status, message):
                    break
                raise EtcdError(f"etcd refused {path}: {message}")
        raise EtcdError(f"etcd unreachable or without quorum ({last})", transient=True)

    def _order(self) -> list[int]:
        first = self._preferred
        return [first, *(i for i in range(len(self.endpoints)) if i != first)]

    def _url(self, index: int) -> str:
        host, port = self.endpoints[index]
        return f"https://{host}:{port}"

    # --- key-value ------------------------------------------------------------------------
    def put_once(
        self, key: bytes, value: bytes, *, timeout_s: float | None = None
    ) -> tuple[bool, int]:
        """Write `key` only if it never existed: (created, revision of the key's write)."""
        answer = self.call(
            "/v3/kv/txn",
            {
                "compare": [
                    {
                        "key": b64(key),
                        "target": "CREATE",
                        "result": "EQUAL",
                        "create_revision": "0",
                    }
                ],
                "success": [{"request_put": {"key": b64(key), "value": b64(value)}}],
                "failure": [{"request_range": {"key": b64(key), "keys_only": True}}],
            },
            timeout_s=timeout_s,
        )
        if answer.get("succeeded"):
            return True, int(answer["header"]["revision"])
        kvs = answer["responses"][0]["response_range"].get("kvs") or []
        if not kvs:
            raise EtcdError(
                f"put-once of {key!r} failed, yet the key does not exist", transient=True
            )
        return False, int(kvs[0].get("create_revision", 0))

    def get(self, key: bytes) -> KeyValue | None:
        kvs = self.range(key, end=None)
        return kvs[0] if kvs else None

    def range(
        self,
        key: bytes,
        *,
        end: bytes | None,
        limit: int = 0,
        max_mod_revision: int = 0,
        keys_only: bool = False,
        min_create_revision: int = 0,
        by_creation: bool = False,
    ) -> list[KeyValue]:
        body: dict[str, Any] = {"key": b64(key), "limit": limit}
        if min_create_revision:
            body["min_create_revision"] = min_create_revision
        if by_creation:
            body["sort_order"], body["sort_target"] = "ASCEND", "CREATE"
        if end is not None:
            body["range_end"] = b64(end)
        if max_mod_revision:
            body["max_mod_revision"] = max_mod_revision
        if keys_only:
            body["keys_only"] = True
        answer = self.call("/v3/kv/range", body)
        return [KeyValue.from_json(kv) for kv in answer.get("kvs") or []]

    def count(self, key: bytes, end: bytes) -> int:
        answer = self.call(
            "/v3/kv/range", {"key": b64(key), "range_end": b64(end), "count_only": True}
        )
        return int(answer.get("count", 0))

    def delete(self, keys: Sequence[bytes]) -> None:
        """Delete `keys` in one transaction (etcd allows at most 128 operations per one)."""
        ops = [{"request_delete_range": {"key": b64(k)}} for k in keys]
        if ops:
            self.call("/v3/kv/txn", {"compare": [], "success": ops})

    def revision(self) -> int:
        answer = self.call("/v3/kv/range", {"key": b64(b"\0"), "count_only": True})
        return int(answer["header"]["revision"])

    # --- maintenance and cluster ----------------------------------------------------------
    def status(self, endpoint: int) -> dict[str, Any]:
        return self.call("/v3/maintenance/status", {}, endpoint=endpoint)

    def members(self) -> list[dict[str, Any]]:
        return list(self.call("/v3/cluster/member/list", {}).get("members") or [])

    def add_member(self, peer_url: str) -> dict[str, Any]:
        return self.call("/v3/cluster/member/add", {"peerURLs": [peer_url]})

    def remove_member(self, member_id: str) -> dict[str, Any]:
        return self.call("/v3/cluster/member/remove", {"ID": member_id})

    def compact(self, revision: int) -> None:
        self.call("/v3/kv/compaction", {"revision": revision, "physical": True})

    def defragment(self, endpoint: int) -> None:
        self.call("/v3/maintenance/defragment", {}, endpoint=endpoint)

    def snapshot(self, endpoint: int) -> Iterator[bytes]:
        """The member's database as a stream of byte chunks (`openswarm ledger backup`)."""
        for answer in self._stream("/v3/maintenance/snapshot", {}, endpoint=endpoint):
            blob = (answer.get("result") or answer).get("blob")
            if blob:
                yield _unb64(blob)

    # --- watch ----------------------------------------------------------------------------
    def watch(self, key: bytes, end: bytes, start_revision: int) -> Iterator[list[WatchEvent]]:
        """Batches of events on [key, end) from `start_revision` on, with previous values.

        Raises WatchCompacted when etcd no longer holds `start_revision`, EtcdError(transient)
        when the connection breaks; the caller resumes after the last revision it saw.
        """
        request = {
            "create_request": {
                "key": b64(key),
                "range_end": b64(end),
                "start_revision": start_revision,
                "prev_kv": True,
            }
        }
        for answer in self._stream("/v3/watch", request, endpoint=None, idle_timeout=None):
            result = answer.get("result") or {}
            compacted = int(result.get("compact_revision", 0) or 0)
            if compacted:
                raise WatchCompacted(compacted)
            if result.get("canceled"):
                raise EtcdError(
                    f"etcd cancelled the watch: {result.get('cancel_reason') or 'no reason'}",
                    transient=True,
                )
            events = [
                WatchEvent(
                    kind=str(event.get("type") or "PUT"),
                    kv=KeyValue.from_json(event.get("kv") or {}),
                    prev=KeyValue.from_json(event["prev_kv"]) if event.get("prev_kv") else None,
                )
                for event in result.get("events") or []
            ]
            if events:
                yield events

    def _stream(
        self,
        path: str,
        body: dict[str, Any],
        *,
        endpoint: int | None,
        idle_timeout: float | None = 30.0,
    ) -> Iterator[dict[str, Any]]:
        """Answers of a streaming call, one JSON object per line, on a connection of its own."""
        order = [endpoint] if endpoint is not None else self._order()
        last = "no endpoint tried"
        for index in order:
            host, port = self.endpoints[index]
            conn = http.client.HTTPSConnection(
                host, port, context=self._context, timeout=self.timeout_s
            )
            try:
                conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
                response = conn.getresponse()
                if response.status != 200:
                    last = f"{self._url(index)}: HTTP {response.status} {response.read()[:200]!r}"
                    continue
                if conn.sock is not None:
                    conn.sock.settimeout(idle_timeout)
                with self._streams_lock:
                    self._streams.add(conn)
                while True:
                    line = response.readline(MAX_LINE_BYTES)
                    if not line:
                        return
                    answer = _json(line, self._url(index))
                    if "error" in answer:
                        raise EtcdError(f"etcd stream {path}: {answer['error']}", transient=True)
                    yield answer
            except (OSError, http.client.HTTPException) as exc:
                last = f"{self._url(index)}: {exc}"
                if endpoint is None:
                    raise EtcdError(f"etcd stream {path} broke ({last})", transient=True) from exc
            finally:
                with self._streams_lock:
                    self._streams.discard(conn)
                conn.close()
        raise EtcdError(f"etcd stream {path}: no endpoint answered ({last})", transient=True)

    def abort_streams(self) -> None:
        """Break every open stream (its reader sees EtcdError), e.g. to stop a watch."""
        with self._streams_lock:
            streams = list(self._streams)
        for conn in streams:
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(2)

    def close(self) -> None:
        """Break every connection, also those of other threads mid-call."""
        self.abort_streams()
        with self._streams_lock:
            every, self._every = list(self._every), set()
        for conn in every:
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(2)
        for index in range(len(self.endpoints)):
            self._drop(index)


def _parse_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme != "https" or not parts.hostname or not parts.port:
        raise EtcdError(f"etcd endpoint {url!r} must look like https://HOST:PORT (TLS only)")
    return parts.hostname, parts.port


def _load_identity(context: ssl.SSLContext, identity: Identity) -> None:
    """Present `identity` as the client certificate (ssl wants files: a private temp dir)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="openswarm-etcd-") as folder:
        cert, key = Path(folder) / "c.pem", Path(folder) / "k.pem"
        cert.write_bytes(identity.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(identity.key_pem)
        context.load_cert_chain(cert, key)


def _json(data: bytes, where: str) -> dict[str, Any]:
    try:
        answer = json.loads(data)
    except ValueError as exc:
        raise EtcdError(f"{where} answered something that is not JSON", transient=True) from exc
    if not isinstance(answer, dict):
        raise EtcdError(f"{where} answered a JSON {type(answer).__name__}", transient=True)
    return answer


def _is_transient(status: int, message: str) -> bool:
    text = message.lower()
    return status >= 500 or any(
        word in text
        for word in (
            "timed out",
            "no leader",
            "unavailable",
            "unhealthy cluster",
            "leader changed",
            "too many requests",
            "not started",
            "stopped",
        )
    )


__all__ = [
    "EtcdClient",
    "EtcdError",
    "KeyValue",
    "WatchCompacted",
    "WatchEvent",
    "prefix_end",
]
