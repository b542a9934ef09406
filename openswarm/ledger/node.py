"""Running a replica: Raft plus the gRPC service, from a config file or in-process."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import grpc

from openswarm.ledger.config import ConfigError, LedgerConfig
from openswarm.ledger.genesis import load_genesis
from openswarm.ledger.replica import LedgerReplica
from openswarm.ledger.service import MAX_WORKERS, SERVER_OPTIONS, LedgerService
from openswarm.net import make_server
from openswarm.net.limits import CallLimits
from openswarm.pki import Identity, PkiError

log = logging.getLogger(__name__)


@dataclass
class LedgerNode:
    """A running replica and its gRPC server."""

    config: LedgerConfig
    identity: Identity
    replica: LedgerReplica
    server: grpc.Server
    port: int

    @property
    def endpoint(self) -> str:
        host = self.config.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    def stop(self, grace: float = 1.0) -> None:
        self.server.stop(grace).wait()
        self.replica.close()


def start_node(config: LedgerConfig) -> LedgerNode:
    """Start one replica as the config says; raise ConfigError naming what is wrong."""
    try:
        identity = Identity.load(config.identity)
    except PkiError as exc:
        raise ConfigError(f"identity folder {config.identity}: {exc}") from exc
    if identity.role != "ledger":
        raise ConfigError(
            f"identity {identity.name!r} has role {identity.role!r}; a ledger replica needs an "
            "identity issued with --role ledger"
        )
    genesis = load_genesis(config.genesis)
    ca_pem = config.ca.read_bytes() if config.ca else identity.ca_cert_pem
    if genesis["ca_cert"].encode("ascii").strip() != ca_pem.strip():
        raise ConfigError(
            f"genesis {config.genesis} names another CA than identity {config.identity}; "
            "both must come from the same 'openswarm pki init'"
        )
    config.data_dir.mkdir(parents=True, exist_ok=True)
    replica = LedgerReplica(
        genesis, config.data_dir, config.raft, config.partners, config.raft_secret, signer=identity
    )
    limits = CallLimits(rate_per_s=config.rate_per_s, burst=config.rate_burst)
    service = LedgerService(replica, submit_timeout_s=config.submit_timeout_s, limits=limits)
    try:
        server, port = make_server(
            identity,
            config.listen,
            [service.handler()],
            max_workers=MAX_WORKERS,
            options=SERVER_OPTIONS,
        )
    except Exception:
        replica.close()
        raise
    server.start()
    return LedgerNode(config, identity, replica, server, port)


def serve_forever(config: LedgerConfig, ready_line: bool = True) -> None:
    """Run a replica until SIGINT/SIGTERM."""
    import signal

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    node = start_node(config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if ready_line:
        print(
            f"ledger replica {node.identity.name} serving on {node.endpoint} "
            f"(raft {config.raft}, data {config.data_dir})",
            flush=True,
        )
    stop.wait()
    node.stop()
