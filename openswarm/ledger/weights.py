"""Weight policies: how a contract weighs its members in merges, agreed when it is created.

- ``equal``: every member weighs 1; a declared weight is refused.
- ``declared``: each member declares an integer from 1 to 100 (HPE's ``nodeWeightage``) when
  it registers, and may declare another for one round with ``ready``.
- ``fixed``: the admins set each member's weight in the contract's settings (``weights``); a
  member without one cannot register, and a declared weight is refused.

The merge methods that claim robustness also cap any one peer's weight (see
``openswarm.merge``), so no policy lets one peer steer them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from openswarm.ledger.contract_checks import ContractError, check_name, check_number, type_name
from openswarm.protocol import DECLARED_WEIGHTS, WEIGHT_POLICIES

#: The most members a fixed-weight table may list, and the largest fixed weight.
MAX_FIXED_MEMBERS = 4096
MAX_FIXED_WEIGHT = 1e6


def check_policy(policy: Any, weights: Any) -> Mapping[str, float] | None:
    """Validate a contract's ``weight_policy`` and ``weights``; the weights, read-only."""
    if policy not in WEIGHT_POLICIES:
        raise ContractError(
            f"weight_policy must be one of {', '.join(WEIGHT_POLICIES)}, got {policy!r}"
        )
    if policy != "fixed":
        if weights is not None:
            raise ContractError(
                f"weights are set only with weight_policy 'fixed' (this contract's is {policy!r})"
            )
        return None
    if not isinstance(weights, Mapping) or not weights:
        raise ContractError(
            "weight_policy 'fixed' needs weights: an object of member name -> weight > 0"
        )
    if len(weights) > MAX_FIXED_MEMBERS:
        raise ContractError(f"weights lists {len(weights)} members; at most {MAX_FIXED_MEMBERS}")
    checked = {}
    for name in sorted(weights):
        check_name(name, "weights member")
        weight = check_number(weights[name], f"weights[{name!r}]")
        if not 0 < weight <= MAX_FIXED_WEIGHT:
            raise ContractError(
                f"weights[{name!r}] must be > 0 and <= {MAX_FIXED_WEIGHT:g}, got {weight!r}"
            )
        checked[name] = weight
    return MappingProxyType(checked)


def declared_weight(value: Any, name: str) -> float:
    """A declared weight: an integer from 1 to 100 (HPE's nodeWeightage), as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(f"{name} must be an integer from 1 to 100, got {type_name(value)}")
    low, high = DECLARED_WEIGHTS[0], DECLARED_WEIGHTS[-1]
    if not (low <= value <= high and float(value).is_integer()):
        raise ContractError(
            f"{name} must be an integer from {low} to {high} (weight_policy 'declared', HPE's "
            f"nodeWeightage range), got {value!r}"
        )
    return float(value)


def member_weight(
    policy: str,
    fixed: Mapping[str, float] | None,
    contract: str,
    member: str,
    payload: Mapping[str, Any],
    default: float,
) -> float:
    """The weight `member` gets under `policy` for a register or ready `payload`
    (`default`: its weight when the payload declares none)."""
    if policy == "declared":
        return declared_weight(payload.get("weight", default), "payload.weight")
    if "weight" in payload:
        how = "all 1" if policy == "equal" else "fixed by its admins"
        raise ContractError(
            f"contract {contract} has weight_policy {policy!r} (weights are {how}): leave "
            "out payload.weight"
        )
    if policy == "equal":
        return 1.0
    assert fixed is not None
    weight = fixed.get(member)
    if weight is None:
        raise ContractError(
            f"{member} has no weight in contract {contract}'s fixed weights; its admins list "
            "every member's weight when they create it"
        )
    return weight
