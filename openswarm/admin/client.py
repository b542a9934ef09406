"""`Admin`: what the admin commands do, from Python (`openswarm contract …`, `nodes`, `perf`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from openswarm.admin.contexts import ContextError, resolve
from openswarm.admin.views import (
    contract_rows,
    identities_by_role,
    member_rows,
    operator_rows,
    perf_rows,
)
from openswarm.ledger.client import LedgerClient, LedgerError, Outcome
from openswarm.ledger.tasks import run_summary
from openswarm.pki import Identity, PkiError


def node_status(client: LedgerClient) -> dict[str, dict[str, Any]]:
    """Each ledger node of `client`'s status, asked one by one (`{"error": …}` for one that
    does not answer)."""
    nodes: dict[str, dict[str, Any]] = {}
    for endpoint in client.endpoints:
        try:
            with LedgerClient([endpoint], client.identity, timeout_s=5) as one:
                nodes[endpoint] = one.status()
        except LedgerError as exc:
            nodes[endpoint] = {"error": str(exc)}
    return nodes


class AdminError(RuntimeError):
    """The ledger refused an admin action, or could not be reached; the message says why."""


class Admin:
    """A swarm's ledger as one of its admins sees it: through a context (see
    openswarm.admin.contexts; None: the current one) or explicit endpoints and identity.
    Every change is a signed ledger transaction, subject to the swarm's admin quorum."""

    def __init__(self, context: str | None = None, *, connect: str | None = None,
                 identity: Path | str | None = None) -> None:  # fmt: skip
        try:
            endpoints, folder = resolve(connect, identity, context)
            self.client = LedgerClient(list(endpoints), Identity.load(folder), timeout_s=10)
        except (ContextError, PkiError, LedgerError) as exc:
            raise AdminError(str(exc)) from exc

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def create_contract(self, name: str, **settings: Any) -> Outcome:
        """Create training contract `name` with `settings` (or approve another admin's
        proposal to); AdminError if the ledger refuses it."""
        try:
            outcome = self.client.submit("contract_create", contract=name, payload=settings)
        except LedgerError as exc:
            raise AdminError(str(exc)) from exc
        if not outcome.applied:
            raise AdminError(f"contract_create refused: {outcome.reason}")
        return outcome

    def create_task(self, task_file: Path | str) -> Outcome:
        """Upload the program bundle of the task that `task_file` defines to the ledger nodes
        and record the task (see openswarm.admin.tasks); TaskError names a mistake in the
        file, AdminError a refusal by the ledger or a bundle no node took."""
        from openswarm.admin.bundles import BundleError, push_bundle
        from openswarm.admin.tasks import read_task

        task, folder = read_task(task_file)
        try:
            push_bundle(self.client.endpoints, self.client.identity, folder, task["bundle"])
        except BundleError as exc:
            raise AdminError(str(exc)) from exc
        return self._submit("task_create", {"task": task})

    def assign_task(self, name: str, *, peers: int | None = None,
                    operators: list[str] | None = None) -> Outcome:  # fmt: skip
        """Ask the sites to run task `name`: any `peers` of them, the named `operators`, or
        (neither) every operator that has announced itself."""
        if peers is not None and operators:
            raise AdminError("give peers or operators, not both")
        target: dict[str, Any] = {"all": True}
        if peers is not None:
            target = {"peers": peers}
        elif operators:
            target = {"operators": sorted(operators)}
        return self._submit("task_assign", {"task": name, "target": target})

    def reset_task(self, name: str) -> Outcome:
        """Withdraw task `name`'s assignment (the sites stop running it)."""
        return self._submit("task_reset", {"task": name})

    def task_status(self, name: str) -> dict[str, Any]:
        """Where task `name`'s assignment stands: `{assigned, run, done, ok, runs}` (see
        openswarm.ledger.tasks.run_summary) plus each run's record under `details`."""
        task = self.tasks().get(name)
        if task is None:
            raise AdminError(f"no task named {name!r} on this ledger")
        assignment = task.get("assignment") or {}
        return {**run_summary(task), "details": assignment.get("runs", {})}

    def task_logs(
        self, name: str, *, refresh: bool = False, timeout_s: float = 30.0
    ) -> dict[str, dict[str, Any]]:
        """Each site's record of task `name`'s current run, its `log_tail` included; with
        `refresh`, the running sites are asked for their latest lines first (a `task_logs`
        transaction) and waited for up to `timeout_s`."""
        runs = self.task_status(name)["details"]
        if not refresh:
            return runs
        self._submit("task_logs", {"task": name})
        asked = {op: r["reports"] for op, r in runs.items() if r["state"] == "running"}
        deadline = time.monotonic() + timeout_s
        while True:
            runs = self.task_status(name)["details"]
            stale = [
                op
                for op, seen in asked.items()
                if runs.get(op, {}).get("reports") == seen and runs[op]["state"] == "running"
            ]
            if not stale or time.monotonic() >= deadline:
                return runs
            time.sleep(0.5)

    def wait_task(
        self, name: str, timeout_s: float = 3600.0, poll_s: float = 2.0
    ) -> dict[str, Any]:
        """Block until task `name`'s runs are done (`task_status`); AdminError after
        `timeout_s`. HPE's isTaskDone, waited for."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.task_status(name)
            if status["done"]:
                return status
            if not status["assigned"]:
                raise AdminError(f"task {name} is not assigned (any more)")
            if time.monotonic() >= deadline:
                raise AdminError(f"task {name} is not done after {timeout_s:g} s: {status['runs']}")
            time.sleep(poll_s)

    def tasks(self) -> dict[str, dict[str, Any]]:
        """Every task on the ledger: its definition, author, and assignment."""
        return self._state().get("tasks") or {}

    def _submit(self, tx_type: str, payload: dict[str, Any]) -> Outcome:
        try:
            outcome = self.client.submit(tx_type, payload=payload)
        except LedgerError as exc:
            raise AdminError(str(exc)) from exc
        if not outcome.applied:
            raise AdminError(f"{tx_type} refused: {outcome.reason}")
        return outcome

    def contracts(self) -> list[dict[str, Any]]:
        """A summary of every training contract (as `openswarm contract list --json`)."""
        return contract_rows(self._state())

    def contract(self, name: str) -> dict[str, Any] | None:
        """Contract `name`'s whole state (None: there is none)."""
        return self._call(lambda: self.client.state(name))["state"]

    def nodes(self) -> dict[str, Any]:
        """Ledger nodes' status, admitted identities by role, operators (alive, host, peer)
        and each contract's members with whether they are present (as `openswarm nodes
        --json`)."""
        status = node_status(self.client)
        state = self._state()
        ledger_time = max((float(n["ledger_time"]) for n in status.values() if "error" not in n),
                          default=float(state.get("ledger_time") or 0.0))  # fmt: skip
        members = {name: member_rows(c, ledger_time)
                   for name, c in sorted((state.get("contracts") or {}).items())}  # fmt: skip
        return {"swarm": state.get("swarm"), "ledger_time": ledger_time, "nodes": status,
                "identities": identities_by_role(state),
                "operators": operator_rows(state, ledger_time), "members": members}  # fmt: skip

    def perf(self, contract: str) -> dict[str, dict[str, Any]]:
        """Each member's latest loss, metric, epochs and ETA in seconds (HPE's PERFDATA)."""
        state = self.contract(contract)
        if state is None:
            raise AdminError(f"no training contract named {contract!r} on this ledger")
        return perf_rows(state)

    def _state(self) -> dict[str, Any]:
        return self._call(self.client.state)

    def _call(self, call: Any) -> Any:
        try:
            return call()
        except LedgerError as exc:
            raise AdminError(str(exc)) from exc


__all__ = ["Admin", "AdminError", "node_status"]
