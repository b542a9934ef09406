"""Servers and inputs that pretend to be what they are not: a peer posing as a ledger
replica, a certificate asking for another role's reserved name, a malformed site config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.ledger.service import SERVICE
from openswarm.net import json_method_handlers, make_server
from openswarm.node.exchange import ExchangeClient, ExchangeError, ExchangeServer
from openswarm.node.settings import NetworkConfig, SwarmConfigError
from openswarm.pki import Identity, PkiError, init_ca, issue_identity, role_host


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_ca(tmp_path_factory.mktemp("impostors") / "ca", "impostors")


def _identity(ca: Path, name: str, role: str) -> Identity:
    return Identity.load(issue_identity(ca, name, role, hosts=["localhost", "127.0.0.1"]))


def _status(request: Any, context: grpc.ServicerContext) -> dict[str, Any]:
    return {"state": "leader", "claims": "to be a ledger replica"}


@pytest.fixture
def serve(ca: Path) -> Iterator:
    servers: list[grpc.Server] = []

    def start(identity: Identity) -> str:
        handler = json_method_handlers(SERVICE, {"Status": _status})
        server, port = make_server(identity, "127.0.0.1:0", [handler], max_workers=2)
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(None)


def test_a_peer_posing_as_a_ledger_replica_is_not_believed(ca: Path, serve) -> None:
    client_identity = _identity(ca, "site-a", "peer")
    impostor = serve(_identity(ca, "mallory", "peer"))
    with (
        LedgerClient([impostor], client_identity, timeout_s=5) as client,
        pytest.raises(LedgerError, match="no ledger replica answered"),
    ):
        client.status()
    genuine = serve(_identity(ca, "ledger-1", "ledger"))
    with LedgerClient([genuine], client_identity, timeout_s=5) as client:
        assert client.status()["state"] == "leader"


def test_no_identity_may_ask_for_a_role_name(ca: Path, tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="reserved"):
        issue_identity(ca, "mallory2", "peer", hosts=[role_host("ledger")], out_dir=tmp_path)


def test_a_config_with_the_wrong_types_gets_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    for key in ("LEDGER", "IDENTITY", "LISTEN", "CONTRACT", "ADVERTISE", "ADMIN_IDENTITY"):
        monkeypatch.delenv(f"OPENSWARM_{key}", raising=False)
    config = tmp_path / "site.yaml"
    config.write_text("ledger: 127.0.0.1:7001\nidentity: [ids/a, ids/b]\n")
    with pytest.raises(SwarmConfigError, match="'identity' must be a single string"):
        NetworkConfig.load(config)
    config.write_text("ledger: {host: 1}\nidentity: ids/a\n")
    with pytest.raises(SwarmConfigError, match="'ledger' must be host:port strings"):
        NetworkConfig.load(config)
    config.write_text("ledger: 127.0.0.1:7001\nidentity: ids/a\nidentiy: typo\n")
    with pytest.raises(SwarmConfigError, match="unknown key"):
        NetworkConfig.load(config)


def test_a_site_answering_at_another_sites_address_is_not_believed(ca: Path) -> None:
    # mallory registered site-b's address (or sits at it): a leader asking for site-b's
    # snapshot must not take mallory's server for site-b's.
    leader = ExchangeClient(_identity(ca, "leader", "peer"))
    impostor = ExchangeServer(_identity(ca, "mallory-x", "peer"), "127.0.0.1:0")
    genuine = ExchangeServer(_identity(ca, "site-b", "peer"), "127.0.0.1:0")
    try:
        with pytest.raises(ExchangeError, match="UNAVAILABLE"):
            leader.fetch(impostor.endpoint, "merged", 1, "0" * 64, max_bytes=10, deadline_s=5,
                         peer="site-b")  # fmt: skip
        with pytest.raises(ExchangeError, match="NOT_FOUND"):  # the right site: TLS is fine
            leader.fetch(genuine.endpoint, "merged", 1, "0" * 64, max_bytes=10, deadline_s=5,
                         peer="site-b")  # fmt: skip
    finally:
        leader.close()
        impostor.stop()
        genuine.stop()
