"""Each site's differential-privacy spend as the ledger's metrics hold it, for the CLI and
the dashboard (pure: reads a contract state's "metrics", never the network)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: How each mode is named for people.
MODE_NAMES = {"site": "site-level DP", "sgd": "DP-SGD"}


def latest_privacy(state: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per site, the privacy record of its latest metrics report that carries one."""
    out: dict[str, dict[str, Any]] = {}
    metrics = state.get("metrics") or {}
    for round in sorted(metrics, key=int):
        for site, report in (metrics[round] or {}).items():
            if isinstance(report, Mapping) and isinstance(report.get("privacy"), Mapping):
                out[site] = dict(report["privacy"])
    return out


def describe(record: Mapping[str, Any]) -> str:
    """One line: "ε 7.99 at δ 1e-05 per record (DP-SGD)", with "budget spent" if so."""
    mode = MODE_NAMES.get(str(record.get("mode")), str(record.get("mode")))
    line = (f"ε {float(record['epsilon']):.2f} at δ {float(record['delta']):g} per "
            f"{record.get('unit')} ({mode})")  # fmt: skip
    return line + ", budget spent" if record.get("spent") else line
