"""A managed etcd member: started and supervised beside a ledger node.

The member uses the node's identity folder for mutual TLS on both its ports. Its peer port
accepts only certificates of the swarm's CA that carry the ledger role's name
(`ledger.role.openswarm.invalid`); its client port listens on loopback only (the config
refuses anything else), so only the ledger node beside it talks to etcd: peers, admins
and tools reach the ledger service, never etcd. etcd comes from the system (`etcd` on
PATH, or `bin` in the config); its version is checked first, and releases with known
data-loss bugs are refused.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from openswarm.pki import role_host
from openswarm.pki.ca import CA_CERT, IDENTITY_CERT, IDENTITY_KEY

MIN_VERSION = (3, 4, 0)
#: etcd releases that lose or corrupt data; the reason shown when one is found.
BAD_VERSIONS: tuple[tuple[tuple[int, int, int], tuple[int, int, int], str], ...] = (
    (
        (3, 5, 0),
        (3, 5, 2),
        "may lose committed writes after a crash (etcd 3.5.0-3.5.2 "
        "data inconsistency bug); use 3.4.x or 3.5.3 and later",
    ),
)


class EtcdSetupError(RuntimeError):
    """etcd is missing, too old or known to be broken, or failed to start."""


def etcd_version(binary: str) -> tuple[int, int, int]:
    """The version of the etcd binary `binary` (a name on PATH or a path)."""
    path = shutil.which(binary)
    if path is None:
        raise EtcdSetupError(
            f"etcd binary {binary!r} not found: install etcd (Debian/Ubuntu: 'apt-get install "
            "etcd-server', or an official release) or pass --etcd-bin / etcd.bin in the config"
        )
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EtcdSetupError(f"cannot run {path} --version: {exc}") from exc
    return parse_version(out.stdout + out.stderr, path)


def parse_version(text: str, where: str = "etcd") -> tuple[int, int, int]:
    found = re.search(r"etcd Version:\s*(\d+)\.(\d+)\.(\d+)", text) or re.search(
        r"^(\d+)\.(\d+)\.(\d+)", text.strip()
    )
    if found is None:
        raise EtcdSetupError(f"{where} did not report an etcd version: {text[:200]!r}")
    return (int(found[1]), int(found[2]), int(found[3]))


def check_version(version: tuple[int, int, int], where: str = "etcd") -> None:
    shown = ".".join(map(str, version))
    if version < MIN_VERSION:
        raise EtcdSetupError(f"{where} is version {shown}; the ledger needs etcd 3.4 or later")
    for low, high, why in BAD_VERSIONS:
        if low <= version <= high:
            raise EtcdSetupError(f"{where} is version {shown}, which {why}")


@dataclass(frozen=True)
class MemberSpec:
    """Where one managed member lives and whom it clusters with."""

    name: str
    data_dir: Path
    client_url: str
    peer_url: str
    initial_cluster: tuple[tuple[str, str], ...]  # (name, peer URL) of every first member
    state: str  # "new" or "existing"
    cluster_token: str
    identity_dir: Path
    binary: str = "etcd"
    quota_bytes: int = 2 * 1024**3


def member_args(spec: MemberSpec, binary_path: str) -> list[str]:
    ident = spec.identity_dir
    cert, key, ca = (str(ident / IDENTITY_CERT), str(ident / IDENTITY_KEY), str(ident / CA_CERT))
    allowed = role_host("ledger")
    cluster = ",".join(f"{name}={url}" for name, url in spec.initial_cluster)
    return [
        binary_path,
        "--name", spec.name,
        "--data-dir", str(spec.data_dir),
        "--listen-client-urls", spec.client_url,
        "--advertise-client-urls", spec.client_url,
        "--listen-peer-urls", spec.peer_url,
        "--initial-advertise-peer-urls", spec.peer_url,
        "--initial-cluster", cluster,
        "--initial-cluster-state", spec.state,
        "--initial-cluster-token", spec.cluster_token,
        "--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca,
        "--client-cert-auth",
        "--peer-cert-file", cert, "--peer-key-file", key, "--peer-trusted-ca-file", ca,
        "--peer-client-cert-auth", "--peer-cert-allowed-hostname", allowed,
        "--quota-backend-bytes", str(spec.quota_bytes),
        "--max-request-bytes", str(4 * 1024 * 1024),
        "--max-txn-ops", "2048",  # archiving deletes old records in large batches
        "--logger", "zap", "--log-level", "warn",
    ]  # fmt: skip


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the ledger node dies (Linux prctl)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class EtcdMember:
    """One running etcd member process, owned by the ledger node that started it."""

    def __init__(self, spec: MemberSpec, log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        path = shutil.which(self.spec.binary)
        if path is None:
            etcd_version(self.spec.binary)  # raises with the install hint
            raise EtcdSetupError(f"etcd binary {self.spec.binary!r} not found")
        check_version(etcd_version(path), path)
        self.spec.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.spec.data_dir, 0o700)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                member_args(self.spec, path),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
