"""A ledger replica's YAML configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration that cannot start a replica; the message names the key and the fix."""


@dataclass(frozen=True)
class LedgerConfig:
    """Where a replica keeps its data, where it listens, and who its Raft partners are."""

    data_dir: Path
    listen: str
    raft: str
    partners: tuple[str, ...]
    identity: Path
    genesis: Path
    raft_secret: str
    ca: Path | None = None
    submit_timeout_s: float = 5.0
    rate_per_s: float = 100.0  # calls a second one identity may make, sustained
    rate_burst: float = 200.0  # calls one identity may make at once
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
        known = {
            "data_dir", "listen", "raft", "partners", "identity", "genesis", "raft_secret",
            "raft_secret_file", "ca", "submit_timeout_s", "rate_per_s", "rate_burst",
        }  # fmt: skip
        unknown = sorted(set(raw) - known)
        if unknown:
            listed = ", ".join(sorted(known))
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {listed}")

        def need(key: str) -> Any:
            if raw.get(key) in (None, ""):
                raise ConfigError(f"{source}: setting {key!r} is required")
            return raw[key]

        def path_of(key: str) -> Path:
            value = Path(str(need(key))).expanduser()
            return value if value.is_absolute() else (base / value)

        for key in ("listen", "raft"):
            _check_address(need(key), f"{source}: {key}")
        partners = raw.get("partners") or []
        if not isinstance(partners, list):
            raise ConfigError(f"{source}: 'partners' must be a list of host:port Raft addresses")
        for partner in partners:
            _check_address(partner, f"{source}: partners")
        secret = raw.get("raft_secret")
        if raw.get("raft_secret_file"):
            secret_path = path_of("raft_secret_file")
            try:
                secret = secret_path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"{source}: cannot read raft_secret_file: {exc}") from exc
        if not isinstance(secret, str) or len(secret) < 16:
            raise ConfigError(
                f"{source}: 'raft_secret' (or 'raft_secret_file') must hold a secret of at least "
                "16 characters shared by all replicas; it encrypts Raft traffic"
            )
        timeout = raw.get("submit_timeout_s", 5.0)
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"{source}: submit_timeout_s must be a positive number")
        rates = {key: raw.get(key, default) for key, default in
                 (("rate_per_s", 100.0), ("rate_burst", 200.0))}  # fmt: skip
        for key, value in rates.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
                raise ConfigError(f"{source}: {key} must be a number ≥ 1, got {value!r}")
        return cls(
            rate_per_s=float(rates["rate_per_s"]),
            rate_burst=float(rates["rate_burst"]),
            data_dir=path_of("data_dir"),
            listen=raw["listen"],
            raft=raw["raft"],
            partners=tuple(partners),
            identity=path_of("identity"),
            genesis=path_of("genesis"),
            raft_secret=secret,
            ca=path_of("ca") if raw.get("ca") else None,
            submit_timeout_s=float(timeout),
        )


def _check_address(value: Any, where: str) -> None:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{where}: {value!r} is not a host:port address")
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{where}: {value!r} is not a host:port address")
