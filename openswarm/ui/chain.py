"""What the dashboard reads from the chain itself: one summary per block, and each contract's
metrics and merges over every round (the contract state keeps only the recent ones)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

#: Block kinds that are not transactions.
TICK, GENESIS = "tick", "genesis"
#: Blocks asked for per call while reading a long chain.
BLOCKS_PER_CALL = 500


class BlockSource(Protocol):
    def blocks(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]: ...


def read_blocks(client: BlockSource, start: int, height: int) -> Iterator[list[dict[str, Any]]]:
    """The blocks from `start` to `height` (inclusive), BLOCKS_PER_CALL at a time."""
    while start <= height:
        chunk = client.blocks(start, min(height, start + BLOCKS_PER_CALL - 1))
        if not chunk:
            return
        yield chunk
        last = chunk[-1].get("height")
        if type(last) is not int or last < start:
            return  # not the blocks asked for: stop rather than ask again
        start = last + 1


def block_summary(block: Mapping[str, Any]) -> dict[str, Any]:
    """One line of the ledger explorer: height, hash, kind (a transaction's type, `tick` or
    `genesis`), sender, contract, round, outcome and time."""
    tx = block.get("tx") if isinstance(block.get("tx"), dict) else None
    outcome = _mapping(block.get("outcome"))
    if tx is not None:
        kind, sender, time = tx.get("type"), tx.get("sender"), tx.get("timestamp")
    elif isinstance(block.get("tick"), dict):
        kind, sender = TICK, block["tick"].get("node")
        time = _mapping(outcome.get("result")).get("ledger_time")
    elif "genesis" in block:
        kind, sender, time = GENESIS, None, None
    else:
        kind, sender, time = None, None, None
    return {
        "height": block.get("height"),
        "hash": block.get("hash"),
        "kind": str(kind) if kind is not None else "?",
        "sender": sender,
        "contract": tx.get("contract") if tx else None,
        "round": tx.get("round") if tx else None,
        "status": "applied" if kind == GENESIS else outcome.get("status"),
        "reason": outcome.get("reason"),
        "time": time if isinstance(time, int | float) else None,
        "tx_id": block.get("tx_id"),
    }


@dataclass
class ContractRun:
    """One contract's whole run as the chain records it."""

    contract: str
    settings: dict[str, Any] = field(default_factory=dict)
    #: (round, site) → the site's last applied metrics report of that round
    metrics: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    #: round → {digest, leader, participants, height, time}
    merges: dict[int, dict[str, Any]] = field(default_factory=dict)
    first_time: float | None = None
    last_time: float | None = None
    #: Reports recorded so far (a report that replaces an earlier one counts too).
    reports: int = field(default=0, compare=False)
    _series: tuple[int, dict[str, dict[str, list[Any]]]] | None = field(
        default=None, compare=False, repr=False
    )

    def sites(self) -> list[str]:
        return sorted({site for _, site in self.metrics})

    def series(self) -> dict[str, dict[str, list[Any]]]:
        """Per site: rounds and the loss, metric and epoch it reported for each (computed
        once per change of the reports; treat it as read-only)."""
        if self._series is not None and self._series[0] == self.reports:
            return self._series[1]
        out: dict[str, dict[str, list[Any]]] = {}
        for (round, site), report in sorted(self.metrics.items()):
            line = out.setdefault(site, {"round": [], "loss": [], "metric": [], "epoch": []})
            line["round"].append(round)
            for key in ("loss", "metric", "epoch"):
                line[key].append(report.get(key))
        self._series = (self.reports, out)
        return out

    def final_metrics(self) -> dict[str, dict[str, Any]]:
        """Each site's last report (loss, metric, epoch, total_epochs, round)."""
        final: dict[str, dict[str, Any]] = {}
        for (round, site), report in sorted(self.metrics.items()):
            final[site] = {**report, "round": round}
        return final

    def duration_s(self) -> float | None:
        if self.first_time is None or self.last_time is None:
            return None
        return max(0.0, self.last_time - self.first_time)


class ChainIndex:
    """Blocks added in order, summarised once; contract runs built as they come."""

    def __init__(self) -> None:
        self.summaries: list[dict[str, Any]] = []
        self.runs: dict[str, ContractRun] = {}

    @property
    def next_height(self) -> int:
        return len(self.summaries)

    def add(self, blocks: Iterable[Mapping[str, Any]]) -> int:
        """Take the blocks that continue the chain (others are ignored); returns how many."""
        added = 0
        for block in blocks:
            if block.get("height") != self.next_height:
                continue
            self.summaries.append(block_summary(block))
            self._record(block)
            added += 1
        return added

    def _record(self, block: Mapping[str, Any]) -> None:
        tx = block.get("tx")
        outcome = _mapping(block.get("outcome"))
        if not isinstance(tx, dict) or outcome.get("status") != "applied":
            return
        kind, name = tx.get("type"), tx.get("contract")
        payload = tx.get("payload") if isinstance(tx.get("payload"), dict) else {}
        if kind == "contract_create":  # the payload is the settings
            if isinstance(name, str) and name:
                self.runs.setdefault(name, ContractRun(name)).settings = dict(payload)
            return
        if not isinstance(name, str) or not name:
            return
        time = tx.get("timestamp") if isinstance(tx.get("timestamp"), int | float) else None
        run = self.runs.setdefault(name, ContractRun(name))
        if time is not None:
            run.first_time = time if run.first_time is None else min(run.first_time, time)
            run.last_time = time if run.last_time is None else max(run.last_time, time)
        events = _mapping(outcome.get("result")).get("events")
        for event in events if isinstance(events, list) else []:
            if not isinstance(event, dict) or type(event.get("round")) is not int:
                continue
            if event.get("kind") == "metrics" and isinstance(event.get("member"), str):
                run.metrics[(event["round"], event["member"])] = {
                    k: event.get(k) for k in ("loss", "metric", "epoch", "total_epochs")
                }
                run.reports += 1
            elif event.get("kind") == "merged":
                run.merges[event["round"]] = {
                    "digest": event.get("digest"),
                    "leader": event.get("leader"),
                    "participants": event.get("participants") or [],
                    "height": block.get("height"),
                    "time": time,
                }

    def search(
        self,
        *,
        height: int | None = None,
        kind: str | None = None,
        sender: str | None = None,
        round: int | None = None,
        contract: str | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        """The newest `limit` block summaries that match every filter given."""
        if height is not None:
            found = self.summaries[height : height + 1] if 0 <= height < len(self.summaries) else []
            return list(found)
        hits = []
        for summary in reversed(self.summaries):
            if kind and summary["kind"] != kind:
                continue
            if sender and summary["sender"] != sender:
                continue
            if round is not None and summary["round"] != round:
                continue
            if contract and summary["contract"] != contract:
                continue
            hits.append(summary)
            if len(hits) >= limit:
                break
        return hits


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}
