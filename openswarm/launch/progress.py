"""Progress of a local swarm, read from the ledger: one line per peer, and a final summary."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from openswarm.ledger.client import LedgerClient, LedgerError

if TYPE_CHECKING:
    from openswarm.launch.launcher import SwarmRunResult


@dataclass(frozen=True)
class PeerStatus:
    """What the ledger and the process table say about one peer."""

    name: str
    state: str
    round: int | None = None
    epoch: int | None = None
    total_epochs: int | None = None
    loss: float | None = None
    metric: float | None = None

    def line(self) -> str:
        epochs = "-" if self.epoch is None else f"{self.epoch}/{self.total_epochs or '?'}"
        return (
            f"{self.name:<10} {self.state:<12} round {_text(self.round):>4}  "
            f"epoch {epochs:>7}  loss {_text(self.loss):>7}  metric {_text(self.metric):>7}"
        )


@dataclass(frozen=True)
class SwarmProgress:
    """The whole swarm at one moment."""

    peers: tuple[PeerStatus, ...]
    round: int | None
    merged: int
    elapsed_s: float

    def header(self) -> str:
        return f"swarm: round {_text(self.round)}, {self.merged} merged, {self.elapsed_s:.0f} s"


class LedgerWatch:
    """Reads one contract's state; None while the ledger or the contract is not there."""

    def __init__(self, client: LedgerClient, contract: str) -> None:
        self.client = client
        self.contract = contract

    def poll(self) -> dict[str, Any] | None:
        try:
            state = self.client.state(self.contract).get("state")
        except LedgerError:
            return None
        return state if isinstance(state, dict) else None


def build_progress(
    state: Mapping[str, Any] | None, exit_codes: Mapping[str, int | None], elapsed_s: float
) -> SwarmProgress:
    """Combine the contract state (or None) with the peers' exit codes (None: running)."""
    state = state or {}
    members = state.get("members") or {}
    history = state.get("history") or []
    metrics = state.get("metrics") or {}
    peers = []
    for name, code in exit_codes.items():
        rounds = [int(h["round"]) for h in history
                  if h.get("digest") and name in h.get("participants", ())]  # fmt: skip
        reported = {int(r): m[name] for r, m in metrics.items() if name in m}
        last = reported[max(reported)] if reported else {}
        rounds += list(reported)
        peers.append(
            PeerStatus(
                name=name,
                state=_state(code, members.get(name)),
                round=max(rounds) if rounds else None,
                epoch=last.get("epoch"),
                total_epochs=last.get("total_epochs"),
                loss=last.get("loss"),
                metric=last.get("metric"),
            )
        )
    merged = int(state.get("merged_rounds") or 0)
    return SwarmProgress(tuple(peers), state.get("round"), merged, elapsed_s)


def _state(code: int | None, member: Mapping[str, Any] | None) -> str:
    if code is not None:
        return "done" if code == 0 else f"exited({code})"
    if member is None:
        return "starting"
    if member.get("finished"):
        return "finished"
    if not member.get("active", True):
        return "left"
    return "training"


class ProgressPrinter:
    """Shows progress: redrawn in place on a terminal, else a line per change."""

    def __init__(self, stream: IO[str] | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self._shown: dict[str, str] = {}
        self._drawn = 0

    def __call__(self, progress: SwarmProgress) -> None:
        if self.tty:
            self._redraw(progress)
        else:
            self._append(progress)
        self.stream.flush()

    def _redraw(self, progress: SwarmProgress) -> None:
        lines = [progress.header(), *(p.line() for p in progress.peers)]
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F")
        for line in lines:
            self.stream.write(f"\x1b[2K{line}\n")
        self._drawn = len(lines)

    def _append(self, progress: SwarmProgress) -> None:
        for peer in progress.peers:
            line = peer.line()
            if self._shown.get(peer.name) != line:
                self._shown[peer.name] = line
                self.stream.write(f"[{progress.elapsed_s:6.0f} s] {line}\n")


def format_summary(result: SwarmRunResult) -> str:
    """A table of the peers' ends plus rounds, time and where the files are."""
    rows = [f"{'peer':<10} {'exit':>6} {'last round':>10}  final digest"]
    for p in result.peers:
        rows.append(
            f"{p.name:<10} {_text(p.exit_code):>6} {_text(p.last_round):>10}  "
            f"{p.final_digest or '-'}"
        )
    digests = {p.final_digest for p in result.peers}
    if len(digests) == 1 and None not in digests and result.peers:
        rows.append("every peer holds the same final model")
    rows.append(f"rounds: {result.rounds}, {result.seconds:.1f} s, run dir: {result.run_dir}")
    if result.error:
        rows.append(f"error: {result.error}")
    return "\n".join(rows)


def _text(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
