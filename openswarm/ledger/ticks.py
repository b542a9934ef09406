"""Ledger time: signed clock ticks of the ledger nodes, and the time a majority has reached.

Every ledger node puts a signed tick (its own clock reading) into the ordered log now and
then. Applying the log in order, every node knows the latest tick of each ledger node; the
ledger's time is the latest time that a majority of the admitted ledger nodes have all
reached, and it never goes back. A node whose clock runs ahead cannot move it (it needs a
majority behind it); a node whose clock runs behind can only hold it back while it is
needed for that majority. No peer's clock takes part.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterable, Mapping
from typing import Any

from openswarm.ledger.canonical import canonical_bytes
from openswarm.pki import Identity, PkiError, verify_signature

_KIND = "openswarm-ledger-tick"
_FIELDS = ("swarm", "node", "time", "cert", "signature")


class TickError(ValueError):
    """A tick that is malformed or whose signature does not verify; str() says why."""


def _signed_bytes(swarm: str, node: str, when: float) -> bytes:
    return canonical_bytes({"kind": _KIND, "swarm": swarm, "node": node, "time": when})


def make_tick(identity: Identity, swarm: str, when: float) -> dict[str, Any]:
    """A tick of `identity` (a ledger node) reading `when` (Unix seconds)."""
    signature = identity.sign(_signed_bytes(swarm, identity.name, when))
    return {
        "swarm": swarm,
        "node": identity.name,
        "time": when,
        "cert": identity.cert_pem.decode("ascii"),
        "signature": base64.b64encode(signature).decode("ascii"),
    }


def check_tick_form(tick: Any, swarm: str) -> tuple[str, float, str]:
    """(node, time, cert) of a well-formed tick of `swarm`; TickError otherwise."""
    if not isinstance(tick, Mapping) or sorted(tick) != sorted(_FIELDS):
        raise TickError(f"a tick is an object with exactly the fields {', '.join(_FIELDS)}")
    for name in ("swarm", "node", "cert", "signature"):
        if not isinstance(tick[name], str):
            raise TickError(f"tick field {name!r} must be a string")
    when = tick["time"]
    if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
        raise TickError("tick field 'time' must be a finite number of seconds")
    if tick["swarm"] != swarm:
        raise TickError(f"tick of swarm {tick['swarm']!r}, not {swarm!r}")
    return tick["node"], float(when), tick["cert"]


def check_tick_signature(tick: Mapping[str, Any]) -> None:
    try:
        raw = base64.b64decode(tick["signature"], validate=True)
        verify_signature(
            tick["cert"].encode("ascii"),
            _signed_bytes(tick["swarm"], tick["node"], tick["time"]),
            raw,
        )
    except (PkiError, binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise TickError(f"tick of {tick['node']!r} has a bad signature: {exc}") from exc


def majority_time(latest: Mapping[str, float], nodes: Iterable[str]) -> float | None:
    """The latest time a majority of `nodes` have all reached (None: too few have ticked)."""
    names = sorted(set(nodes))
    readings = sorted(latest[n] for n in names if n in latest)
    majority = len(names) // 2 + 1
    if not names or len(readings) < majority:
        return None
    return readings[len(readings) - majority]


__all__ = ["TickError", "check_tick_form", "check_tick_signature", "majority_time", "make_tick"]
