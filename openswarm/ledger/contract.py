"""The training contract: a pure, deterministic state machine replicated on every ledger node.

Every replica applies the same calls in the same order and must reach the same state, so this
module does no I/O, reads no clock and draws no random numbers: the only time source is the
timestamp carried by each call, the only entropy the hash of the previous block.

A call the contract refuses raises :class:`ContractError` and leaves the state untouched: each
handler validates everything first and mutates only after the last check.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from openswarm.ledger.contract_checks import (
    ContractError,
    check_digest,
    check_endpoint,
    check_excluded,
    check_fields,
    check_int,
    check_name,
    check_number,
    check_str,
    compare_key,
    json_copy,
    type_name,
)
from openswarm.ledger.secure_rounds import (
    SecureRounds,
    check_ready_secagg,
    check_share_key,
    secure_aggregation_setting,
)
from openswarm.ledger.shards import ShardedRounds
from openswarm.ledger.weights import check_policy, member_weight
from openswarm.protocol import (
    CALL_TYPES,
    COMPRESSIONS,
    CONTRIBUTIONS,
    EVENT_KINDS,
    LEADER_TIMEOUT_S,
    MERGE_METHOD,
    MERGE_TOPOLOGIES,
    MIN_PEERS,
    PRESENCE_TIMEOUT_S,
    ROUND_CALLS,
    ROUND_PHASES,
    SECURE_AGGREGATION_DEFAULTS,
    SECURE_AGGREGATION_METHODS,
    SERVER_OPTIMIZER_COMPRESSIONS,
    SERVER_OPTIMIZERS,
    SHARDED_COMPRESSIONS,
    SHARDED_METHODS,
    WEIGHT_POLICY,
    server_optimizer_problem,
)

__all__ = [
    "CALL_TYPES",
    "SETTINGS_KEYS",
    "ContractCall",
    "ContractError",
    "ContractSettings",
    "TrainingContract",
    "leader_ranking",
]

_KEPT_MERGES = 8  # earlier merged models a voided merge can fall back to
#: Rounds of history and metrics a contract keeps in memory (and shows in its state), so that
#: a long run's ledger does not grow; the chain keeps every transaction of every round.
HISTORY_KEPT = 64
SETTINGS_KEYS = (
    "adaptive_sync", "audit", "compression", "leader_timeout_s", "merge_method",
    "merge_options", "merge_topology", "min_peers", "presence_timeout_s", "weight_policy",
    "weights", "secure_aggregation",
)  # fmt: skip
#: The most auditors a contract may ask for per merge.
MAX_AUDITORS = 15

#: Adaptive sync: a round's mean validation loss must fall by this fraction of the one
#: before for the sync interval to lengthen (x1.5, rounded up); otherwise it halves.
ADAPTIVE_TOLERANCE = 0.01


# --- public value types ------------------------------------------------------------------------


@dataclass(frozen=True)
class ContractCall:
    """One contract call, as carried by a transaction in a block."""

    type: str
    round: int
    sender: str
    payload: Mapping[str, Any]
    timestamp: float
    prev_hash: str
    height: int


@dataclass(frozen=True)
class ContractSettings:
    """Per-contract settings, fixed when the contract is created."""

    min_peers: int = MIN_PEERS
    merge_method: str = MERGE_METHOD
    merge_options: Mapping[str, Any] = field(default_factory=dict)
    leader_timeout_s: float = LEADER_TIMEOUT_S
    presence_timeout_s: float = PRESENCE_TIMEOUT_S  # who counts as live, in ledger time
    adaptive_sync: Mapping[str, int] | None = None  # {"start", "min", "max"} batches
    weight_policy: str = WEIGHT_POLICY  # equal, declared or fixed (ledger/weights.py)
    weights: Mapping[str, float] | None = None  # policy fixed: member -> weight
    audit: int = 0  # auditors who recompute each merge (odd); 0: the leader's word counts
    compression: str = "none"  # how models travel (codec/transport.py COMPRESSIONS)
    merge_topology: str = "leader"  # who merges: the leader, or every site a shard (shards.py)
    # masked updates, the merger learns only their sum: {threshold, bound} (secure_rounds.py)
    secure_aggregation: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise ContractError(
                f"compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}"
            )
        if self.merge_topology not in MERGE_TOPOLOGIES:
            raise ContractError(f"merge_topology must be one of {', '.join(MERGE_TOPOLOGIES)}, "
                                f"got {self.merge_topology!r}")  # fmt: skip
        if self.merge_topology == "sharded":
            _check_shardable(self)
        audit = check_int(self.audit, "audit", minimum=0)
        if audit > MAX_AUDITORS or (audit and audit % 2 == 0):
            raise ContractError(
                f"audit must be 0 or an odd number up to {MAX_AUDITORS} (a majority of the "
                f"auditors decides), got {audit}"
            )
        object.__setattr__(self, "weights", check_policy(self.weight_policy, self.weights))
        if self.adaptive_sync is not None:
            object.__setattr__(self, "adaptive_sync", _check_adaptive(self.adaptive_sync))
        check_int(self.min_peers, "min_peers", minimum=1)
        check_str(self.merge_method, "merge_method")
        timeout = check_number(self.leader_timeout_s, "leader_timeout_s")
        if timeout <= 0:
            raise ContractError(f"leader_timeout_s must be > 0, got {timeout!r}")
        presence = check_number(self.presence_timeout_s, "presence_timeout_s")
        if presence <= 0:
            raise ContractError(f"presence_timeout_s must be > 0, got {presence!r}")
        object.__setattr__(self, "presence_timeout_s", presence)
        if not isinstance(self.merge_options, Mapping):
            raise ContractError(
                f"merge_options must be an object, got {type_name(self.merge_options)}"
            )
        options = json_copy(self.merge_options, "merge_options")
        object.__setattr__(self, "leader_timeout_s", timeout)
        object.__setattr__(self, "merge_options", MappingProxyType(options))
        if self.merge_method in SERVER_OPTIMIZERS:
            _check_server_optimizer(self)
        secure = secure_aggregation_setting(self.secure_aggregation, SECURE_AGGREGATION_DEFAULTS)
        object.__setattr__(self, "secure_aggregation", secure)
        if secure is not None:
            _check_secure_aggregation(self)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ContractSettings:
        """Settings from the optional keys of ``payload`` (other keys are ignored)."""
        if not isinstance(payload, Mapping):
            raise ContractError(f"settings must be an object, got {type_name(payload)}")
        return cls(**{key: payload[key] for key in SETTINGS_KEYS if key in payload})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe copy, keys sorted."""
        return {
            "adaptive_sync": None if self.adaptive_sync is None else dict(self.adaptive_sync),
            "audit": self.audit,
            "compression": self.compression,
            "leader_timeout_s": self.leader_timeout_s,
            "merge_method": self.merge_method,
            "merge_options": json_copy(self.merge_options, "merge_options"),
            "merge_topology": self.merge_topology,
            "min_peers": self.min_peers,
            "presence_timeout_s": self.presence_timeout_s,
            "weight_policy": self.weight_policy,
            "weights": None if self.weights is None else dict(self.weights),
        } | (
            {} if self.secure_aggregation is None
            else {"secure_aggregation": dict(self.secure_aggregation)}
        )  # fmt: skip


def leader_ranking(
    prev_hash: str, contract: str, round: int, participants: Sequence[str]
) -> list[str]:
    """Participants ordered by sha256 of ``prev_hash|contract|round|name``, ties by name."""

    def key(name: str) -> tuple[str, str]:
        text = f"{prev_hash}|{contract}|{round}|{name}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest(), name

    return sorted(participants, key=key)


# --- the state machine -------------------------------------------------------------------------


@dataclass
class _Member:
    endpoint: str
    weight: float
    registered_at: float
    finished: bool = False
    active: bool = True
    contribution: str | None = None  # what it gives to rounds after finishing
    last_seen: float = 0.0  # timestamp of its latest accepted call (heartbeats included)
    leads: bool = True  # False: registered with lead=false, never leads a round
    audits: bool = True  # False: registered with audits=false, never audits a merge
    share_key: str | None = None  # what secure aggregation's shares are sealed to (hex)

    def to_dict(self) -> dict[str, Any]:
        extra = {} if self.share_key is None else {"share_key": self.share_key}
        return extra | {
            "active": self.active,
            "audits": self.audits,
            "contribution": self.contribution,
            "endpoint": self.endpoint,
            "finished": self.finished,
            "last_seen": self.last_seen,
            "leads": self.leads,
            "registered_at": self.registered_at,
            "weight": self.weight,
        }


class TrainingContract(ShardedRounds, SecureRounds):
    """State machine of one training contract: members, sync rounds, leaders, merges.

    Semantic choices beyond the call list:

    - Every call but ``register`` needs a registered, active member; a member that left must
      register again.
    - ``ready`` may be repeated before the seal; the later digest replaces the earlier one.
    - ``register`` again (a restarted peer) or ``leave`` withdraws the member's readiness for an
      unsealed round and removes it from the holders of the latest merged model, since a new
      or gone process serves neither.
    - Repeating ``finished`` or ``loaded`` is refused (nothing would change).
    - ``metrics`` may name any round from 1 to the current one; a later report replaces an
      earlier one for the same round and member.
    - ``all_finished`` needs at least one active member, and every active member finished.
    - ``registered_at`` is the time of the member's latest ``register``.
    - A leader that leaves keeps its place until a ``leader_timeout`` moves past it.
    - Every accepted call of a member (``heartbeat`` too) sets its ``last_seen``: presence is
      judged from signed calls on the ledger, never from a network probe.
    - A merged model can be voided after the fact, falling back to the one before it:
      ``merge_unavailable`` (one participant suffices) once ``leader_timeout_s`` has passed
      since the merge and nobody but its leader holds it (the leader died before handing it
      over); ``merge_refused`` once a majority of the round's other participants refused it
      as malformed, which also moves that leader to the end of later rankings.
    """

    def __init__(self, name: str, settings: ContractSettings) -> None:
        self._name = check_name(name, "contract name")
        if not isinstance(settings, ContractSettings):
            raise ContractError("settings must be ContractSettings")
        self._settings = settings
        self._members: dict[str, _Member] = {}
        self._round = 1
        self._latest_merged: dict[str, Any] | None = None
        # round -> record, for the last HISTORY_KEPT rounds and the merges one can fall back to
        self._history: dict[int, dict[str, Any]] = {}
        self._started_at: float | None = None  # when the first round was sealed
        self._merged_rounds = 0  # rounds that ended with a merged model (voided ones too)
        self._earlier_merges: list[dict[str, Any]] = []  # latest_merged records it replaced
        self._refusals: dict[str, str] = {}  # who refused the latest merged model, and why
        self._demoted: list[str] = []  # leaders whose merges a majority refused or rejected
        self._bad_auditors: list[str] = []  # auditors the majority of an audit contradicted
        self._metrics: dict[int, dict[str, dict[str, Any]]] = {}
        adaptive = settings.adaptive_sync
        self._sync_interval: int | None = None if adaptive is None else adaptive["start"]
        self._open_round()

    def _open_round(self) -> None:
        self._ready: dict[str, dict[str, Any]] = {}
        self._sealed = False
        self._sealed_at: float | None = None
        self._participants: list[str] = []
        self._ranking: list[str] = []
        self._leader_index: int | None = None
        self._leader_since: float | None = None
        self._failed_leaders: list[str] = []
        self._timeout_votes: list[str] = []  # who voted the current leader out, in order
        self._audit: dict[str, Any] | None = None  # the leader's merge awaiting its auditors
        self._rejected: list[dict[str, Any]] = []  # merges of this round its audits rejected
        self._vetoers: list[str] = []  # barred from auditing again this round (see _settle_audit)
        self._secagg: dict[str, Any] | None = None  # a masked round's phases (secure_rounds.py)
        self._reset_shards()

    # --- read-only views ---

    @property
    def name(self) -> str:
        """The contract's name."""
        return self._name

    @property
    def settings(self) -> ContractSettings:
        """The contract's settings."""
        return self._settings

    @property
    def current_round(self) -> int:
        """The round now open (or sealed and awaiting its merge)."""
        return self._round

    @property
    def sealed(self) -> bool:
        """Whether the current round is sealed."""
        return self._sealed

    @property
    def participants(self) -> list[str]:
        """Sorted participants of the sealed current round (empty before the seal)."""
        return list(self._participants)

    @property
    def ranking(self) -> list[str]:
        """Leader ranking of the sealed current round (empty before the seal)."""
        return list(self._ranking)

    @property
    def leader(self) -> str | None:
        """The current leader of the current round, if it is sealed."""
        if self._leader_index is None:
            return None
        return self._ranking[self._leader_index]

    @property
    def latest_merged(self) -> dict[str, Any] | None:
        """``{round, digest, size, leader, holders}`` of the last merge, or None."""
        return json_copy(self._latest_merged, "latest_merged")

    @property
    def all_finished(self) -> bool:
        """True when there is an active member and every active member has finished."""
        active = [m for m in self._members.values() if m.active]
        return bool(active) and all(m.finished for m in active)

    def expel(self, name: str) -> None:
        """Deactivate a revoked identity: it offers nothing to rounds and holds nothing."""
        member = self._members.get(name)
        if member is not None and member.active:
            self._withdraw(name)
            member.active = False

    def is_member(self, name: str) -> bool:
        """Whether ``name`` has registered (active or not)."""
        return name in self._members

    def snapshot(self, recent: int | None = None) -> dict[str, Any]:
        """The state as JSON-safe data with deterministic ordering: all of it, or with only
        the last `recent` rounds of history and metrics (so that what a peer reads each
        round does not grow with the run)."""
        records = list(self._history.values())
        history = records if recent is None else records[-recent:] if recent else []
        rounds = sorted(self._metrics)
        if recent is not None:
            rounds = rounds[-recent:] if recent else []
        return {
            "all_finished": self.all_finished,
            "bad_auditors": list(self._bad_auditors),
            "contract": self._name,
            "demoted": list(self._demoted),
            "current": {
                "audit": json_copy(self._audit, "audit"),
                "failed_leaders": list(self._failed_leaders),
                "leader": self.leader,
                "leader_index": self._leader_index,
                "leader_since": self._leader_since,
                "participants": list(self._participants),
                "ranking": list(self._ranking),
                "ready": {n: dict(sorted(self._ready[n].items())) for n in sorted(self._ready)},
                "sealed": self._sealed,
                "sealed_at": self._sealed_at,
                "secagg": self._secagg_view(),
                "shard_excluded": json_copy(self._shard_excluded, "shard_excluded"),
                "shards": json_copy(self._shards_view(), "shards"),
                "timeout_votes": list(self._timeout_votes),
            },
            "finished": sorted(n for n, m in self._members.items() if m.finished),
            "history": json_copy(history, "history"),
            "latest_merged": self.latest_merged,
            "members": {n: self._members[n].to_dict() for n in sorted(self._members)},
            "merged_rounds": self._merged_rounds,
            "metrics": {
                str(r): {n: dict(sorted(v.items())) for n, v in sorted(self._metrics[r].items())}
                for r in rounds
            },
            "round": self._round,
            "settings": self._settings.to_dict(),
            "started_at": self._started_at,
            "sync_interval": self._sync_interval,
        }

    # --- applying calls ---

    def apply(self, call: ContractCall) -> dict[str, Any]:
        """Apply one call; returns ``{"events": [...], "round": ..., "leader": ...}``.

        Raises ContractError, with the state unchanged, when the call is refused.
        """
        if not isinstance(call, ContractCall):
            raise ContractError("call must be a ContractCall")
        if not isinstance(call.type, str):
            raise ContractError(f"call type must be a string, got {type_name(call.type)}")
        if call.type not in CALL_TYPES:
            raise ContractError(f"unknown call type {call.type!r}")
        check_str(call.sender, "sender")
        check_number(call.timestamp, "timestamp")
        if not isinstance(call.prev_hash, str):
            raise ContractError(f"prev_hash must be a string, got {type_name(call.prev_hash)}")
        check_int(call.height, "height", minimum=0)
        if not isinstance(call.payload, Mapping):
            raise ContractError(f"payload must be an object, got {type_name(call.payload)}")
        for key in call.payload:
            if not isinstance(key, str):
                raise ContractError(f"payload keys must be strings, got {type_name(key)}")
        if call.type in ROUND_CALLS:
            check_int(call.round, "round", minimum=1)
        if call.type != "register":
            self._require_active(call.sender)

        handler: Callable[[ContractCall], list[dict[str, Any]]] = getattr(self, f"_on_{call.type}")
        events = handler(call)
        member = self._members.get(call.sender)
        if member is not None:
            member.last_seen = max(member.last_seen, call.timestamp)
        return {"events": events, "round": self._round, "leader": self.leader}

    def _event(self, kind: str, call: ContractCall, **fields: Any) -> dict[str, Any]:
        assert kind in EVENT_KINDS, kind
        return {"kind": kind, "contract": self._name, "height": call.height, **fields}

    def _require_active(self, sender: str) -> None:
        member = self._members.get(sender)
        if member is None:
            raise ContractError(f"{sender} is not a member of {self._name}; register first")
        if not member.active:
            raise ContractError(f"{sender} has left {self._name}; register again")

    def _require_current(self, round: int) -> None:
        if round != self._round:
            raise ContractError(f"round {round} is not open; current round is {self._round}")

    def _require_sealed(self, round: int) -> None:
        self._require_current(round)
        if not self._sealed:
            raise ContractError(f"round {round} is not sealed")

    def _withdraw(self, name: str) -> None:
        """Forget what a member's old process offered: unsealed readiness, merged copy."""
        if not self._sealed:
            self._ready.pop(name, None)
        if self._latest_merged is not None and name in self._latest_merged["holders"]:
            self._latest_merged["holders"].remove(name)

    def _all_finished_events(
        self, call: ContractCall, was_all_finished: bool
    ) -> list[dict[str, Any]]:
        if self.all_finished and not was_all_finished:
            return [self._event("all_finished", call)]
        return []

    def _on_register(self, call: ContractCall) -> list[dict[str, Any]]:
        payload = call.payload
        check_fields(payload, "register", ("endpoint",),
                     ("weight", "lead", "audits", "share_key", *SETTINGS_KEYS))  # fmt: skip
        endpoint = check_endpoint(payload["endpoint"], "payload.endpoint")
        leads = payload.get("lead", True)
        if not isinstance(leads, bool):
            raise ContractError(f"payload.lead must be true or false, got {type_name(leads)}")
        audits = payload.get("audits", True)
        if not isinstance(audits, bool):
            raise ContractError(f"payload.audits must be true or false, got {type_name(audits)}")
        weight = self._weight(call.sender, payload, 1.0)
        share_key = None
        if "share_key" in payload:
            share_key = check_share_key(payload["share_key"])
        try:
            offered = ContractSettings.from_payload(payload)
        except ContractError as e:
            raise ContractError(f"register: bad setting in payload: {e}") from None
        for key in SETTINGS_KEYS:
            if key in payload:
                ours = json_copy(getattr(self._settings, key), key)
                theirs = json_copy(getattr(offered, key), key)
                if compare_key(ours) != compare_key(theirs):
                    raise ContractError(
                        f"setting {key} conflicts: contract {self._name} has "
                        f"{json.dumps(ours, sort_keys=True)}, register offers "
                        f"{json.dumps(theirs, sort_keys=True)}"
                    )

        was_all_finished = self.all_finished
        rejoined = call.sender in self._members
        if rejoined:
            self._withdraw(call.sender)
        self._members[call.sender] = _Member(
            endpoint, weight, call.timestamp, last_seen=call.timestamp, leads=leads,
            audits=audits, share_key=share_key,
        )  # fmt: skip
        event = self._event(
            "registered",
            call,
            member=call.sender,
            endpoint=endpoint,
            weight=weight,
            rejoined=rejoined,
        )
        # a new process does not carry on the old one's audit
        gone = self._leave_audit(call, "registered again") if rejoined else []
        return [event, *gone, *self._all_finished_events(call, was_all_finished)]

    def _weight(self, sender: str, payload: Mapping[str, Any], default: float) -> float:
        """The weight the contract's policy gives `sender` for this register or ready."""
        policy, fixed = self._settings.weight_policy, self._settings.weights
        return member_weight(policy, fixed, self._name, sender, payload, default)

    def _on_ready(self, call: ContractCall) -> list[dict[str, Any]]:
        payload = call.payload
        check_fields(payload, "ready", ("digest", "size"), ("weight", "root", "secagg"))
        self._require_current(call.round)
        if self._sealed:
            raise ContractError(f"round {call.round} is already sealed")
        digest = check_digest(payload["digest"], "payload.digest")
        size = check_int(payload["size"], "payload.size", minimum=0)
        weight = self._weight(call.sender, payload, self._members[call.sender].weight)
        entry: dict[str, Any] = {"digest": digest, "size": size, "weight": weight}
        if "root" in payload:  # the chunk root fetchers check each chunk against
            entry["root"] = check_digest(payload["root"], "payload.root")
        if "secagg" in payload:
            if self._settings.secure_aggregation is None:
                raise ContractError(f"contract {self._name} does not aggregate securely: "
                                    "send ready without payload.secagg")  # fmt: skip
            entry["secagg"] = check_ready_secagg(payload["secagg"], self._members)

        replaced = call.sender in self._ready
        self._ready[call.sender] = entry
        event = self._event(
            "ready",
            call,
            round=call.round,
            member=call.sender,
            digest=digest,
            size=size,
            weight=weight,
            ready_count=len(self._ready),
            replaced=replaced,
        )
        return [event]

    def _on_seal(self, call: ContractCall) -> list[dict[str, Any]]:
        check_fields(call.payload, "seal", (), ())
        self._require_current(call.round)
        if self._sealed:
            raise ContractError(f"round {call.round} is already sealed")
        need = self._settings.min_peers
        if len(self._ready) < need:
            raise ContractError(
                f"round {call.round} has {len(self._ready)} ready, needs min_peers={need}"
            )
        if not any(self._may_lead(n) for n in self._ready):
            raise ContractError(
                f"none of the {len(self._ready)} ready in round {call.round} may lead (each "
                "registered with lead=false): a round needs one site that may"
            )

        admitted = list(self._ready)
        if self._secagg_round():
            admitted = self._secagg_admitted()
            need = max(need, self._secagg_threshold())
            if len(admitted) < need:
                raise ContractError(
                    f"round {call.round}: only {len(admitted)} of the {len(self._ready)} ready "
                    f"dealt secure aggregation shares to each other, needs {need} (min_peers "
                    "and the threshold)"
                )

        self._sealed = True
        self._sealed_at = call.timestamp
        if self._started_at is None:
            self._started_at = call.timestamp
        self._participants = sorted(admitted)
        if self._secagg_round():
            self._open_secagg()
        ranking = leader_ranking(call.prev_hash, self._name, call.round, self._participants)
        # Leaders whose merges were refused by a majority lead only when nobody else can;
        # sites that opted out of leading come last and never lead.
        leading = [n for n in ranking if self._may_lead(n)]
        self._ranking = (
            [n for n in leading if n not in self._demoted]
            + [n for n in leading if n in self._demoted]
            + [n for n in ranking if not self._may_lead(n)]
        )
        self._leader_index = 0
        self._leader_since = call.timestamp
        self._open_shards(call)
        event = self._event(
            "sealed",
            call,
            round=call.round,
            participants=list(self._participants),
            ranking=list(self._ranking),
            leader=self.leader,
            shard_owners=[shard["owner"] for shard in self._shards],
        )
        return [event]

    def _on_merged(self, call: ContractCall) -> list[dict[str, Any]]:
        payload = call.payload
        check_fields(payload, "merged", ("digest", "size"), ("excluded",))
        self._require_sealed(call.round)
        leader = self.leader
        if call.sender != leader:
            raise ContractError(
                f"{call.sender} is not the leader of round {call.round} (leader is {leader})"
            )
        digest = check_digest(payload["digest"], "payload.digest")
        size = check_int(payload["size"], "payload.size", minimum=0)
        excluded = check_excluded(payload.get("excluded", []), self._participants)
        self._shards_for_merged(call, size, excluded)
        self._secagg_merged(call, excluded)
        if not self._settings.audit:
            return self._accept_merge(call, leader, digest, size, excluded, None)
        if self._audit is not None:
            raise ContractError(
                f"the merge of round {call.round} by {leader} awaits its auditors already"
            )
        if self._latest_merged is None:
            # No merge yet: the leader hands its own model out, which the ledger can check.
            if digest != self._ready[leader]["digest"] or excluded:
                raise ContractError(
                    f"round {call.round} starts the swarm: its leader hands out its own model, "
                    "so payload.digest must be the one it sent with ready (nothing excluded)"
                )
            return self._accept_merge(call, leader, digest, size, excluded, None)
        if 2 * len(excluded) >= len(self._participants):
            raise ContractError(
                f"with audits a leader may leave out only a minority of the round's "
                f"{len(self._participants)} participants (it left out {len(excluded)}): "
                "auditors recompute the merge of the others, so exclusions rest on its word"
            )
        for earlier in self._rejected:
            # the majority that rejected an earlier merge of this round recomputed this very
            # merge (merges are deterministic): it is audited already
            backers = {n: v for n, v in earlier["attestations"].items()
                       if v == _verdict(digest, size)}  # fmt: skip
            if len(backers) >= len(earlier["auditors"]) // 2 + 1:
                record = _audit_record(earlier["auditors"], backers)
                return self._accept_merge(call, leader, digest, size, excluded, record)
        auditors = self._auditor_candidates(call)[: self._settings.audit]
        auditors = auditors[: len(auditors) - 1 + len(auditors) % 2]  # odd: no ties
        if not auditors:  # nobody else may audit: the leader's word counts (recorded)
            return self._accept_merge(call, leader, digest, size, excluded, _audit_record([]))
        self._audit = {"abstained": {}, "attestations": {}, "auditors": auditors,
                       "digest": digest, "excluded": excluded, "leader": leader,
                       "proposed_at": call.timestamp, "size": size}  # fmt: skip
        if self._shards:  # which shards each auditor found other than its recomputation
            self._audit["blamed"] = {}
        event = self._event("merge_proposed", call, round=call.round, leader=leader,
                            digest=digest, auditors=list(auditors))  # fmt: skip
        return [event]

    def _accept_merge(
        self,
        call: ContractCall,
        leader: str,
        digest: str,
        size: int,
        excluded: list[dict[str, str]],
        audit: dict[str, Any] | None,
    ) -> list[dict[str, Any]]:
        """`leader`'s merge counts: it is the latest merged model and the round is over."""
        first = self._latest_merged is None  # the initial sync: its leader's own model
        if self._latest_merged is not None:
            self._earlier_merges = [*self._earlier_merges, self._latest_merged][-_KEPT_MERGES:]
        self._refusals = {}
        self._latest_merged = {
            "digest": digest,
            "holders": [leader],
            "leader": leader,
            "round": call.round,
            "size": size,
        }
        if first:
            self._latest_merged["first"] = True
        self._sync_interval = self._adapted_interval(call.round)
        round = call.round
        self._close_round(call, leader=leader, digest=digest, size=size, excluded=excluded,
                          audit=audit)  # fmt: skip
        event = self._event(
            "merged",
            call,
            round=round,
            leader=leader,
            digest=digest,
            size=size,
            participants=list(self._history[round]["participants"]),
            next_round=self._round,
        )
        return [event]

    # --- audits ---

    def _auditor_candidates(self, call: ContractCall) -> list[str]:
        """Who may audit the current leader's merge, in the order they are asked: the
        round's other participants in ranking order that are live and did not opt out,
        those an earlier audit's majority contradicted last. Not chosen by the leader; not
        those that abstained from this audit, failed to lead this round, rejected a merge of
        this round alone (so one auditor cannot veto leader after leader) or backed one that
        two others rejected."""
        audit = self._audit or {}
        taken = {self.leader, *audit.get("auditors", ()), *audit.get("abstained", {}),
                 *self._vetoers, *self._failed_leaders}  # fmt: skip
        eligible = [
            n for n in self._ranking
            if n not in taken and self._live(n, call) and self._members[n].audits
        ]  # fmt: skip
        return [n for n in eligible if n not in self._bad_auditors] + [
            n for n in eligible if n in self._bad_auditors
        ]

    def _on_attest(self, call: ContractCall) -> list[dict[str, Any]]:
        """An auditor's verdict on the merge awaiting audit: the digest and size of its own
        recomputation; or why it could not recompute it, an abstention (another candidate
        takes its place)."""
        payload = call.payload
        check_fields(payload, "attest", (), ("digest", "size", "refused", "shards"))
        self._require_sealed(call.round)
        audit = self._audit
        if audit is None:
            raise ContractError(f"no merge of round {call.round} awaits an audit")
        if call.sender not in audit["auditors"]:
            auditors = ", ".join(audit["auditors"])
            raise ContractError(f"{call.sender} is not an auditor of the merge of round "
                                f"{call.round} (auditors: {auditors})")  # fmt: skip
        if call.sender in audit["attestations"]:
            raise ContractError(f"{call.sender} attested the merge of round {call.round} already")
        if "refused" in payload:
            if set(payload) != {"refused"}:
                raise ContractError("attest carries payload.digest and size, or payload.refused")
            reason = check_str(payload["refused"], "payload.refused")[:500]
            return self._abstain(call, call.sender, reason)
        if set(payload) - {"shards"} != {"digest", "size"}:
            raise ContractError("attest carries payload.digest and size, or payload.refused")
        digest = check_digest(payload["digest"], "payload.digest")
        size = check_int(payload["size"], "payload.size", minimum=0)
        blamed = self._check_blamed(payload.get("shards"), digest, size, audit)
        if blamed is not None:
            audit["blamed"] = {**audit["blamed"], call.sender: blamed}

        verdict = _verdict(digest, size)
        audit["attestations"] = {**audit["attestations"], call.sender: verdict}
        agrees = verdict == _verdict(audit["digest"], audit["size"])
        event = self._event("attested", call, round=call.round, member=call.sender,
                            agrees=agrees)  # fmt: skip
        return [event, *self._settle_audit(call)]

    def _abstain(self, call: ContractCall, name: str, reason: str) -> list[dict[str, Any]]:
        """`name` leaves the audit (it could not recompute, or stayed silent): the next
        candidate takes its place; with none, the audit goes on without it."""
        audit = self._audit
        assert audit is not None
        audit["abstained"] = {**audit["abstained"], name: reason}
        candidates = self._auditor_candidates(call)
        if candidates:
            audit["auditors"] = [candidates[0] if n == name else n for n in audit["auditors"]]
        else:
            audit["auditors"] = [n for n in audit["auditors"] if n != name]
        event = self._event("auditors_replaced", call, round=self._round, replaced={name: (
            candidates[0] if candidates else None)}, auditors=list(audit["auditors"]))  # fmt: skip
        return [event, *self._settle_audit(call)]

    def _leave_audit(self, call: ContractCall, why: str) -> list[dict[str, Any]]:
        """The sender abstains from the audit it has not attested yet, if any (another
        candidate takes its place at once instead of after the audit's deadline)."""
        audit = self._audit
        sender = call.sender
        if audit is None or sender not in audit["auditors"] or sender in audit["attestations"]:
            return []
        return self._abstain(call, sender, why)

    def _settle_audit(self, call: ContractCall) -> list[dict[str, Any]]:
        """Decide the audit once a majority of its auditors attests the leader's digest and
        size (it counts) or something else (it is rejected); abort the round when no
        decision can come any more (no auditor left, or all attested and tied)."""
        audit = self._audit
        assert audit is not None
        auditors = audit["auditors"]
        needed = len(auditors) // 2 + 1
        verdicts = {n: v for n, v in audit["attestations"].items() if n in auditors}
        claimed = _verdict(audit["digest"], audit["size"])
        agree = sorted(n for n, v in verdicts.items() if v == claimed)
        disagree = sorted(n for n in verdicts if n not in agree)
        leader = audit["leader"]
        gone = not self._members[leader].active  # revoked or left since it merged
        if not gone and len(agree) >= needed:
            contradicted = list(disagree)
            for earlier in self._rejected:  # rejected before, now found right by others
                if earlier["digest"] == audit["digest"]:
                    contradicted += [n for n, v in earlier["attestations"].items() if v != claimed]
            record = self._audit_record(contradicted)
            return self._accept_merge(call, leader, audit["digest"], audit["size"],
                                      audit["excluded"], record)  # fmt: skip
        if not gone and len(disagree) >= needed and self._shards:
            blamed = self._blamed_shards(audit, disagree, needed)
            if blamed:  # the shards' owners were wrong, not the leader that joined them
                self._vetoers = sorted({*self._vetoers, *(agree if len(disagree) >= 2
                                                          else disagree)})  # fmt: skip
                record = self._audit_record(agree)
                self._rejected.append({"leader": leader, "digest": audit["digest"], **record})
                rejected = self._event("merge_rejected", call, round=call.round,
                                       leader=leader, digest=audit["digest"], audit=record,
                                       shards=blamed)  # fmt: skip
                return [rejected, *self._reassign_shards(call, blamed)]
        if gone or len(disagree) >= needed:
            record = self._audit_record([] if gone else agree)
            if len(disagree) >= 2:  # the word of two sites at least: the leader is demoted,
                self._demoted = sorted({*self._demoted, leader})  # and who agreed barred
                self._vetoers = sorted({*self._vetoers, *agree})
            else:  # one auditor's word: it replaces the leader, then audits no more this round
                self._vetoers = sorted({*self._vetoers, *disagree})
            self._rejected.append({"leader": leader, "digest": audit["digest"], **record})
            rejected = self._event("merge_rejected", call, round=call.round, leader=leader,
                                   digest=audit["digest"], audit=record)  # fmt: skip
            return [rejected, *self._replace_leader(call)]
        if not auditors or len(verdicts) == len(auditors):  # nobody left, or a tie
            self._audit = None
            return [self._abort_round(call)]
        return []

    def _audit_record(self, contradicted: Sequence[str]) -> dict[str, Any]:
        """The decided audit for the history (auditors the majority contradicted become
        bad auditors, asked last from then on); the audit is over."""
        audit = self._audit
        assert audit is not None
        self._bad_auditors = sorted({*self._bad_auditors, *contradicted})
        self._audit = None
        return _audit_record(audit["auditors"], audit["attestations"], sorted(set(contradicted)),
                             audit["abstained"])  # fmt: skip

    def _audit_deadline(self, call: ContractCall) -> list[dict[str, Any]]:
        """Once leader_timeout_s passed since the merge was proposed (or its auditors last
        changed), auditors that have not attested abstain (see `_abstain`)."""
        audit = self._audit
        assert audit is not None
        if call.timestamp - audit["proposed_at"] < self._settings.leader_timeout_s:
            return []
        audit["proposed_at"] = call.timestamp
        events: list[dict[str, Any]] = []
        for name in [n for n in audit["auditors"] if n not in audit["attestations"]]:
            if self._audit is None:
                break
            events += self._abstain(call, name, f"silent for {self._settings.leader_timeout_s:g} s")
        return events

    def _abort_round(self, call: ContractCall) -> dict[str, Any]:
        failed, round = list(self._failed_leaders), self._round
        self._close_round(call, leader=None, digest=None, size=None)
        return self._event("round_aborted", call, round=round, failed_leaders=failed,
                           next_round=self._round)  # fmt: skip

    def _on_leader_timeout(self, call: ContractCall) -> list[dict[str, Any]]:
        """A participant's vote that the leader has been silent for leader_timeout_s. The
        leader changes once a majority of the round's live other participants voted."""
        payload = call.payload
        check_fields(payload, "leader_timeout", ("leader",), ())
        self._require_sealed(call.round)
        if call.sender not in self._participants:
            raise ContractError(f"{call.sender} is not a participant of round {call.round}")
        named = check_str(payload["leader"], "payload.leader")
        leader = self.leader
        assert leader is not None and self._leader_since is not None
        if named != leader:
            raise ContractError(
                f"leader already changed: leader of round {call.round} is {leader}, not {named}"
            )
        if call.sender == leader:
            raise ContractError(f"{leader} cannot vote itself out as leader of round {call.round}")
        if self._audit is not None:
            raise ContractError(
                f"leader {leader} of round {call.round} delivered its merge; it awaits its audit"
            )
        if self._shards_pending():
            raise ContractError(
                f"round {call.round} is still being merged in shards: vote a silent shard "
                "owner out with shard_timeout; the leader's time starts once all are in"
            )
        waited = call.timestamp - self._leader_since
        limit = self._settings.leader_timeout_s
        if waited < limit:
            raise ContractError(
                f"leader {leader} of round {call.round} cannot be timed out for another "
                f"{limit - waited:.3f} s (leader_timeout_s={limit:g})"
            )
        if call.sender in self._timeout_votes:
            raise ContractError(f"{call.sender} already voted {leader} out in round {call.round}")

        self._timeout_votes = [*self._timeout_votes, call.sender]
        settled = self._settle_votes(call)
        if settled:
            return settled
        event = self._event("timeout_voted", call, round=call.round, leader=leader,
                            votes=list(self._timeout_votes),
                            needed=self._votes_needed(call))  # fmt: skip
        return [event]

    def _settle_votes(self, call: ContractCall) -> list[dict[str, Any]]:
        """Replace the leader if the votes against it are a majority of the electorate at
        `call`'s time (checked on every vote and heartbeat: a participant that fell silent
        since no longer counts in the electorate); abort the round once its leader is past
        its timeout and fewer than min_peers participants are live (no majority may be left
        to vote). While the leader's merge awaits its audit, only the audit's deadline is
        checked instead (the leader delivered). The events, or none."""
        if not self._sealed:
            return []
        if self._audit is not None:
            return self._audit_deadline(call)
        if self._shards:
            events = self._settle_shards(call)
            if events or self._shards_pending():  # (the leader's time starts once all are in)
                return events
        assert self._leader_since is not None
        live = [n for n in self._participants if self._live(n, call)]
        stuck = (
            call.timestamp - self._leader_since >= self._settings.leader_timeout_s
            and len(live) < self._settings.min_peers
        )  # nobody left to vote, or too few to finish: abort (below)
        if not stuck and len(self._timeout_votes) < self._votes_needed(call):
            return []
        return self._replace_leader(call)

    def _replace_leader(self, call: ContractCall) -> list[dict[str, Any]]:
        """The current leader failed: the next live candidate in the ranking leads; with
        none, or too few live participants to finish, the round is aborted."""
        leader = self.leader
        assert leader is not None
        self._failed_leaders.append(leader)
        self._timeout_votes = []
        live = [n for n in self._participants if self._live(n, call)]
        # too few live to finish the round: they re-seal a new one
        following = None if len(live) < self._settings.min_peers else self._next_live_leader(live)
        if following is not None:
            self._leader_index = following
            self._leader_since = call.timestamp
            event = self._event(
                "leader_changed",
                call,
                round=self._round,
                previous=leader,
                leader=self.leader,
                failed_leaders=list(self._failed_leaders),
            )
            return [event]
        failed, round = list(self._failed_leaders), self._round
        self._close_round(call, leader=None, digest=None, size=None)
        event = self._event(
            "round_aborted",
            call,
            round=round,
            failed_leaders=failed,
            next_round=self._round,
        )
        return [event]

    def _live(self, name: str, call: ContractCall) -> bool:
        """Whether member `name` signed anything (a heartbeat at least) within
        presence_timeout_s of `call`'s ledger time; `call`'s sender is, by sending it."""
        member = self._members.get(name)
        return (
            member is not None
            and member.active
            and (name == call.sender or call.timestamp - member.last_seen
                 < self._settings.presence_timeout_s)
        )  # fmt: skip

    def _votes_needed(self, call: ContractCall) -> int:
        """A majority of the round's other participants that are live or voted already
        (with two participants: the other one)."""
        electorate = [
            n for n in self._participants
            if n != self.leader and (n in self._timeout_votes or self._live(n, call))
        ]  # fmt: skip
        return len(electorate) // 2 + 1

    def _next_live_leader(self, live: list[str]) -> int | None:
        """The ranking index of the next leader: the first candidate after the current one
        that is `live` and may lead. None (the round is aborted) when there is none."""
        assert self._leader_index is not None
        for index in range(self._leader_index + 1, len(self._ranking)):
            name = self._ranking[index]
            if name in live and self._may_lead(name):
                return index
        return None

    def _may_lead(self, name: str) -> bool:
        """Whether `name` did not opt out of leading (a member that left keeps its choice)."""
        member = self._members.get(name)
        return member is None or member.leads

    def _close_round(
        self,
        call: ContractCall,
        leader: str | None,
        digest: str | None,
        size: int | None,
        excluded: list[dict[str, str]] | None = None,
        audit: dict[str, Any] | None = None,
    ) -> None:
        """Record the sealed current round in the history and open the next one (`audit`:
        who audited the merge and what each found; None without audits)."""
        merged = digest is not None
        self._history[self._round] = {
            "aborted_at": None if merged else call.timestamp,
            "audit": audit,
            "digest": digest,
            "excluded": list(excluded or []),
            "failed_leaders": list(self._failed_leaders),
            "inputs": {n: dict(sorted(self._ready[n].items())) for n in self._participants},
            "leader": leader,
            "merged_at": call.timestamp if merged else None,
            "participants": list(self._participants),
            "ranking": list(self._ranking),
            "rejected_merges": list(self._rejected),
            "round": self._round,
            "sealed_at": self._sealed_at,
            "secagg": None
            if self._secagg is None
            else {
                "survivors": self._secagg["survivors"],
                "unmasked_by": sorted(self._secagg["unmasked"]),
            },
            "shards": self._shards_record(),
            "size": size,
            "status": "merged" if merged else "aborted",
            "sync_interval": self._sync_interval,
            "voided_at": None,
        }
        self._merged_rounds += merged
        self._round += 1
        self._open_round()
        self._forget_old_rounds()

    def _forget_old_rounds(self) -> None:
        """Drop history and metrics older than HISTORY_KEPT rounds, except the records of
        the merges a voided merge can still fall back to."""
        oldest = self._round - HISTORY_KEPT
        merges = [self._latest_merged, *self._earlier_merges]
        needed = {m["round"] for m in merges if m is not None}
        for round in [r for r in self._history if r < oldest and r not in needed]:
            del self._history[round]
        for round in [r for r in self._metrics if r < oldest]:
            del self._metrics[round]

    def _adapted_interval(self, round: int) -> int | None:
        """The sync interval after round `round`, from the mean validation losses that the
        sites reported for the two rounds before it (the ledger holds both by now)."""
        adaptive = self._settings.adaptive_sync
        if adaptive is None or self._sync_interval is None:
            return self._sync_interval
        recent, earlier = self._mean_loss(round - 1), self._mean_loss(round - 2)
        if recent is None or earlier is None:
            return self._sync_interval
        if recent < earlier - ADAPTIVE_TOLERANCE * abs(earlier):
            return min(adaptive["max"], -(-self._sync_interval * 3 // 2))
        return max(adaptive["min"], self._sync_interval // 2)

    def _mean_loss(self, round: int) -> float | None:
        reports = self._metrics.get(round)
        if not reports:
            return None
        losses = [reports[name]["loss"] for name in sorted(reports)]
        return sum(losses) / len(losses)

    def _on_loaded(self, call: ContractCall) -> list[dict[str, Any]]:
        payload = call.payload
        check_fields(payload, "loaded", ("digest",), ())
        digest = check_digest(payload["digest"], "payload.digest")
        merged = self._latest_merged
        if merged is None or merged["round"] != call.round:
            latest = "none" if merged is None else f"round {merged['round']}"
            raise ContractError(
                f"round {call.round} has no latest merged model (latest merged is {latest})"
            )
        if digest != merged["digest"]:
            raise ContractError(
                f"payload.digest does not match the merged model of round {call.round}"
            )
        if call.sender in merged["holders"]:
            raise ContractError(
                f"{call.sender} already holds the merged model of round {call.round}"
            )

        merged["holders"] = sorted([*merged["holders"], call.sender])
        event = self._event(
            "loaded",
            call,
            round=call.round,
            member=call.sender,
            digest=digest,
            holders=list(merged["holders"]),
        )
        return [event]

    def _on_finished(self, call: ContractCall) -> list[dict[str, Any]]:
        check_fields(call.payload, "finished", (), ("contribution",))
        member = self._members[call.sender]
        if member.finished:
            raise ContractError(f"{call.sender} has already finished")
        contribution = call.payload.get("contribution", "inactive")
        if contribution not in CONTRIBUTIONS:
            raise ContractError(
                f"payload.contribution must be one of {', '.join(CONTRIBUTIONS)}, "
                f"got {contribution!r}"
            )
        member.contribution = contribution

        was_all_finished = self.all_finished
        member.finished = True
        event = self._event("finished", call, member=call.sender)
        return [event, *self._all_finished_events(call, was_all_finished)]

    def _on_leave(self, call: ContractCall) -> list[dict[str, Any]]:
        check_fields(call.payload, "leave", (), ())

        was_all_finished = self.all_finished
        self._withdraw(call.sender)
        self._members[call.sender].active = False
        event = self._event("left", call, member=call.sender)
        gone = self._leave_audit(call, "left the contract")
        return [event, *gone, *self._all_finished_events(call, was_all_finished)]

    def _on_metrics(self, call: ContractCall) -> list[dict[str, Any]]:
        payload = call.payload
        check_fields(payload, "metrics", ("loss", "epoch"),
                     ("metric", "total_epochs", "phases", "traffic", "privacy"))  # fmt: skip
        if call.round > self._round:
            raise ContractError(
                f"round {call.round} has not started; current round is {self._round}"
            )
        if call.round < self._round - HISTORY_KEPT:
            raise ContractError(
                f"round {call.round} is older than the last {HISTORY_KEPT} rounds the contract "
                "keeps: report metrics for a recent round"
            )
        loss = check_number(payload["loss"], "payload.loss")
        raw_metric = payload.get("metric")
        metric = None if raw_metric is None else check_number(raw_metric, "payload.metric")
        epoch = check_int(payload["epoch"], "payload.epoch", minimum=0)
        raw_total = payload.get("total_epochs")
        total = (
            None if raw_total is None else check_int(raw_total, "payload.total_epochs", minimum=0)
        )
        if total is not None and epoch > total:
            raise ContractError(
                f"payload.epoch ({epoch}) must not exceed payload.total_epochs ({total})"
            )
        phases = _check_phases(payload.get("phases"))
        traffic = _check_traffic(payload.get("traffic"))
        # the site's differential-privacy spend so far (openswarm.privacy): exactly these
        # fields, so a site can put nothing else on the ledger through them
        privacy = payload.get("privacy")
        if privacy is not None:
            keys = ("epsilon", "delta", "unit", "mode", "spent")
            if not isinstance(privacy, Mapping) or set(privacy) != set(keys):
                raise ContractError(f"payload.privacy must be {{{', '.join(keys)}}}")
            delta = check_number(privacy["delta"], "payload.privacy.delta")
            if not 0 < delta < 1:
                raise ContractError(f"payload.privacy.delta must be in (0, 1), got {delta!r}")
            if (privacy["mode"], privacy["unit"]) not in (("site", "site"), ("sgd", "record")):
                raise ContractError(
                    "payload.privacy.mode and .unit must be 'site' and 'site' (site-level DP) "
                    "or 'sgd' and 'record' (DP-SGD)"
                )
            if not isinstance(privacy["spent"], bool):
                raise ContractError("payload.privacy.spent must be true or false")
            privacy = {"epsilon": check_number(privacy["epsilon"], "payload.privacy.epsilon",
                                               minimum=0),
                       "delta": delta, "unit": privacy["unit"], "mode": privacy["mode"],
                       "spent": privacy["spent"]}  # fmt: skip

        record = {"epoch": epoch, "loss": loss, "metric": metric, "total_epochs": total,
                  "phases": phases, "traffic": traffic}  # fmt: skip
        if privacy is not None:
            record["privacy"] = privacy
        self._metrics.setdefault(call.round, {})[call.sender] = record
        event = self._event("metrics", call, round=call.round, member=call.sender, **record)
        return [event]

    # --- presence and voided merges ---

    def _on_heartbeat(self, call: ContractCall) -> list[dict[str, Any]]:
        check_fields(call.payload, "heartbeat", (), ())
        return self._settle_votes(call)  # apply() records last_seen

    def _voidable(self, call: ContractCall) -> tuple[dict[str, Any], dict[str, Any]]:
        """The latest merged model and its history record, if ``call`` may report on it."""
        digest = check_digest(call.payload["digest"], "payload.digest")
        merged = self._latest_merged
        if merged is None or merged["round"] != call.round or merged["digest"] != digest:
            raise ContractError(
                f"the merged model of round {call.round} with that digest is not the latest one"
            )
        record = self._history.get(call.round)
        if record is None:  # the latest merge's record is always kept; defensive
            raise ContractError(f"round {call.round} is no longer in the contract's history")
        if call.sender not in record["participants"] or call.sender == merged["leader"]:
            raise ContractError(
                f"{call.sender} is not a participant of round {call.round} other than its leader"
            )
        if call.sender in merged["holders"]:
            raise ContractError(
                f"{call.sender} holds the merged model of round {call.round} (it sent 'loaded')"
            )
        return merged, record

    def _on_merge_unavailable(self, call: ContractCall) -> list[dict[str, Any]]:
        check_fields(call.payload, "merge_unavailable", ("digest",), ())
        merged, record = self._voidable(call)
        others = [h for h in merged["holders"] if h != merged["leader"]]
        if others:
            raise ContractError(
                f"the merged model of round {call.round} is held by "
                f"{', '.join(others)}: fetch it from them"
            )
        waited = call.timestamp - record["merged_at"]
        limit = self._settings.leader_timeout_s
        if waited < limit:
            raise ContractError(
                f"the merged model of round {call.round} cannot be declared unavailable for "
                f"another {limit - waited:.3f} s (leader_timeout_s={limit:g})"
            )
        return [self._void(call, record, "unavailable")]

    def _on_merge_refused(self, call: ContractCall) -> list[dict[str, Any]]:
        check_fields(call.payload, "merge_refused", ("digest", "reason"), ())
        reason = check_str(call.payload["reason"], "payload.reason")[:500]
        merged, record = self._voidable(call)
        if call.sender in self._refusals:
            raise ContractError(f"{call.sender} already refused the merge of round {call.round}")
        refusals = {**self._refusals, call.sender: reason}
        others = len(record["participants"]) - 1
        needed = others // 2 + 1
        event = self._event("merge_refused", call, round=call.round, member=call.sender,
                            reason=reason, refusals=len(refusals), needed=needed)  # fmt: skip
        self._refusals = refusals
        if len(refusals) < needed:
            return [event]
        # Demoted only on the word of two sites at least: in a round of two, one refusal
        # voids the merge, but the leader's word is as good as the refuser's.
        if len(refusals) >= 2 and merged["leader"] not in self._demoted:
            self._demoted = sorted([*self._demoted, merged["leader"]])
        return [event, self._void(call, record, "refused")]

    def _void(self, call: ContractCall, record: dict[str, Any], why: str) -> dict[str, Any]:
        """Fall back to the merged model before the latest one (None: no merge yet)."""
        record["status"] = f"voided:{why}"
        record["voided_at"] = call.timestamp
        self._latest_merged = self._earlier_merges[-1] if self._earlier_merges else None
        self._earlier_merges = self._earlier_merges[:-1]
        self._refusals = {}
        fallback = None if self._latest_merged is None else self._latest_merged["round"]
        return self._event("merge_voided", call, round=call.round, why=why, fallback=fallback)


def _audit_record(
    auditors: Sequence[str],
    attestations: Mapping[str, str] | None = None,
    contradicted: Sequence[str] = (),
    abstained: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """How a merge was audited, for the history: who audited, what each attested
    ("digest:size"), whom the majority contradicted, and who abstained (and why)."""
    return {"abstained": dict(sorted((abstained or {}).items())),
            "attestations": dict(sorted((attestations or {}).items())),
            "auditors": list(auditors), "contradicted": list(contradicted)}  # fmt: skip


def _verdict(digest: str, size: int) -> str:
    """What an auditor attests: the recomputed merge's digest and encoded size."""
    return f"{digest}:{size}"


def _check_phases(value: Any) -> dict[str, float] | None:
    """A round's seconds by phase (ROUND_PHASES), as a site reports it with its metrics."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not set(value) <= set(ROUND_PHASES):
        raise ContractError(f"payload.phases must map some of {', '.join(ROUND_PHASES)} to seconds")
    phases = {}
    for name in ROUND_PHASES:
        if name in value:
            seconds = check_number(value[name], f"payload.phases.{name}", minimum=0)
            phases[name] = min(seconds, 1e9)
    return phases


def _check_traffic(value: Any) -> dict[str, int] | None:
    """Bytes a site sent and received in model transfers since its previous report."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"sent", "received"}:
        raise ContractError("payload.traffic must be {sent, received} (bytes)")
    return {k: check_int(value[k], f"payload.traffic.{k}", minimum=0) for k in ("received", "sent")}


def _check_shardable(settings: ContractSettings) -> None:
    """What a sharded merge needs: a coordinate-wise method and a lossless transport."""
    if settings.merge_method in SERVER_OPTIMIZERS:
        raise ContractError(
            f"merge_topology sharded cannot run merge method {settings.merge_method}: its "
            "optimizer state travels in the whole merged model, which one leader makes; use "
            "merge_topology leader"
        )
    if settings.merge_method not in SHARDED_METHODS:
        raise ContractError(
            f"merge_topology sharded needs a coordinate-wise merge method "
            f"({', '.join(SHARDED_METHODS)}); {settings.merge_method!r} needs every whole "
            "model at once, so it stays with merge_topology leader"
        )
    if settings.compression not in SHARDED_COMPRESSIONS:
        raise ContractError(
            f"merge_topology sharded cuts snapshots into byte ranges, so it needs a lossless "
            f"compression ({', '.join(SHARDED_COMPRESSIONS)}), not {settings.compression!r}"
        )


def _check_server_optimizer(settings: ContractSettings) -> None:
    """What a server-side optimizer needs: valid hyperparameters and a transport its state
    survives."""
    problem = server_optimizer_problem(settings.merge_method, dict(settings.merge_options))
    if problem is not None:
        raise ContractError(problem)
    if settings.compression not in SERVER_OPTIMIZER_COMPRESSIONS:
        raise ContractError(
            f"merge method {settings.merge_method} carries its optimizer state in the merged "
            f"model, which compression {settings.compression!r} would flush to zero; use one "
            f"of {', '.join(SERVER_OPTIMIZER_COMPRESSIONS)}"
        )


def _check_adaptive(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping) or set(value) != {"start", "min", "max"}:
        raise ContractError("adaptive_sync must be {start, min, max} (batches between syncs)")
    start, low, high = (check_int(value[k], f"adaptive_sync.{k}", minimum=1)
                        for k in ("start", "min", "max"))  # fmt: skip
    if not low <= start <= high:
        raise ContractError(f"adaptive_sync needs min <= start <= max, got {dict(value)}")
    return {"start": start, "min": low, "max": high}


def _check_secure_aggregation(settings: ContractSettings) -> None:
    """What secure aggregation allows: a merge of the sum (nobody may see one update), no
    audits of plaintext snapshots, enough sites for the threshold."""
    secure = settings.secure_aggregation
    assert secure is not None
    if settings.merge_method not in SECURE_AGGREGATION_METHODS or settings.merge_options:
        raise ContractError(
            f"secure_aggregation merges the masked sum only, so merge method "
            f"{settings.merge_method!r} (which needs each model, or options) cannot run on it; "
            f"use {' or '.join(SECURE_AGGREGATION_METHODS)} without merge_options"
        )
    if settings.audit:
        raise ContractError(
            "secure_aggregation cannot be audited: auditors recompute merges from plaintext "
            "snapshots, which no site hands out; set audit 0"
        )
    if secure["threshold"] > settings.min_peers:
        raise ContractError(
            f"secure_aggregation threshold {secure['threshold']} exceeds min_peers "
            f"{settings.min_peers}: a round could seal with too few sites to unmask it; "
            "lower the threshold or raise min_peers"
        )
