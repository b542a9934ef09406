"""`openswarm export`: a contract's per-site metrics and settings, as the ledger holds them,
written to MLflow or TensorBoard."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.ui.chain import ChainIndex, read_blocks

TARGETS = ("mlflow", "tensorboard")
#: What `pip install` adds the exporters' libraries.
INSTALL_HINT = "pip install 'openswarm[export]'"


class ExportError(ValueError):
    """The export cannot be done; the message says why and what to do."""


class Report(NamedTuple):
    """One site's metrics report of one round; `time` is the report's ledger time (seconds)."""

    round: int
    loss: float | None
    metric: float | None
    epoch: int | None
    time: float | None


@dataclass
class ContractExport:
    """What an exporter writes: the contract, its settings and each site's reports."""

    contract: str
    swarm: str
    height: int
    settings: dict[str, Any]
    reports: dict[str, list[Report]] = field(default_factory=dict)

    def sites(self) -> list[str]:
        return sorted(self.reports)


def setting_text(value: Any) -> str:
    """A setting as text: strings as they are, anything else as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def report_times(blocks: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int, str], float]:
    """(contract, round, site) → the time of the last applied metrics report (tx timestamp)."""
    times: dict[tuple[str, int, str], float] = {}
    for block in blocks:
        tx, outcome = block.get("tx"), block.get("outcome") or {}
        if not isinstance(tx, dict) or outcome.get("status") != "applied":
            continue
        stamp = tx.get("timestamp")
        if not isinstance(stamp, int | float):
            continue
        for event in (outcome.get("result") or {}).get("events") or []:
            if event.get("kind") == "metrics":
                key = (str(tx.get("contract")), int(event["round"]), str(event["member"]))
                times[key] = float(stamp)
    return times


def read_contract(client: LedgerClient, contract: str) -> ContractExport:
    """The contract's settings and every site's reports, from the ledger's state and chain."""
    state = client.state(contract)["state"]
    if state is None:
        raise ExportError(
            f"there is no contract {contract!r} on this ledger "
            "(`openswarm contract list` shows the contracts)"
        )
    status = client.status()
    height = int(status.get("height") or 0)
    index, times = ChainIndex(), {}
    for chunk in read_blocks(client, 0, height):
        start = index.next_height
        if index.add(chunk) == 0:
            break
        stop = index.next_height
        times.update(report_times(b for b in chunk if start <= b.get("height", -1) < stop))
    run = index.runs.get(contract)
    settings = state.get("settings") if isinstance(state.get("settings"), dict) else None
    export = ContractExport(
        contract=contract,
        swarm=str(status.get("swarm") or ""),
        height=index.next_height - 1,
        settings=dict(settings if settings is not None else (run.settings if run else {})),
    )
    for site, line in (run.series() if run else {}).items():
        export.reports[site] = [
            Report(round, loss, metric, epoch, times.get((contract, round, site)))
            for round, loss, metric, epoch in zip(
                line["round"], line["loss"], line["metric"], line["epoch"], strict=True
            )
        ]
    if not export.reports:
        raise ExportError(
            f"contract {contract!r} has no metrics yet: no site has reported a round to the ledger"
        )
    return export


def export_contract(client: LedgerClient, contract: str, target: str, to: str | None) -> str:
    """Write `contract`'s metrics to `target` (mlflow or tensorboard) at `to` (None: the
    target's default); returns what was written where."""
    if target not in TARGETS:
        raise ExportError(f"unknown export target {target!r}: use mlflow or tensorboard")
    try:
        data = read_contract(client, contract)
    except LedgerError as exc:
        raise ExportError(f"reading contract {contract!r} from the ledger failed: {exc}") from exc
    if target == "mlflow":
        from openswarm.export.to_mlflow import export_mlflow

        return export_mlflow(data, to)
    from openswarm.export.to_tensorboard import export_tensorboard

    return export_tensorboard(data, to)
