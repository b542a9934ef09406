"""Running a ledger node: its ordering layer (embedded or etcd), state and gRPC service."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import grpc

from openswarm.ledger.blobs import BlobStore
from openswarm.ledger.block import genesis_block
from openswarm.ledger.config import ConfigError, EtcdSettings, LedgerConfig
from openswarm.ledger.etcd_client import EtcdClient, EtcdError
from openswarm.ledger.etcd_member import (
    EtcdMember,
    EtcdSetupError,
    MemberSpec,
    check_version,
    parse_version,
)
from openswarm.ledger.etcd_orderer import EtcdOrderer
from openswarm.ledger.genesis import load_genesis
from openswarm.ledger.ordering import EmbeddedOrderer, Orderer
from openswarm.ledger.replica import LedgerReplica
from openswarm.ledger.service import MAX_WORKERS, SERVER_OPTIONS, LedgerService
from openswarm.net import make_server
from openswarm.net.limits import CallLimits
from openswarm.pki import Identity, PkiError, same_trust

log = logging.getLogger(__name__)

#: How long a starting node waits for etcd to answer (a new cluster needs a quorum).
ETCD_START_TIMEOUT_S = 120.0


@dataclass
class LedgerNode:
    """A running ledger node, its gRPC server and, when managed, its etcd member."""

    config: LedgerConfig
    identity: Identity
    replica: LedgerReplica
    server: grpc.Server
    port: int
    member: EtcdMember | None = None

    @property
    def endpoint(self) -> str:
        host = self.config.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    def stop(self, grace: float = 1.0) -> None:
        self.server.stop(grace).wait()
        self.replica.close()
        if self.member is not None:
            self.member.stop()


def _load_identity(config: LedgerConfig) -> Identity:
    try:
        identity = Identity.load(config.identity)
    except PkiError as exc:
        raise ConfigError(f"identity folder {config.identity}: {exc}") from exc
    if identity.role != "ledger":
        raise ConfigError(
            f"identity {identity.name!r} has role {identity.role!r}; a ledger node needs an "
            "identity issued with --role ledger"
        )
    return identity


def start_node(config: LedgerConfig) -> LedgerNode:
    """Start one ledger node as the config says; raise ConfigError naming what is wrong."""
    identity = _load_identity(config)
    genesis = load_genesis(config.genesis)
    ca_pem = config.ca.read_bytes() if config.ca else identity.ca_cert_pem
    if not same_trust(genesis["ca_cert"].encode("ascii"), ca_pem):
        raise ConfigError(
            f"genesis {config.genesis} names another CA than identity {config.identity}; "
            "both must come from the same 'openswarm pki init' (with several site CAs, put "
            "the genesis's bundle into the identity folder: 'openswarm pki trust')"
        )
    config.data_dir.mkdir(parents=True, exist_ok=True)
    member: EtcdMember | None = None
    orderer: Orderer
    if config.etcd is None:
        orderer = EmbeddedOrderer()
    else:
        member = _start_member(config, identity) if config.etcd.managed else None
        try:
            orderer = _etcd_orderer(config.etcd, identity, genesis, member)
        except BaseException:
            if member is not None:
                member.stop()
            raise
    try:
        imported = _import(config, orderer, genesis)
        replica = LedgerReplica(
            genesis, config.data_dir, orderer, signer=identity, tick_s=config.tick_s
        )
    except BaseException:
        orderer.close()
        if member is not None:
            member.stop()
        raise
    if imported:
        _check_imported(replica, imported, config)
    limits = CallLimits(rate_per_s=config.rate_per_s, burst=config.rate_burst)
    blobs = BlobStore(config.data_dir / "blobs")
    service = LedgerService(replica, submit_timeout_s=config.submit_timeout_s, limits=limits,
                            blobs=blobs)  # fmt: skip
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
        if member is not None:
            member.stop()
        raise
    server.start()
    replica.wait_for_time(config.submit_timeout_s)  # usually at once; never required
    return LedgerNode(config, identity, replica, server, port, member)


def _import(config: LedgerConfig, orderer: Orderer, genesis: dict) -> list[dict]:
    """Carry `import_chain` into etcd on this node's first start (an empty data folder)."""
    from openswarm.ledger.catchup import CatchUpError, import_chain
    from openswarm.ledger.store import read_chain

    if config.import_chain is None or read_chain(config.data_dir):
        return []
    try:
        return import_chain(config.import_chain, orderer, genesis)
    except CatchUpError as exc:
        raise ConfigError(f"import_chain: {exc}") from exc


def _check_imported(replica: LedgerReplica, blocks: list[dict], config: LedgerConfig) -> None:
    """The rebuilt chain must start with exactly the imported blocks."""
    replica.wait_for_height(len(blocks) - 1, ETCD_START_TIMEOUT_S)
    rebuilt = replica.blocks(0, len(blocks))
    if [b["hash"] for b in rebuilt] != [b["hash"] for b in blocks]:
        replica.close()
        raise ConfigError(
            f"import_chain {config.import_chain}: etcd already held other records, so the "
            "chain rebuilt from it differs; import into a new prefix (etcd.prefix)"
        )


def _start_member(config: LedgerConfig, identity: Identity) -> EtcdMember:
    etcd = config.etcd
    assert etcd is not None and etcd.member_name is not None and etcd.member_data_dir is not None
    spec = MemberSpec(
        name=etcd.member_name,
        data_dir=etcd.member_data_dir,
        client_url=etcd.client_url,
        peer_url=etcd.peer_url,
        initial_cluster=etcd.initial_cluster,
        state=etcd.cluster_state,
        cluster_token=f"openswarm-{identity.swarm}",
        identity_dir=config.identity,
        binary=etcd.binary,
        quota_bytes=etcd.quota_bytes,
    )
    member = EtcdMember(spec, config.data_dir / "etcd.log")
    try:
        member.start()
    except EtcdSetupError as exc:
        raise ConfigError(str(exc)) from exc
    return member


def _etcd_orderer(
    etcd: EtcdSettings, identity: Identity, genesis: dict, member: EtcdMember | None
) -> EtcdOrderer:
    """Connect to etcd, check its version and that it holds this swarm's genesis."""
    client_identity = identity
    if etcd.identity is not None:
        try:
            client_identity = Identity.load(etcd.identity)
        except PkiError as exc:
            raise ConfigError(f"etcd.identity {etcd.identity}: {exc}") from exc
    client = EtcdClient(list(etcd.endpoints), client_identity, timeout_s=5.0)
    prefix = etcd.prefix or f"/openswarm/{genesis['swarm']}/"
    orderer = EtcdOrderer(client, prefix)
    ours = genesis_block(genesis)["hash"]
    deadline = time.monotonic() + ETCD_START_TIMEOUT_S
    waited = False
    while True:
        try:
            version = client.status(0).get("version", "")
            check_version(parse_version(str(version), f"etcd at {etcd.endpoints[0]}"))
            stored = orderer.claim_genesis(ours)
            break
        except EtcdSetupError as exc:
            raise ConfigError(str(exc)) from exc
        except EtcdError as exc:
            if member is not None and member.exited() is not None:
                raise ConfigError(
                    f"the etcd member exited with {member.exited()}: {member.log_tail()}"
                ) from exc
            if not exc.transient or time.monotonic() > deadline:
                raise ConfigError(f"etcd at {', '.join(etcd.endpoints)}: {exc}") from exc
            if not waited:
                print(f"waiting for etcd at {', '.join(etcd.endpoints)} (quorum)…", flush=True)
                waited = True
            threading.Event().wait(0.2)
    if stored != ours:
        client.close()
        raise ConfigError(
            f"etcd prefix {prefix} holds the ledger of genesis {stored[:16]}…, but this node's "
            f"genesis is {ours[:16]}…; every node must start from the same genesis file — "
            "refusing to serve"
        )
    return orderer


def serve_forever(config: LedgerConfig, ready_line: bool = True) -> None:
    """Run a ledger node until SIGINT/SIGTERM."""
    import signal

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = start_node(config)
    if ready_line:
        kind = "embedded" if config.etcd is None else f"etcd {', '.join(config.etcd.endpoints)}"
        print(
            f"ledger node {node.identity.name} serving on {node.endpoint} "
            f"(ordering: {kind}; data {config.data_dir})",
            flush=True,
        )
    stop.wait()
    node.stop()
