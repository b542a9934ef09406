"""A ledger network on this machine: CA, identities, genesis, configs and replica processes.

Used by the local launcher, the benchmarks and the tests; each replica is a real
`openswarm ledger start` process serving gRPC over loopback. One replica is embedded by
default; several (or backend="etcd") each start and supervise a managed etcd member.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.net.ports import release_port, reserve_port
from openswarm.pki import Identity, init_ca, install_trust, issue_identity, make_bundle

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A loopback port reserved for this process (see `openswarm.net.ports`), so that no
    other run takes it before the replica that is configured with it binds it."""
    return reserve_port(LOOPBACK)


@dataclass
class ReplicaProcess:
    name: str
    config_path: Path
    data_dir: Path
    grpc_address: str
    peer_url: str = ""  # its etcd member's peer URL (etcd backend)
    host: str = LOOPBACK  # the address it serves on (its network host)
    process: subprocess.Popen[str] | None = None
    log_path: Path | None = None
    log_offset: int = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class LocalLedger:
    """Folders and processes of a loopback ledger network rooted at `root`."""

    root: Path
    swarm: str
    replicas: list[ReplicaProcess] = field(default_factory=list)
    backend: str = "embedded"  # or "etcd"
    hosts: list[str] = field(default_factory=list)  # address of each replica (default loopback)
    #: Starts a replica's process: (replica, argv, Popen keyword arguments) -> Popen. The
    #: default runs it here; a multi-host test runs it inside that host's network namespace.
    spawner: Callable[..., subprocess.Popen[str]] | None = None
    replica_settings: dict = field(default_factory=dict)  # more keys for every replica config
    ports: list[int] = field(default_factory=list)  # reserved by this process, see close()

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def genesis_path(self) -> Path:
        return self.root / "genesis.json"

    @property
    def endpoints(self) -> list[str]:
        return [r.grpc_address for r in self.replicas]

    def identity_dir(self, name: str) -> Path:
        return self.pki_dir / "identities" / name

    def site_ca_dir(self, site: str) -> Path:
        """The CA folder of `site`, in a network made with `sites`."""
        return self.root / f"ca-{site}"

    def identity(self, name: str) -> Identity:
        return Identity.load(self.pki_dir / "identities" / name)

    def client(self, name: str, *, timeout_s: float = 15.0) -> LedgerClient:
        return LedgerClient(self.endpoints, self.identity(name), timeout_s=timeout_s)

    # --- set-up ---------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: Path,
        *,
        replicas: int = 1,
        peers: Sequence[str] = (),
        admins: Sequence[str] = ("admin",),
        swarm: str = "local",
        min_peers: int | None = None,
        contract_settings: dict | None = None,
        extra_identities: Sequence[tuple[str, str]] = (),
        replica_settings: dict | None = None,
        backend: str | None = None,
        hosts: Sequence[str] | None = None,
        sites: Mapping[str, Sequence[str]] | None = None,
        admin_quorum: int = 1,
        identity_hosts: Mapping[str, Sequence[str]] | None = None,
    ) -> LocalLedger:
        """Issue identities, write the genesis and one config per replica (nothing runs yet).

        `backend` is "embedded" (one replica only; the default for one) or "etcd" (the
        default for several): each replica then runs a managed etcd member. `hosts` gives
        each replica's address (one per replica; default loopback): its identity names it,
        and it serves gRPC and etcd peer traffic there. `sites` (site -> the names of its
        identities) gives each site its own CA (`site_ca_dir`) and puts the bundle of all of
        them into every identity folder; `admin_quorum` is the genesis's. `identity_hosts`
        adds host names or addresses to identities' certificates (a peer that serves models
        at a host address must have it named there).
        """
        from openswarm import DEFAULT_CONTRACT
        from openswarm.ledger.genesis import make_genesis

        root.mkdir(parents=True, exist_ok=True)
        backend = backend or ("etcd" if replicas > 1 else "embedded")
        if backend not in ("embedded", "etcd") or (backend == "embedded" and replicas != 1):
            raise ValueError("backend is 'embedded' (exactly one replica) or 'etcd'")
        hosts = list(hosts or [LOOPBACK] * replicas)
        if len(hosts) != replicas:
            raise ValueError(f"give one host address per replica ({replicas}), not {len(hosts)}")
        net = cls(root=root, swarm=swarm, backend=backend, hosts=hosts,
                  replica_settings=dict(replica_settings or {}))  # fmt: skip
        site_of = net._init_cas(sites)
        admitted: list[tuple[str, ...]] = []
        for name, role in [
            *((f"ledger-{i}", "ledger") for i in range(1, replicas + 1)),
            *((p, "peer") for p in peers),
            *((a, "admin") for a in admins),
            *extra_identities,
        ]:
            names = ["localhost", LOOPBACK, *(identity_hosts or {}).get(name, ())]
            if role == "ledger":
                names.append(hosts[int(name.rsplit("-", 1)[1]) - 1])
            net._issue(name, role, sorted(set(names)), site_of)
            admitted.append((name, role) if sites is None else (name, role, site_of[name]))
        # Without settings the genesis holds no contract: a local site then creates its own
        # with the admin identity it is handed (OPENSWARM_ADMIN_IDENTITY), with its settings.
        settings = dict(contract_settings or {})
        if min_peers is not None:
            settings["min_peers"] = min_peers
        declared = contract_settings is not None or min_peers is not None
        contracts = {DEFAULT_CONTRACT: settings} if declared else {}
        site_cas = {s: (net.site_ca_dir(s) / "ca.crt").read_bytes() for s in sites or ()}
        genesis = make_genesis(
            swarm,
            None if sites else (net.pki_dir / "ca.crt").read_bytes(),
            admitted,  # type: ignore[arg-type]
            contracts=contracts,
            sites=site_cas or None,
            admin_quorum=admin_quorum,
        )
        if sites:
            bundle = make_bundle(site_cas.values())
            for name, _, _ in admitted:
                install_trust(net.identity_dir(name), bundle)
        net.genesis_path.write_text(json.dumps(genesis, indent=2, sort_keys=True))
        peer_urls = [f"https://{host}:{net._port()}" for host in hosts]
        for index in range(replicas):
            net.add_replica_config(index + 1, peer_urls)
        return net

    def _init_cas(self, sites: Mapping[str, Sequence[str]] | None) -> dict[str, str]:
        """Make the network's CA, or one per site; returns identity name -> its site."""
        if sites is None:
            init_ca(self.pki_dir, self.swarm)
            return {}
        site_of = {}
        for site, names in sites.items():
            init_ca(self.site_ca_dir(site), self.swarm, site=site)
            site_of.update(dict.fromkeys(names, site))
        return site_of

    def _issue(self, name: str, role: str, hosts: list[str], site_of: dict[str, str]) -> None:
        if not site_of:
            issue_identity(self.pki_dir, name, role, hosts=hosts)
            return
        if name not in site_of:
            raise ValueError(f"identity {name!r} belongs to no site; list it under one of sites")
        issue_identity(self.site_ca_dir(site_of[name]), name, role, hosts=hosts,
                       out_dir=self.identity_dir(name))  # fmt: skip

    def add_replica_config(
        self, number: int, peer_urls: Sequence[str], *, state: str = "new"
    ) -> ReplicaProcess:
        """Write the config of replica `number`; `peer_urls` are all etcd members' peer
        URLs (ignored by the embedded backend)."""
        name = f"ledger-{number}"
        data_dir = self.root / name
        host = self.hosts[number - 1] if number <= len(self.hosts) else LOOPBACK
        grpc_address = f"{host}:{self._port()}"
        config: dict = {
            "data_dir": str(data_dir),
            "listen": grpc_address,
            "identity": str(self.pki_dir / "identities" / name),
            "genesis": str(self.genesis_path),
            **self.replica_settings,
        }
        peer_url = ""
        if self.backend == "etcd":
            peer_url = peer_urls[number - 1]
            config["etcd"] = {
                "member": {
                    "client_url": f"https://{LOOPBACK}:{self._port()}",
                    "peer_url": peer_url,
                    "initial_cluster": {
                        f"ledger-{i}": url for i, url in enumerate(peer_urls, start=1) if url
                    },
                    "state": state,
                }
            }
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=True))
        os.chmod(path, 0o600)
        replica = ReplicaProcess(name, path, data_dir, grpc_address, peer_url, host)
        self.replicas.append(replica)
        return replica

    def new_replica(self) -> ReplicaProcess:
        """Issue an identity and write a config for one more etcd-backed replica.

        Admit its identity (an admin's `admit` transaction) and add its member
        (`LedgerClient.add_replica(peer_url)`) before starting it.
        """
        number = len(self.replicas) + 1
        issue_identity(self.pki_dir, f"ledger-{number}", "ledger", hosts=["localhost", LOOPBACK])
        urls = [r.peer_url if r.running else "" for r in self.replicas]
        urls.append(f"https://{LOOPBACK}:{self._port()}")
        return self.add_replica_config(number, urls, state="existing")

    def _port(self) -> int:
        port = free_port()
        self.ports.append(port)
        return port

    # --- processes ------------------------------------------------------------------------
    def start(self, *which: int, wait: bool = True) -> None:
        """Start replicas by index (default: all not running) and wait until they serve."""
        targets = [self.replicas[i] for i in which] if which else self.replicas
        for replica in targets:
            if not replica.running:
                self._spawn(replica)
        if wait:
            for replica in targets:
                self._wait_serving(replica)

    def _spawn(self, replica: ReplicaProcess) -> None:
        replica.log_path = self.root / f"{replica.name}.log"
        replica.log_offset = replica.log_path.stat().st_size if replica.log_path.exists() else 0
        log = open(replica.log_path, "a")  # noqa: SIM115 - owned by the child process
        argv = [sys.executable, "-m", "openswarm.cli.main", "ledger", "start",
                "--config", str(replica.config_path)]  # fmt: skip
        options = {"stdout": log, "stderr": subprocess.STDOUT, "text": True,
                   "start_new_session": True}  # fmt: skip
        if self.spawner is not None:
            replica.process = self.spawner(replica, argv, **options)
        else:
            replica.process = subprocess.Popen(argv, **options)
        log.close()

    def _wait_serving(self, replica: ReplicaProcess, timeout_s: float = 90.0) -> None:
        """Until the replica answers its status RPC (as itself: a ledger identity). Any
        answer counts, a refusal too: a node that has not applied its own admission yet,
        or has halted, serves all the same. A replica that a spawner started elsewhere (in
        a network namespace this process cannot dial) is awaited by its log line instead."""
        deadline = time.monotonic() + timeout_s
        with LedgerClient([replica.grpc_address], self.identity(replica.name),
                          timeout_s=2) as client:  # fmt: skip
            while time.monotonic() < deadline:
                if replica.process is not None and replica.process.poll() is not None:
                    assert replica.log_path is not None
                    raise LedgerError(
                        f"{replica.name} exited with {replica.process.returncode}: "
                        f"{replica.log_path.read_text(errors='replace')[-2000:]}"
                    )
                if self.spawner is not None:
                    if self._logged_serving(replica):
                        return
                    time.sleep(0.05)
                    continue
                try:
                    client.status()
                    return
                except LedgerError as exc:
                    if not exc.transient:
                        return
                    time.sleep(0.05)
        raise LedgerError(f"{replica.name} did not start within {timeout_s:.0f} s")

    @staticmethod
    def _logged_serving(replica: ReplicaProcess) -> bool:
        assert replica.log_path is not None
        with open(replica.log_path, errors="replace") as log:
            log.seek(replica.log_offset)
            return "serving on" in log.read()

    def wait_ready(self, client_name: str = "admin", timeout_s: float = 60.0) -> None:
        """Block until every running replica has quorum and ledger time."""
        deadline = time.monotonic() + timeout_s
        last = ""
        pending = [r for r in self.replicas if r.running]
        while pending and time.monotonic() < deadline:
            replica = pending[0]
            try:
                with LedgerClient([replica.grpc_address], self.identity(client_name),
                                  timeout_s=2) as client:  # fmt: skip
                    status = client.status()
                if status["has_quorum"] and status["ledger_time"] > 0:
                    pending.pop(0)
                    continue
                last = (
                    f"{replica.name}: quorum {status['has_quorum']}, time {status['ledger_time']}"
                )
            except LedgerError as exc:
                last = str(exc)
            time.sleep(0.1)
        if pending:
            raise LedgerError(f"ledger not ready within {timeout_s:.0f} s ({last})")

    def kill(self, index: int) -> None:
        """SIGKILL one replica (a crash, not a clean stop)."""
        replica = self.replicas[index]
        if replica.process is not None and replica.process.poll() is None:
            os.killpg(replica.process.pid, signal.SIGKILL)
            replica.process.wait()

    def stop(self, index: int | None = None, timeout_s: float = 10.0) -> None:
        """Stop one replica (or all) with SIGTERM, then SIGKILL if it lingers."""
        targets = self.replicas if index is None else [self.replicas[index]]
        for replica in targets:
            if replica.running and replica.process is not None:
                os.killpg(replica.process.pid, signal.SIGTERM)
        for replica in targets:
            if replica.process is None:
                continue
            try:
                replica.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(replica.process.pid, signal.SIGKILL)
                replica.process.wait()

    def close(self) -> None:
        """Stop every replica and release the network's port reservations (for good: a
        later start would run on ports that another run may have taken)."""
        self.stop()
        for port in self.ports:
            release_port(port)
        self.ports.clear()

    def __enter__(self) -> LocalLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
