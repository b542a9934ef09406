"""Checks for contract calls; each refusal is a ContractError naming the field."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

DIGEST_RE = re.compile(r"[0-9a-f]{64}")
#: Contract names: short, printable, safe in paths, logs and URLs.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_ENDPOINT_CHARS = 261  # a 255-character host, ':' and a 5-digit port
MAX_JSON_DEPTH = 32
# Integers stay within 64 bits so every replica (and every JSON codec) reads them alike.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


class ContractError(Exception):
    """A call the contract refuses; ``str(e)`` is the reason recorded on the ledger."""


def type_name(value: Any) -> str:
    """The JSON-ish name of a value's type, for error messages."""
    return "null" if value is None else type(value).__name__


def check_int(value: Any, name: str, minimum: int | None = None) -> int:
    """``value`` as a 64-bit int (bools refused), at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(f"{name} must be an integer, got {type_name(value)}")
    if not INT_MIN <= value <= INT_MAX:
        raise ContractError(f"{name} is out of range (64-bit integers only)")
    if minimum is not None and value < minimum:
        raise ContractError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_number(value: Any, name: str, minimum: float | None = None) -> float:
    """``value`` as a finite float (bools refused), at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(f"{name} must be a number, got {type_name(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ContractError(f"{name} is out of range") from None
    if not math.isfinite(number):
        raise ContractError(f"{name} must be finite, got {number!r}")
    if minimum is not None and number < minimum:
        raise ContractError(f"{name} must be >= {minimum:g}, got {number!r}")
    return number


def check_str(value: Any, name: str) -> str:
    """``value`` as a non-empty string."""
    if not isinstance(value, str):
        raise ContractError(f"{name} must be a string, got {type_name(value)}")
    if not value:
        raise ContractError(f"{name} must not be empty")
    return value


def check_digest(value: Any, name: str) -> str:
    """``value`` as a sha256 hex digest (64 lowercase hex characters)."""
    if not isinstance(value, str) or DIGEST_RE.fullmatch(value) is None:
        raise ContractError(f"{name} must be 64 lowercase hex characters (sha256)")
    return value


def check_name(value: Any, name: str) -> str:
    """``value`` as a contract name: 1 to 64 of letters, digits, '.', '_' and '-'."""
    text = check_str(value, name)
    if NAME_RE.fullmatch(text) is None:
        shown = text if len(text) <= 80 else text[:80] + "…"
        raise ContractError(
            f"{name} {shown!r} is not a valid name: use 1 to 64 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return text


def check_endpoint(value: Any, name: str) -> str:
    """``value`` as ``host:port`` with a port in 1..65535."""
    endpoint = check_str(value, name)
    if len(endpoint) > MAX_ENDPOINT_CHARS:
        raise ContractError(f"{name} is longer than {MAX_ENDPOINT_CHARS} characters")
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit():
        raise ContractError(f"{name} must be host:port, got {endpoint!r}")
    if not 1 <= int(port) <= 65535:
        raise ContractError(f"{name} port must be in 1..65535, got {endpoint!r}")
    return endpoint


def json_copy(value: Any, name: str, depth: int = 0) -> Any:
    """Deep-copy a JSON value (lists for tuples), refusing anything JSON cannot carry."""
    if depth > MAX_JSON_DEPTH:
        raise ContractError(f"{name} is nested too deeply")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return check_int(value, name)
    if isinstance(value, float):
        check_number(value, name)
        return value
    if isinstance(value, list | tuple):
        return [json_copy(item, f"{name}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for key in sorted(value, key=lambda k: (not isinstance(k, str), str(k))):
            if not isinstance(key, str):
                raise ContractError(f"{name} keys must be strings, got {type_name(key)}")
            out[key] = json_copy(value[key], f"{name}.{key}", depth + 1)
        return out
    raise ContractError(f"{name} must be a JSON value, got {type_name(value)}")


def compare_key(value: Any) -> str:
    """A canonical form in which 1 == 1.0 but True != 1, for comparing settings values."""

    def norm(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if v is None or isinstance(v, bool | int | float | str):
            return v
        if isinstance(v, list):
            return [norm(item) for item in v]
        return {k: norm(item) for k, item in v.items()}

    return json.dumps(norm(value), sort_keys=True)


def check_fields(
    payload: Mapping[str, Any], call_type: str, required: Sequence[str], optional: Sequence[str]
) -> None:
    """Refuse unknown payload fields and missing required ones."""
    allowed = set(required) | set(optional)
    for key in sorted(payload, key=str):
        if key not in allowed:
            raise ContractError(f"{call_type}: unknown payload field {key!r}")
    for key in required:
        if key not in payload:
            raise ContractError(f"{call_type}: payload field {key!r} is required")


def check_excluded(value: Any, participants: Sequence[str]) -> list[dict[str, str]]:
    """The leader's list of participants it left out of the merge, each with its reason."""
    if not isinstance(value, list):
        raise ContractError("payload.excluded must be a list of {name, reason}")
    checked = []
    for entry in value:
        if not isinstance(entry, Mapping) or set(entry) != {"name", "reason"}:
            raise ContractError("each payload.excluded entry must be {name, reason}")
        name = check_str(entry["name"], "payload.excluded.name")
        reason = check_str(entry["reason"], "payload.excluded.reason")
        if name not in participants:
            raise ContractError(f"payload.excluded names {name}, not a participant")
        checked.append({"name": name, "reason": reason[:500]})
    if len({e["name"] for e in checked}) != len(checked):
        raise ContractError("payload.excluded names a participant twice")
    if len(checked) >= len(participants):
        raise ContractError("payload.excluded leaves no participant in the merge")
    return checked
