"""Mutual-TLS gRPC credentials and channels built from an identity folder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from openswarm.pki import Identity

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest gRPC message sent or received by default (64 MiB)."""

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
)
"""Default client options; servers from `make_server` accept these keepalive pings."""


def server_credentials(identity: Identity) -> grpc.ServerCredentials:
    """Server side of mutual TLS: present `identity`, require a client cert from its CA (or
    from any CA of its trust bundle: ca.crt may hold every site CA of the swarm)."""
    return grpc.ssl_server_credentials(
        [(identity.key_pem, identity.cert_pem)],
        root_certificates=identity.ca_cert_pem,
        require_client_auth=True,
    )


def channel_credentials(identity: Identity) -> grpc.ChannelCredentials:
    """Client side of mutual TLS: present `identity`, trust only servers from its CA(s)."""
    return grpc.ssl_channel_credentials(
        root_certificates=identity.ca_cert_pem,
        private_key=identity.key_pem,
        certificate_chain=identity.cert_pem,
    )


def merge_options(
    defaults: Sequence[tuple[str, Any]], options: Sequence[tuple[str, Any]]
) -> list[tuple[str, Any]]:
    """Channel/server options: `defaults` overridden key by key by `options`."""
    merged = dict(defaults)
    merged.update(dict(options))
    return list(merged.items())


def secure_channel(
    target: str, identity: Identity, *, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """A mutual-TLS channel to `target` (host:port) as `identity`.

    The server's certificate must come from the identity's CA and name the target host in
    a DNS or IP SAN (pass `("grpc.ssl_target_name_override", NAME)` to check another name).
    Message limits default to 64 MiB; `options` override the defaults.
    """
    return grpc.secure_channel(
        target, channel_credentials(identity), options=merge_options(CHANNEL_OPTIONS, options)
    )


#: Channel options for peers that come and go: retry a reconnect within a second, not after
#: gRPC's default backoff of up to two minutes, so a replica or peer that is back is used.
#: (Not grpc.min_reconnect_backoff_ms: gRPC also takes it as the connect timeout, and 100 ms
#: drops slow but healthy peers on a busy machine.)
FAST_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
