"""What each dashboard page shows, as JSON, computed from the feed's cached view (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openswarm.admin.views import contract_rows, member_rows, operator_rows, perf_rows
from openswarm.ledger.tasks import run_summary
from openswarm.privacy.report import latest_privacy
from openswarm.protocol import ROUND_PHASES
from openswarm.ui.chain import ChainIndex, ContractRun

#: Points per site a page's curves carry at most.
MAX_POINTS = 1000


def ledger_time(state: Mapping[str, Any], nodes: Mapping[str, Mapping[str, Any]]) -> float:
    times = [float(n["ledger_time"]) for n in nodes.values() if n.get("ledger_time") is not None]
    return max(times, default=float(state.get("ledger_time") or 0.0))


def swarm_view(
    state: Mapping[str, Any], nodes: Mapping[str, Mapping[str, Any]], error: str | None
) -> dict[str, Any]:
    """The Swarm page: ledger nodes, operators, peers per contract, contracts and tasks."""
    now = ledger_time(state, nodes)
    contracts = state.get("contracts") or {}
    return {
        "swarm": state.get("swarm"),
        "error": error,
        "height": state.get("height"),
        "ledger_time": now,
        "nodes": [
            {
                "endpoint": endpoint,
                "node": n.get("node"),
                "healthy": "error" not in n,
                "height": n.get("height"),
                "has_quorum": n.get("has_quorum"),
                "ordering": (n.get("ordering") or {}).get("kind"),
                "error": n.get("error"),
            }
            for endpoint, n in sorted(nodes.items())
        ],
        "operators": operator_rows(state, now),
        "peers": {name: member_rows(c, now) for name, c in sorted(contracts.items())},
        "contracts": contract_rows(state),
        "tasks": [
            {"name": name, "author": task.get("author"), **run_summary(task)}
            for name, task in sorted((state.get("tasks") or {}).items())
        ],
    }


def _phases(reports: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Mean seconds per phase over the sites that reported phases for a round."""
    means = {}
    for phase in ROUND_PHASES:
        values = [
            r["phases"][phase]
            for r in reports.values()
            if (r.get("phases") or {}).get(phase) is not None
        ]
        if values:
            means[phase] = sum(values) / len(values)
    return means


def round_rows(state: Mapping[str, Any], run: ContractRun | None) -> list[dict[str, Any]]:
    """The recent rounds (newest first) with leader, outcome, merged digest and its block,
    time per phase, excluded sites, failed leaders and audits."""
    metrics = state.get("metrics") or {}
    rows = []
    for record in reversed(state.get("history") or []):
        number = int(record["round"])
        merge = (run.merges.get(number) if run else None) or {}
        audit = record.get("audit") or None
        rows.append(
            {
                "round": number,
                "status": record.get("status"),
                "leader": record.get("leader"),
                "participants": record.get("participants") or [],
                "digest": record.get("digest"),
                "merged_height": merge.get("height"),
                "seconds": _span(
                    record.get("sealed_at"), record.get("merged_at") or record.get("aborted_at")
                ),
                "phases": _phases(metrics.get(str(number)) or {}),
                "excluded": record.get("excluded") or [],
                "failed_leaders": record.get("failed_leaders") or [],
                "rejected_merges": record.get("rejected_merges") or [],
                "audit": audit,
                "voided": record.get("voided_at") is not None,
            }
        )
    return rows


def _span(start: Any, end: Any) -> float | None:
    if not isinstance(start, int | float) or not isinstance(end, int | float):
        return None
    return max(0.0, float(end) - float(start))


def contract_view(
    name: str,
    state: Mapping[str, Any] | None,
    index: ChainIndex,
    nodes: Mapping[str, Mapping[str, Any]],
    ledger_state: Mapping[str, Any],
) -> dict[str, Any]:
    """The Contract page: per-site progress, ETA and curves, the current round, and the
    recent rounds in detail."""
    run = index.runs.get(name)
    if state is None:
        return {
            "contract": name,
            "exists": run is not None,
            "sites": [],
            "series": {},
            "rounds": [],
            "round": None,
        }
    now = ledger_time(ledger_state, nodes)
    perf = perf_rows(state)
    members = {row["name"]: row for row in member_rows(state, now)}
    current = state.get("current") or {}
    privacy = latest_privacy(state)
    sites = []
    for site, report in perf.items():
        epoch, total = report.get("epoch"), report.get("total_epochs")
        sites.append(
            {
                "name": site,
                "epoch": epoch,
                "total_epochs": total,
                "progress": (min(1.0, epoch / total) if epoch is not None and total else None),
                "loss": report.get("loss"),
                "metric": report.get("metric"),
                "eta_s": report.get("eta_s"),
                "present": members.get(site, {}).get("present"),
                "finished": members.get(site, {}).get("finished"),
                "ready": site in (current.get("ready") or {}),
                "privacy": privacy.get(site),  # ε so far under differential privacy
            }
        )
    return {
        "contract": name,
        "exists": True,
        "round": state.get("round"),
        "merged_rounds": state.get("merged_rounds"),
        "all_finished": bool(state.get("all_finished")),
        "leader": current.get("leader"),
        "sealed": bool(current.get("sealed")),
        "failed_leaders_now": current.get("failed_leaders") or [],
        "sync_interval": state.get("sync_interval"),
        "settings": state.get("settings") or {},
        "demoted": state.get("demoted") or [],
        "bad_auditors": state.get("bad_auditors") or [],
        "sites": sites,
        "series": thinned(run.series()) if run else {},
        "rounds": round_rows(state, run),
        "merges": [
            {"round": r, **m} for r, m in sorted((run.merges if run else {}).items(), reverse=True)
        ],
    }


def thinned(series: dict[str, dict[str, list[Any]]], most: int = MAX_POINTS
            ) -> dict[str, dict[str, list[Any]]]:  # fmt: skip
    """Each site's curves with at most `most` points (evenly spread, the last one kept), so
    that what a page is sent each time does not grow with the run."""
    out = {}
    for site, line in series.items():
        count = len(line["round"])
        if count <= most:
            out[site] = line
            continue
        picks = sorted({round(i * (count - 1) / (most - 1)) for i in range(most)})
        out[site] = {key: [values[i] for i in picks] for key, values in line.items()}
    return out


def run_record(run: ContractRun, state: Mapping[str, Any] | None) -> dict[str, Any]:
    """One experiment as the ledger holds it: settings, final metrics, duration, rounds
    and per-site curves."""
    settings = dict((state or {}).get("settings") or run.settings)
    return {
        "contract": run.contract,
        "settings": settings,
        "final": run.final_metrics(),
        "duration_s": run.duration_s(),
        "rounds": len(run.merges),
        "finished": bool((state or {}).get("all_finished")),
        "series": thinned(run.series()),
    }


def experiments_view(
    index: ChainIndex, ledger_state: Mapping[str, Any], saved: list[dict[str, Any]]
) -> dict[str, Any]:
    """The Experiments page: the runs on this ledger, and the saved ones."""
    contracts = ledger_state.get("contracts") or {}
    live = [
        run_record(run, contracts.get(name))
        for name, run in sorted(index.runs.items())
        if run.metrics or name in contracts
    ]
    return {"swarm": ledger_state.get("swarm"), "live": live, "saved": saved}
