"""Swarm settings of a peer and where it finds the network (config file or environment)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from openswarm import DEFAULT_CONTRACT
from openswarm.protocol import (
    COMPRESSIONS,
    CONTRIBUTIONS,
    LEADER_TIMEOUT_S,
    MERGE_METHOD,
    MERGE_TOPOLOGIES,
    MIN_PEERS,
    PRESENCE_TIMEOUT_S,
    SERVER_OPTIMIZER_COMPRESSIONS,
    SERVER_OPTIMIZERS,
    WEIGHT_POLICIES,
    SwarmConfigError,
)

__all__ = ["MERGE_MEMORY", "NetworkConfig", "SwarmConfigError", "SwarmSettings"]

#: "model": a leader holds the snapshots it merges in memory; "layer": one layer at a time.
MERGE_MEMORY = ("model", "layer")


@dataclass(frozen=True)
class SwarmSettings:
    """How this peer takes part in rounds of one training contract."""

    contract: str = DEFAULT_CONTRACT
    min_peers: int = MIN_PEERS
    merge_method: str = MERGE_METHOD
    merge_options: Mapping[str, Any] = field(default_factory=dict)
    weight: float = 1.0  # declared weight (contracts with weight_policy declared): 1 to 100
    leader_timeout_s: float = LEADER_TIMEOUT_S
    extra_window_s: float = 2.0
    contribution: str = "snapshot"
    adaptive_sync: Mapping[str, int] | None = None  # {"start", "min", "max"} batches
    ledger_retry_s: float = 60.0  # how long to ride out an unreachable ledger before failing
    heartbeat_s: float = 5.0  # a signed presence call at least this often while running
    presence_timeout_s: float = PRESENCE_TIMEOUT_S  # silent on the ledger this long: gone
    lead: bool = True  # False: this site never leads a round (it still trains and votes)
    weight_policy: str | None = None  # for a contract this site creates; None: the default
    audit: int | None = None  # auditors per merge, for a contract this site creates
    compression: str | None = None  # how models travel, for a contract this site creates
    merge_topology: str | None = None  # leader or sharded, for a contract this site creates
    # masked updates (True, or {threshold, bound}), for a contract this site creates
    secure_aggregation: bool | Mapping[str, Any] | None = None
    audits: bool = True  # False: this site never audits a merge (it still trains and votes)
    # "layer": merges needing every snapshot at once (all but mean) keep the snapshots in
    # temporary files and hold one layer of each at a time (HPE's SL_RAM_INTENSIVE=False)
    merge_memory: str = "model"
    spill_dir: Path | None = None  # where those files go (None: the system's temp folder)

    def __post_init__(self) -> None:
        if not isinstance(self.min_peers, int) or self.min_peers < 1:
            raise SwarmConfigError(f"min_peers must be an integer ≥ 1, got {self.min_peers!r}")
        if not (1 <= self.weight <= 100 and float(self.weight).is_integer()):
            raise SwarmConfigError(
                f"node weight must be an integer from 1 to 100 (HPE's nodeWeightage range), "
                f"got {self.weight!r}"
            )
        if self.compression is not None and self.compression not in COMPRESSIONS:
            raise SwarmConfigError(
                f"compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}"
            )
        if self.merge_topology is not None and self.merge_topology not in MERGE_TOPOLOGIES:
            raise SwarmConfigError(
                f"merge_topology must be one of {', '.join(MERGE_TOPOLOGIES)}, "
                f"got {self.merge_topology!r}"
            )
        if self.weight_policy is not None and self.weight_policy not in WEIGHT_POLICIES:
            raise SwarmConfigError(
                f"weight_policy must be one of {', '.join(WEIGHT_POLICIES)}, "
                f"got {self.weight_policy!r}"
            )
        if self.merge_memory not in MERGE_MEMORY:
            raise SwarmConfigError(
                f"merge_memory must be one of {', '.join(MERGE_MEMORY)}, got {self.merge_memory!r}"
            )
        if self.contribution not in CONTRIBUTIONS:
            raise SwarmConfigError(
                f"contribution after finishing must be one of {CONTRIBUTIONS}, "
                f"got {self.contribution!r}"
            )
        if self.leader_timeout_s <= 0 or self.extra_window_s < 0:
            raise SwarmConfigError("leader_timeout_s must be > 0 and extra_window_s ≥ 0")
        if self.ledger_retry_s < 0 or self.heartbeat_s <= 0:
            raise SwarmConfigError("ledger_retry_s must be ≥ 0 and heartbeat_s > 0")
        if self.presence_timeout_s < 3 * self.heartbeat_s:
            raise SwarmConfigError(
                f"presence_timeout_s ({self.presence_timeout_s:g}) must be at least three "
                f"heartbeats ({3 * self.heartbeat_s:g} s), or live sites look gone"
            )
        from openswarm.merge import MERGE_METHODS, MergeInputError
        from openswarm.merge.server_opt import check_options, is_server_optimizer

        if self.merge_method not in MERGE_METHODS and not is_server_optimizer(self.merge_method):
            raise SwarmConfigError(
                f"unknown merge method {self.merge_method!r}; use one of "
                f"{', '.join(sorted(MERGE_METHODS))} or a server optimizer "
                f"({', '.join(SERVER_OPTIMIZERS)})"
            )
        if is_server_optimizer(self.merge_method):
            try:
                check_options(self.merge_method, self.merge_options)
            except MergeInputError as exc:
                raise SwarmConfigError(str(exc)) from None
            if self.merge_topology == "sharded":
                raise SwarmConfigError(
                    f"merge method {self.merge_method} needs merge_topology leader: its "
                    "optimizer state travels in the whole merged model, which one leader makes"
                )
            if self.compression not in (None, *SERVER_OPTIMIZER_COMPRESSIONS):
                raise SwarmConfigError(
                    f"merge method {self.merge_method} carries its optimizer state in the "
                    f"merged model, which compression {self.compression!r} would flush to "
                    f"zero; use one of {', '.join(SERVER_OPTIMIZER_COMPRESSIONS)}"
                )

    @property
    def server_optimizer(self) -> bool:
        """Whether the merge method is a server optimizer (state in the merged model)."""
        return self.merge_method in SERVER_OPTIMIZERS

    def contract_settings(self) -> dict[str, Any]:
        """What the contract records and every peer must agree on (the weight policy, the
        audit and the compression only when this site names them)."""
        chosen = {
            "min_peers": self.min_peers,
            "merge_method": self.merge_method,
            "merge_options": dict(self.merge_options),
            "leader_timeout_s": self.leader_timeout_s,
            "adaptive_sync": None if self.adaptive_sync is None else dict(self.adaptive_sync),
        }
        if self.weight_policy is not None:
            chosen["weight_policy"] = self.weight_policy
        if self.audit is not None:
            chosen["audit"] = self.audit
        if self.compression is not None:
            chosen["compression"] = self.compression
        if self.merge_topology is not None:
            chosen["merge_topology"] = self.merge_topology
        if self.secure_aggregation not in (None, False):
            chosen["secure_aggregation"] = (
                True if self.secure_aggregation is True else dict(self.secure_aggregation)
            )
        return chosen


@dataclass(frozen=True)
class NetworkConfig:
    """Where the ledger is, which identity to use, and where to serve snapshots."""

    ledger: tuple[str, ...]
    identity: Path
    listen: str = "127.0.0.1:0"
    contract: str | None = None
    advertise: str | None = None  # host other sites reach this one at (listen on 0.0.0.0)
    # An admin identity this site may use to create its contract if the ledger lacks it
    # (local runs, where one operator holds every identity); elsewhere admins create them.
    admin_identity: Path | None = None

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
        source = source or "the environment"
        for key in _KEYS:
            env = os.environ.get(f"OPENSWARM_{key.upper()}")
            if env:
                values[key] = env
        unknown = sorted(str(k) for k in values if k not in _KEYS)
        if unknown:
            raise SwarmConfigError(
                f"swarm config {source}: unknown key(s) {', '.join(unknown)}; known: "
                f"{', '.join(_KEYS)}"
            )
        for key in _KEYS:
            if key != "ledger" and values.get(key) is not None and not isinstance(values[key], str):
                raise SwarmConfigError(
                    f"swarm config {source}: '{key}' must be a single string, got "
                    f"{type(values[key]).__name__} {values[key]!r}"
                )
        ledger = values.get("ledger")
        if isinstance(ledger, str):
            ledger = [e.strip() for e in ledger.split(",") if e.strip()]
        if ledger is not None and (
            not isinstance(ledger, list) or not all(isinstance(e, str) and e for e in ledger)
        ):
            raise SwarmConfigError(
                f"swarm config {source}: 'ledger' must be host:port strings (a list, or one "
                f"comma-separated string), got {ledger!r}"
            )
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
            admin_identity=Path(values["admin_identity"]) if values.get("admin_identity") else None,
        )


_KEYS = ("ledger", "identity", "listen", "contract", "advertise", "admin_identity")
