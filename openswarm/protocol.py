"""The words of the swarm protocol, defined once: used by the ledger's contract, the peer,
the bindings and `swarmlearning`; and the one error a peer or binding raises.

Nothing here imports the rest of openswarm, so every layer may depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping

#: What a finished member gives to later rounds: nothing, its last local model, or the
#: latest merged one.
CONTRIBUTIONS = ("inactive", "snapshot", "active")
#: What a Hugging Face site syncs: the whole model, or only its PEFT adapter weights.
HF_MODES = ("full", "peft")
#: How a round ends, in the contract's history.
ROUND_STATUSES = ("merged", "aborted")
#: The kinds of model a site serves to others: its snapshot of a round, a merged model, and
#: (as a round's leader, for the auditors) the other participants' snapshots it pulled, and
#: (in a sharded round) the part of the merged model it merged.
MODEL_KINDS = ("local", "merged", "mirror", "shard")

#: Contract calls (ledger transactions naming a training contract).
CALL_TYPES = frozenset(
    {"register", "ready", "seal", "merged", "leader_timeout", "loaded", "finished", "metrics",
     "leave", "heartbeat", "merge_unavailable", "merge_refused", "attest", "shard",
     "shard_timeout", "masked", "survivors", "unmask", "secagg_abort"}
)  # fmt: skip
#: Calls that name a round; the others ignore the round.
ROUND_CALLS = frozenset(
    {"ready", "seal", "merged", "leader_timeout", "loaded", "metrics", "merge_unavailable",
     "merge_refused", "attest", "shard", "shard_timeout", "masked", "survivors", "unmask",
     "secagg_abort"}
)  # fmt: skip
#: Every event (in a transaction's result, `{"kind": ..., ...}`) is one of these.
EVENT_KINDS = frozenset(
    {"registered", "ready", "sealed", "merged", "leader_changed", "round_aborted", "loaded",
     "finished", "metrics", "left", "merge_voided", "merge_refused", "merge_unavailable",
     "timeout_voted", "all_finished", "sync_interval", "admitted", "revoked", "archived",
     "contract_created", "proposed", "approved", "merge_proposed", "attested",
     "merge_rejected", "auditors_replaced", "shard_merged", "shard_timeout_voted",
     "shard_owner_changed", "task_created", "task_assigned", "task_reset",
     "masked", "survivors", "unmasked"}
)  # fmt: skip

#: Who merges a round: its leader, the whole model; or (sharded) every site that may lead,
#: one contiguous part of it each, which everyone then assembles (node/shards.py).
MERGE_TOPOLOGIES = ("leader", "sharded")
#: The merge methods that work coordinate by coordinate, so a part can be merged alone.
SHARDED_METHODS = ("mean", "coordmedian", "trimmed_mean")
#: How models may travel in a sharded round: byte ranges of snapshots are cut from the
#: encoding as it is, so only the lossless compressions.
SHARDED_COMPRESSIONS = ("none", "zstd")

#: Merge methods that are server-side optimizers: the round's weighted mean taken as a
#: pseudo-gradient, their state carried in the merged model (merge/server_opt.py).
SERVER_OPTIMIZERS = ("fedavgm", "fedadam", "fedyogi", "fedadagrad")
#: Each server optimizer's hyperparameters (contract merge_options) and their defaults.
SERVER_OPTIMIZER_DEFAULTS: dict[str, dict[str, float]] = {
    # a server learning rate above 1 (SCAFFOLD's global step size), momentum opt-in: on the
    # demo's skewed split momentum 0.5 to 0.9 did worse than none (README)
    "fedavgm": {"server_lr": 1.5, "momentum": 0.0},
    "fedadam": {"server_lr": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
    "fedyogi": {"server_lr": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
    "fedadagrad": {"server_lr": 0.01, "beta1": 0.0, "tau": 1e-3},
}
#: Where each lies: (lowest, highest, whether the lowest itself is allowed); below highest.
_SERVER_OPTIMIZER_RANGES = {
    "server_lr": (0.0, 100.0, False),
    "momentum": (0.0, 1.0, True),
    "beta1": (0.0, 1.0, True),
    "beta2": (0.0, 1.0, False),
    "tau": (0.0, 1.0, False),
}
#: The compressions a server optimizer's state survives (float16 and int8 flush the small
#: second moments to zero).
SERVER_OPTIMIZER_COMPRESSIONS = ("none", "zstd", "bfloat16", "bfloat16+zstd")
#: Names of the tensors a merged model carries besides the model: a server optimizer's
#: state (``<prefix><slot>/<tensor>``), and SCAFFOLD's control variates
#: (``<prefix><tensor>``), which snapshots carry too.
STATE_PREFIX = "openswarm:opt/"
CONTROL_VARIATE_PREFIX = "openswarm:scaffold/"

#: Secure aggregation (contract `secure_aggregation`): each participant masks its update so
#: the merger learns only the sum. `threshold` t: how many participants' shares recover a
#: dropped one's masks (and the fewest updates a merger may unmask the sum of); `bound`: each
#: coordinate of an update (model minus the previous merged one) is clipped to ±bound before
#: it is masked, which is all that bounds one participant's influence (nobody sees it).
SECURE_AGGREGATION_DEFAULTS: dict[str, float] = {"threshold": 2, "bound": 1.0}
#: Merge methods that work on the sum alone (robust ones need to see each model).
SECURE_AGGREGATION_METHODS = ("mean",)

#: How models travel between sites (codec/transport.py): as they are, zstd-compressed,
#: or with float tensors as 16-bit floats or int8 with a scale (lossy), optionally zstd too.
COMPRESSIONS = ("none", "zstd", "float16", "float16+zstd", "bfloat16", "bfloat16+zstd",
                "int8", "int8+zstd")  # fmt: skip

#: The phases of a round a site times and reports with its metrics (seconds each): encoding
#: its snapshot and the merge, pulling models, merging (an auditor's recomputation too),
#: loading the merged model, the ledger (transactions, and waiting on the others), and all.
ROUND_PHASES = ("encode", "transfer", "merge", "load", "ledger", "total")

#: The ledger's gRPC service, and how a replica says it cannot commit for want of quorum.
LEDGER_SERVICE = "openswarm.ledger.Ledger"
NO_QUORUM = "no quorum"

# A contract's settings: the defaults, one set for the ledger and for the peers.
MIN_PEERS = 2
MERGE_METHOD = "mean"
LEADER_TIMEOUT_S = 20.0
#: A member that signed nothing on the ledger (not even a heartbeat) for this long is gone.
PRESENCE_TIMEOUT_S = 30.0
#: How a contract weighs its members in merges: all alike; as each declares (HPE's
#: nodeWeightage, an integer in DECLARED_WEIGHTS); or as its admins fixed them per member.
WEIGHT_POLICIES = ("equal", "declared", "fixed")
WEIGHT_POLICY = "declared"
DECLARED_WEIGHTS = range(1, 101)


def server_optimizer_problem(method: str, options: object) -> str | None:
    """Why `options` are not valid hyperparameters of server optimizer `method` (unknown
    names, non-numbers, values out of range), or None."""
    defaults = SERVER_OPTIMIZER_DEFAULTS.get(method)
    if defaults is None:
        return f"{method!r} is not a server optimizer; use one of {', '.join(SERVER_OPTIMIZERS)}"
    if not isinstance(options, Mapping):
        return f"merge_options of {method} must be an object"
    unknown = sorted(str(k) for k in options if k not in defaults)
    if unknown:
        known = ", ".join(f"{k} (default {v:g})" for k, v in defaults.items())
        return f"merge method {method!r} has no option(s) {', '.join(unknown)}; options: {known}"
    for key, value in options.items():
        low, high, low_ok = _SERVER_OPTIMIZER_RANGES[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{method} option {key} must be a number, got {value!r}"
        number = float(value)
        if not ((low <= number if low_ok else low < number) and number < high):
            lower = "≥" if low_ok else ">"
            return f"{method} option {key} must be {lower} {low:g} and < {high:g}, got {value!r}"
    return None


class SwarmError(RuntimeError):
    """The swarm cannot go on for this peer; the message says why and what to do."""


class SwarmConfigError(SwarmError, ValueError):
    """Swarm settings or network configuration that cannot work; names the fix."""


class MergedModelLost(SwarmError):
    """Every site holding a merged model is gone, so it cannot be fetched."""
