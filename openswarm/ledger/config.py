"""A ledger node's YAML configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration that cannot start a replica; the message names the key and the fix."""


@dataclass(frozen=True)
class EtcdSettings:
    """Where the ledger's records are ordered: an etcd cluster, and optionally the member
    this node starts and supervises itself (managed) rather than one run by others."""

    endpoints: tuple[str, ...]
    prefix: str
    identity: Path | None = None  # client identity for an external cluster (ledger role)
    binary: str = "etcd"
    member_name: str | None = None  # set: managed member
    member_data_dir: Path | None = None
    client_url: str = ""
    peer_url: str = ""
    initial_cluster: tuple[tuple[str, str], ...] = ()
    cluster_state: str = "new"
    quota_bytes: int = 2 * 1024**3

    @property
    def managed(self) -> bool:
        return self.member_name is not None


_REMOVED = {"raft", "partners", "raft_secret", "raft_secret_file"}
_KNOWN = {
    "data_dir", "listen", "identity", "genesis", "ca", "submit_timeout_s", "rate_per_s",
    "rate_burst", "tick_s", "etcd", "import_chain",
}  # fmt: skip
_ETCD_KNOWN = {"endpoints", "prefix", "identity", "bin", "member"}
_MEMBER_KNOWN = {
    "name", "data_dir", "client_url", "peer_url", "initial_cluster", "state", "quota_bytes",
}  # fmt: skip


@dataclass(frozen=True)
class LedgerConfig:
    """Where a ledger node keeps its data, where it listens, and how records are ordered
    (embedded when `etcd` is None)."""

    data_dir: Path
    listen: str
    identity: Path
    genesis: Path
    ca: Path | None = None
    submit_timeout_s: float = 5.0
    rate_per_s: float = 100.0  # calls a second one identity may make, sustained
    rate_burst: float = 200.0  # calls one identity may make at once
    tick_s: float = 1.0  # seconds between this node's clock ticks while the ledger is busy
    etcd: EtcdSettings | None = None
    import_chain: Path | None = None  # a chain to carry into a new etcd-backed ledger
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | str) -> LedgerConfig:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"ledger config {path} does not exist") from exc
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read ledger config {path}: {exc}") from exc
        return cls.from_dict(raw, base=path.parent, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, *, base: Path = Path("."), source: str = "config") -> LedgerConfig:
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping of settings")
        removed = sorted(set(raw) & _REMOVED)
        if removed:
            raise ConfigError(
                f"{source}: {', '.join(removed)}: Raft settings are gone; the ledger is ordered "
                "by etcd (an 'etcd:' section) or, on one machine, embedded (no section)"
            )
        _no_unknown(raw, _KNOWN, source)

        def need(key: str) -> Any:
            if raw.get(key) in (None, ""):
                raise ConfigError(f"{source}: setting {key!r} is required")
            return raw[key]

        def path_of(key: str, where: dict[str, Any] = raw) -> Path:
            value = Path(str(where[key])).expanduser()
            return value if value.is_absolute() else (base / value)

        _check_address(need("listen"), f"{source}: listen")
        for key in ("data_dir", "identity", "genesis"):
            need(key)
        numbers = {key: raw.get(key, default) for key, default, low in _NUMBERS}
        for key, _, low in _NUMBERS:
            value = numbers[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
                raise ConfigError(f"{source}: {key} must be a number ≥ {low:g}, got {value!r}")
        data_dir = path_of("data_dir")
        identity = path_of("identity")
        etcd = None
        if raw.get("import_chain") and raw.get("etcd") is None:
            raise ConfigError(
                f"{source}: import_chain carries a chain into an etcd-backed ledger; an "
                "embedded node takes a chain by copying it into its data_dir"
            )
        if raw.get("etcd") is not None:
            etcd = _etcd_settings(raw["etcd"], data_dir, identity.name, base, f"{source}: etcd")
        return cls(
            data_dir=data_dir,
            listen=raw["listen"],
            identity=identity,
            genesis=path_of("genesis"),
            ca=path_of("ca") if raw.get("ca") else None,
            submit_timeout_s=float(numbers["submit_timeout_s"]),
            rate_per_s=float(numbers["rate_per_s"]),
            rate_burst=float(numbers["rate_burst"]),
            tick_s=float(numbers["tick_s"]),
            etcd=etcd,
            import_chain=path_of("import_chain") if raw.get("import_chain") else None,
        )


_NUMBERS = (("submit_timeout_s", 5.0, 0.01), ("rate_per_s", 100.0, 1.0),
            ("rate_burst", 200.0, 1.0), ("tick_s", 1.0, 0.05))  # fmt: skip


def _no_unknown(raw: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        listed = ", ".join(sorted(known))
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {listed}")


def _etcd_settings(
    raw: Any, data_dir: Path, node_name: str, base: Path, where: str
) -> EtcdSettings:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping (endpoints, prefix, identity, bin, member)")
    _no_unknown(raw, _ETCD_KNOWN, where)
    prefix = raw.get("prefix", "")
    if not isinstance(prefix, str) or (prefix and not prefix.endswith("/")):
        raise ConfigError(f"{where}: prefix must be a string ending in '/', got {prefix!r}")
    binary = raw.get("bin", "etcd")
    if not isinstance(binary, str) or not binary:
        raise ConfigError(f"{where}: bin must be the etcd binary's name or path")
    identity = None
    if raw.get("identity"):
        value = Path(str(raw["identity"])).expanduser()
        identity = value if value.is_absolute() else base / value
    member = raw.get("member")
    endpoints = raw.get("endpoints") or []
    if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
        raise ConfigError(f"{where}: endpoints must be a list of https://HOST:PORT client URLs")
    for url in endpoints:
        _check_url(url, f"{where}: endpoints")
    if member is None:
        if not endpoints:
            raise ConfigError(
                f"{where}: give the external cluster's 'endpoints', or a 'member' section to "
                "start a managed etcd member beside this node"
            )
        return EtcdSettings(endpoints=tuple(endpoints), prefix=prefix, identity=identity,
                            binary=binary)  # fmt: skip
    if not isinstance(member, dict):
        raise ConfigError(f"{where}: member must be a mapping")
    _no_unknown(member, _MEMBER_KNOWN, f"{where}: member")
    name = str(member.get("name") or node_name)
    client_url, peer_url = member.get("client_url"), member.get("peer_url")
    _check_url(client_url, f"{where}: member.client_url")
    _check_url(peer_url, f"{where}: member.peer_url")
    host = str(client_url)[len("https://") :].rpartition(":")[0].strip("[]")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(
            f"{where}: member.client_url must listen on loopback (https://127.0.0.1:PORT): "
            "etcd's client port accepts any certificate of the swarm, so only the ledger "
            "node beside it may reach it"
        )
    cluster = member.get("initial_cluster") or {name: peer_url}
    if not isinstance(cluster, dict) or not cluster:
        raise ConfigError(f"{where}: member.initial_cluster must map member names to peer URLs")
    for url in cluster.values():
        _check_url(url, f"{where}: member.initial_cluster")
    if name not in cluster:
        raise ConfigError(f"{where}: member.initial_cluster lacks this member ({name!r})")
    state = member.get("state", "new")
    if state not in ("new", "existing"):
        raise ConfigError(f"{where}: member.state must be 'new' or 'existing', got {state!r}")
    quota = member.get("quota_bytes", 2 * 1024**3)
    if isinstance(quota, bool) or not isinstance(quota, int) or quota < 16 * 1024**2:
        raise ConfigError(f"{where}: member.quota_bytes must be an integer ≥ 16 MiB")
    member_dir = member.get("data_dir")
    if member_dir:
        member_path = Path(str(member_dir)).expanduser()
        member_path = member_path if member_path.is_absolute() else base / member_path
    else:
        member_path = data_dir / "etcd"
    return EtcdSettings(
        endpoints=tuple(endpoints) or (str(client_url),),
        prefix=prefix,
        identity=identity,
        binary=binary,
        member_name=name,
        member_data_dir=member_path,
        client_url=str(client_url),
        peer_url=str(peer_url),
        initial_cluster=tuple(sorted((str(k), str(v)) for k, v in cluster.items())),
        cluster_state=state,
        quota_bytes=quota,
    )


def _check_url(value: Any, where: str) -> None:
    if not isinstance(value, str) or not value.startswith("https://"):
        raise ConfigError(f"{where}: {value!r} is not an https://HOST:PORT URL (etcd runs on TLS)")
    _check_address(value[len("https://") :].rstrip("/"), where)


def _check_address(value: Any, where: str) -> None:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{where}: {value!r} is not a host:port address")
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{where}: {value!r} is not a host:port address")
