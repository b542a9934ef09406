"""What admin commands show, computed from the ledger's state alone (no I/O here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openswarm.ledger.operators import alive


def contract_rows(ledger_state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One summary per training contract of `ledger_state` (LedgerClient.state())."""
    rows = []
    for name, contract in sorted((ledger_state.get("contracts") or {}).items()):
        members = contract.get("members") or {}
        settings = contract.get("settings") or {}
        rows.append({
            "contract": name,
            "round": contract.get("round"),
            "merged_rounds": contract.get("merged_rounds", 0),
            "members": len(members),
            "active": sum(1 for m in members.values() if m.get("active")),
            "finished": sum(1 for m in members.values() if m.get("finished")),
            "all_finished": bool(contract.get("all_finished")),
            "merge_method": settings.get("merge_method"),
            "merge_topology": settings.get("merge_topology", "leader"),
            "min_peers": settings.get("min_peers"),
            "audit": settings.get("audit", 0),
        })  # fmt: skip
    return rows


def member_rows(contract: Mapping[str, Any], ledger_time: float) -> list[dict[str, Any]]:
    """The members of one contract's state, each with whether it is present at
    `ledger_time` (it signed a call within the contract's presence_timeout_s)."""
    timeout = float((contract.get("settings") or {}).get("presence_timeout_s") or 30.0)
    rows = []
    for name, member in sorted((contract.get("members") or {}).items()):
        silent = max(0.0, ledger_time - float(member.get("last_seen") or 0.0))
        rows.append({
            "name": name,
            "endpoint": member.get("endpoint"),
            "active": bool(member.get("active")),
            "finished": bool(member.get("finished")),
            "present": bool(member.get("active")) and silent < timeout,
            "silent_s": round(silent, 1),
            "leads": member.get("leads", True),
        })  # fmt: skip
    return rows


def operator_rows(ledger_state: Mapping[str, Any], ledger_time: float) -> dict[str, Any]:
    """Each operator of `ledger_state`: its host, the peer it runs as, when it was last
    heard from and whether it is alive (a heartbeat within three of its intervals)."""
    rows = {}
    for name, entry in sorted((ledger_state.get("operators") or {}).items()):
        silent = max(0.0, ledger_time - float(entry["last_seen"]))
        rows[name] = {"host": entry.get("host", ""), "peer": entry["peer"],
                      "alive": alive(entry, ledger_time), "silent_s": round(silent, 1)}  # fmt: skip
    return rows


def identities_by_role(ledger_state: Mapping[str, Any]) -> dict[str, list[str]]:
    """The admitted identities of `ledger_state`, by role."""
    roles: dict[str, list[str]] = {}
    for name, role in sorted((ledger_state.get("admitted") or {}).items()):
        roles.setdefault(str(role), []).append(name)
    return roles


def eta_seconds(state: Mapping[str, Any]) -> dict[str, float | None]:
    """Each unfinished site's remaining time, from its reported epochs and the ledger's clock.

    Elapsed time runs from the first round's seal to the latest merge (transaction
    timestamps); a site that has done fraction p of its epochs needs elapsed·(1-p)/p more.
    """
    history = state.get("history") or []  # the recent rounds only
    start = state.get("started_at")
    stamps = [h.get("merged_at") or h.get("aborted_at") for h in history]
    latest = max((t for t in stamps if t is not None), default=None)
    # unknown while the ledger's clock (ticking once a second) has not moved since the start
    elapsed = None if start is None or latest is None or latest <= start else latest - start
    reports: dict[str, dict[str, Any]] = {}
    for round in sorted(state.get("metrics") or {}, key=int):
        reports.update(state["metrics"][round])
    etas: dict[str, float | None] = {}
    for name, member in (state.get("members") or {}).items():
        report = reports.get(name) or {}
        epoch, total = report.get("epoch"), report.get("total_epochs")
        if member.get("finished"):
            etas[name] = 0.0
        elif epoch and total and elapsed is not None:
            done = min(epoch / total, 1.0)
            etas[name] = elapsed * (1 - done) / done
        else:
            etas[name] = None
    return etas


def perf_rows(state: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each member's latest report (loss, metric, epochs) and ETA in seconds (HPE's
    PERFDATA), from one contract's state."""
    reports: dict[str, Any] = {}
    for round in sorted(state.get("metrics") or {}, key=int):
        reports.update(state["metrics"][round])
    etas = eta_seconds(state)
    return {name: {**reports.get(name, {}), "eta_s": etas.get(name)}
            for name in sorted(state.get("members") or {})}  # fmt: skip


__all__ = ["contract_rows", "eta_seconds", "identities_by_role", "member_rows", "perf_rows"]
