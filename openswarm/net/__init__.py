"""gRPC plumbing: mutual-TLS credentials, servers, channels and caller identities."""

from __future__ import annotations

from openswarm.net.auth import caller_certificate, caller_identity, require_role
from openswarm.net.errors import NetError
from openswarm.net.jsonrpc import json_method_handlers, json_stub, json_unary
from openswarm.net.server import make_server
from openswarm.net.tls import (
    FAST_RECONNECT,
    MAX_MESSAGE_BYTES,
    channel_credentials,
    secure_channel,
    server_credentials,
)

__all__ = [
    "FAST_RECONNECT",
    "MAX_MESSAGE_BYTES",
    "NetError",
    "caller_certificate",
    "caller_identity",
    "channel_credentials",
    "json_method_handlers",
    "json_stub",
    "json_unary",
    "make_server",
    "require_role",
    "secure_channel",
    "server_credentials",
]
