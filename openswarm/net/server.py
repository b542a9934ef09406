"""A gRPC server that speaks mutual TLS with the swarm's identities."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from openswarm.net.errors import NetError
from openswarm.net.tls import MAX_MESSAGE_BYTES, merge_options, server_credentials
from openswarm.pki import Identity

SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # One process per port: without this a second server could silently share the port.
    ("grpc.so_reuseport", 0),
    # Accept the clients' keepalive pings (every 60 s) on otherwise idle streams.
    ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
)
"""Default server options; `make_server`'s `options` override them."""


def make_server(
    identity: Identity,
    address: str,
    handlers: Sequence[grpc.GenericRpcHandler],
    *,
    max_workers: int = 16,
    options: Sequence[tuple[str, Any]] = (),
) -> tuple[grpc.Server, int]:
    """Build a mutual-TLS gRPC server for `handlers`, bound to `address` (port 0: any port).

    Returns (server, bound port); the server is not started yet: call `server.start()`.
    Raises NetError if the address cannot be bound.
    """
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="openswarm-grpc"),
        handlers=list(handlers),
        options=merge_options(SERVER_OPTIONS, options),
    )
    try:
        port = server.add_secure_port(address, server_credentials(identity))
    except RuntimeError:
        port = 0
    if port == 0:
        server.stop(None)
        raise NetError(f"cannot bind gRPC server to {address}: address in use or unavailable")
    return server, port
