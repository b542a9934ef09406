"""Mutual TLS over a real gRPC server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from openswarm.net import (
    MAX_MESSAGE_BYTES,
    NetError,
    caller_identity,
    json_method_handlers,
    json_stub,
    make_server,
    require_role,
    secure_channel,
)
from openswarm.pki import Identity, init_ca, issue_identity

SERVICE = "openswarm.test.Echo"
TIMEOUT = 5.0


@dataclass(frozen=True)
class Swarm:
    server: Identity
    peer: Identity
    admin: Identity
    expired: Identity
    stranger: Identity
    """Same swarm name, but issued by another CA."""
    stranger_server: Identity


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Swarm:
    root = tmp_path_factory.mktemp("tls")
    ca = init_ca(root / "ca", "demo")
    other = init_ca(root / "other", "demo")
    long_ago = datetime.now(UTC) - timedelta(days=10)

    def load(ca_dir: Path, name: str, role: str, **kwargs: Any) -> Identity:
        return Identity.load(issue_identity(ca_dir, name, role, **kwargs))

    return Swarm(
        server=load(ca, "ledger1", "ledger"),
        peer=load(ca, "alice", "peer"),
        admin=load(ca, "root", "admin"),
        expired=load(ca, "old", "peer", days=1, not_before=long_ago),
        stranger=load(other, "eve", "peer"),
        stranger_server=load(other, "fake-ledger", "ledger"),
    )


def _who_am_i(request: Any, context: grpc.ServicerContext) -> dict[str, Any]:
    caller = caller_identity(context)
    return {"spiffe_id": caller.spiffe_id, "role": caller.role, "echo": request}


def _admin_only(request: Any, context: grpc.ServicerContext) -> dict[str, Any]:
    caller = require_role(context, "admin")
    return {"ok": True, "name": caller.name}


def _handlers() -> list[grpc.GenericRpcHandler]:
    return [json_method_handlers(SERVICE, {"WhoAmI": _who_am_i, "AdminOnly": _admin_only})]


@pytest.fixture(scope="module")
def target(swarm: Swarm) -> Iterator[str]:
    server, port = make_server(swarm.server, "127.0.0.1:0", _handlers(), max_workers=4)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def _call(channel: grpc.Channel, method: str = "WhoAmI", request: Any = None) -> Any:
    with channel:
        return json_stub(channel, SERVICE, method)(request, timeout=TIMEOUT)


def _code(channel: grpc.Channel, method: str = "WhoAmI") -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as failure:
        _call(channel, method)
    return failure.value.code()


def test_swarm_member_is_identified(swarm: Swarm, target: str) -> None:
    reply = _call(secure_channel(target, swarm.peer), request={"hello": 1})
    assert reply == {"spiffe_id": "spiffe://demo/peer/alice", "role": "peer", "echo": {"hello": 1}}


def test_localhost_name_is_accepted(swarm: Swarm, target: str) -> None:
    port = target.rsplit(":", 1)[1]
    reply = _call(secure_channel(f"localhost:{port}", swarm.admin))
    assert reply["spiffe_id"] == "spiffe://demo/admin/root"


def test_client_without_certificate_is_refused(swarm: Swarm, target: str) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=swarm.peer.ca_cert_pem)
    assert _code(grpc.secure_channel(target, credentials)) == grpc.StatusCode.UNAVAILABLE


def test_client_from_another_ca_is_refused(swarm: Swarm, target: str) -> None:
    # The client trusts our CA (so only the server's check can fail) but holds a foreign cert.
    credentials = grpc.ssl_channel_credentials(
        root_certificates=swarm.peer.ca_cert_pem,
        private_key=swarm.stranger.key_pem,
        certificate_chain=swarm.stranger.cert_pem,
    )
    assert _code(grpc.secure_channel(target, credentials)) == grpc.StatusCode.UNAVAILABLE
    assert _code(secure_channel(target, swarm.stranger)) == grpc.StatusCode.UNAVAILABLE


def test_client_with_expired_certificate_is_refused(swarm: Swarm, target: str) -> None:
    assert _code(secure_channel(target, swarm.expired)) == grpc.StatusCode.UNAVAILABLE


def test_server_from_another_ca_is_refused(swarm: Swarm) -> None:
    server, port = make_server(swarm.stranger_server, "127.0.0.1:0", _handlers(), max_workers=2)
    server.start()
    try:
        code = _code(secure_channel(f"127.0.0.1:{port}", swarm.peer))
    finally:
        server.stop(None)
    assert code == grpc.StatusCode.UNAVAILABLE


def test_require_role(swarm: Swarm, target: str) -> None:
    with pytest.raises(grpc.RpcError) as denied:
        _call(secure_channel(target, swarm.peer), "AdminOnly")
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "spiffe://demo/peer/alice" in (denied.value.details() or "")
    assert "admin" in (denied.value.details() or "")
    assert _call(secure_channel(target, swarm.admin), "AdminOnly") == {"ok": True, "name": "root"}


def test_malformed_json_is_invalid_argument(swarm: Swarm, target: str) -> None:
    with secure_channel(target, swarm.peer) as channel:
        raw = channel.unary_unary(f"/{SERVICE}/WhoAmI")
        with pytest.raises(grpc.RpcError) as failure:
            raw(b"{not json", timeout=TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_messages_above_grpc_default_limit(swarm: Swarm, target: str) -> None:
    payload = "x" * (6 * 1024 * 1024)  # gRPC's default receive limit is 4 MiB
    assert len(payload) < MAX_MESSAGE_BYTES
    reply = _call(secure_channel(target, swarm.peer), request=payload)
    assert reply["echo"] == payload


def test_port_in_use_is_a_clear_error(swarm: Swarm, target: str) -> None:
    with pytest.raises(NetError, match="cannot bind"):
        make_server(swarm.server, target, _handlers())
