"""Swarm settings of a peer and where it finds the network (config file or environment)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from openswarm import DEFAULT_CONTRACT

CONTRIBUTIONS = ("inactive", "snapshot", "active")


class SwarmConfigError(ValueError):
    """Swarm settings or network configuration that cannot work; names the fix."""


@dataclass(frozen=True)
class SwarmSettings:
    """How this peer takes part in rounds of one training contract."""

    contract: str = DEFAULT_CONTRACT
    min_peers: int = 2
    merge_method: str = "mean"
    merge_options: Mapping[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    leader_timeout_s: float = 20.0
    extra_window_s: float = 2.0
    contribution: str = "snapshot"
    poll_s: float = 0.05
    adaptive_sync: Mapping[str, int] | None = None  # {"start", "min", "max"} batches

    def __post_init__(self) -> None:
        if not isinstance(self.min_peers, int) or self.min_peers < 1:
            raise SwarmConfigError(f"min_peers must be an integer ≥ 1, got {self.min_peers!r}")
        if self.weight < 0:
            raise SwarmConfigError(f"node weight must be ≥ 0, got {self.weight!r}")
        if self.contribution not in CONTRIBUTIONS:
            raise SwarmConfigError(
                f"contribution after finishing must be one of {CONTRIBUTIONS}, "
                f"got {self.contribution!r}"
            )
        if self.leader_timeout_s <= 0 or self.extra_window_s < 0:
            raise SwarmConfigError("leader_timeout_s must be > 0 and extra_window_s ≥ 0")
        from openswarm.merge import MERGE_METHODS

        if self.merge_method not in MERGE_METHODS:
            raise SwarmConfigError(
                f"unknown merge method {self.merge_method!r}; use one of "
                f"{', '.join(sorted(MERGE_METHODS))}"
            )

    def contract_settings(self) -> dict[str, Any]:
        """What the contract records and every peer must agree on."""
        return {
            "min_peers": self.min_peers,
            "merge_method": self.merge_method,
            "merge_options": dict(self.merge_options),
            "leader_timeout_s": self.leader_timeout_s,
            "adaptive_sync": None if self.adaptive_sync is None else dict(self.adaptive_sync),
        }


@dataclass(frozen=True)
class NetworkConfig:
    """Where the ledger is, which identity to use, and where to serve snapshots."""

    ledger: tuple[str, ...]
    identity: Path
    listen: str = "127.0.0.1:0"
    contract: str | None = None
    advertise: str | None = None  # host other sites reach this one at (listen on 0.0.0.0)

    @classmethod
    def load(cls, path: Path | str | None = None) -> NetworkConfig:
        """From a YAML file (`path` or $OPENSWARM_CONFIG), overridden by OPENSWARM_* variables."""
        values: dict[str, Any] = {}
        source = path or os.environ.get("OPENSWARM_CONFIG")
        if source:
            try:
                loaded = yaml.safe_load(Path(source).read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise SwarmConfigError(f"cannot read swarm config {source}: {exc}") from exc
            if not isinstance(loaded, dict):
                raise SwarmConfigError(f"swarm config {source} must be a mapping")
            values.update(loaded)
        for key in ("ledger", "identity", "listen", "contract", "advertise"):
            env = os.environ.get(f"OPENSWARM_{key.upper()}")
            if env:
                values[key] = env
        ledger = values.get("ledger")
        if isinstance(ledger, str):
            ledger = [e.strip() for e in ledger.split(",") if e.strip()]
        if not ledger:
            raise SwarmConfigError(
                "no ledger to talk to: set OPENSWARM_LEDGER=host:port[,host:port…] or 'ledger' "
                "in the file named by OPENSWARM_CONFIG (openswarm run sets it for you)"
            )
        if not values.get("identity"):
            raise SwarmConfigError(
                "no identity: set OPENSWARM_IDENTITY to this site's identity folder (made by "
                "'openswarm pki issue … --role peer') or 'identity' in the config file"
            )
        return cls(
            ledger=tuple(ledger),
            identity=Path(values["identity"]),
            listen=str(values.get("listen") or "127.0.0.1:0"),
            advertise=values.get("advertise"),
            contract=values.get("contract"),
        )
