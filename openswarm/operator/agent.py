"""The operator: on each host, watches the ledger for tasks assigned to it and runs them.

It announces itself and stays visibly alive with `operator_heartbeat` (naming the peer
identity its runs use), and for each task assigned to it (all operators, it by name, or any
N of them while places are left) claims a run with `task_report accepted`, checks and runs it
(openswarm.operator.runner) and reports `running`, then `completed` or `failed` with the exit
code and the end of the log, or `refused` with the reason. A reset (or a new assignment)
stops the run. Every report is a signed ledger transaction; the ledger refuses one that does
not match the task's current assignment.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.operator.config import OperatorConfig
from openswarm.operator.runner import TaskRun, printable, run_folder, stop_orphan
from openswarm.operator.spec import SpecError, agreed_spec

log = logging.getLogger(__name__)
MAX_DETAIL = 500
STOP_WAIT_S = 30.0  # how long a stopping operator waits for its runs to end
#: How long a report is retried while no ledger node answers.
REPORT_PATIENCE_S = 300.0


class OperatorError(RuntimeError):
    """The operator cannot work (the ledger refuses its heartbeat); the message says why."""


class Operator:
    """One host's operator (see the module docstring)."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.name = config.identity.name
        self.client = LedgerClient(list(config.ledger), config.identity, timeout_s=15)
        self.runs: dict[str, TaskRun | _Finished] = {}  # task -> its current (or last) run here
        self._next_heartbeat = 0.0
        self._stop = threading.Event()

    # --- the loop -------------------------------------------------------------------------
    def serve(self) -> None:
        """Announce this operator, then watch and run tasks until `stop()`."""
        while True:  # a ledger that is not up yet is waited for; a refusal is final
            try:
                self.heartbeat()
                break
            except LedgerError as exc:
                if not exc.transient or self._stop.wait(self.config.poll_s):
                    raise
                log.warning("operator %s: waiting for the ledger: %s", self.name, exc)
        log.info("operator %s runs tasks as peer %s", self.name, self.config.peer_identity.name)
        try:
            while not self._stop.is_set():
                try:
                    self.step()
                except LedgerError as exc:  # the ledger is away for now: keep trying
                    log.warning("operator %s: %s", self.name, exc)
                self._stop.wait(self.config.poll_s)
        finally:
            running = [r for r in self.runs.values() if isinstance(r, TaskRun) and r.active]
            for run in running:
                run.stop()
            for run in running:
                run.finished.wait(STOP_WAIT_S)
            self.client.close()

    def stop(self) -> None:
        self._stop.set()

    def step(self) -> None:
        """One look at the ledger: heartbeat when due, start and stop runs."""
        if time.monotonic() >= self._next_heartbeat:
            self.heartbeat()
        view = self.client.call("Tasks", {})
        for name, task in view["tasks"].items():
            self._follow(name, task)

    def heartbeat(self) -> None:
        payload = {
            "peer": self.config.peer_identity.name,
            "host": self.config.host,
            "heartbeat_s": self.config.heartbeat_s,
        }
        outcome = self.client.submit("operator_heartbeat", payload=payload)
        if not outcome.applied:
            raise OperatorError(f"the ledger refused operator {self.name}: {outcome.reason}")
        self._next_heartbeat = time.monotonic() + self.config.heartbeat_s

    # --- one task -------------------------------------------------------------------------
    def _follow(self, name: str, task: dict[str, Any]) -> None:
        assignment = task.get("assignment")
        current = self.runs.get(name)
        number = None if assignment is None else assignment["run"]
        if isinstance(current, TaskRun) and current.run != number and current.active:
            log.info("operator %s: task %s was reset; stopping its run", self.name, name)
            current.stop()  # returns at once; the run's thread ends it
        if assignment is None or not self._mine(assignment):
            return
        record = assignment["runs"].get(self.name)
        if current is not None and current.run == number:
            if isinstance(current, _Claimed):
                self._resume_claim(name, number, record)
            elif isinstance(current, TaskRun):
                self._answer_log_request(name, current, assignment.get("log_requests", 0))
            return
        if record is not None:  # this run began here before the operator (re)started
            if record["state"] in ("accepted", "running"):
                stopped = stop_orphan(run_folder(self.config, name, number))
                self._report(name, number, "failed", detail="the operator restarted mid-run"
                             + (" (its process was stopped)" if stopped else ""))  # fmt: skip
            self.runs[name] = _Finished(name, number)
            return
        if self._busy():
            return  # one run at a time on a fixed port: the next waits for the port
        self._claim(name, number)

    def _mine(self, assignment: dict[str, Any]) -> bool:
        if assignment["operators"] is not None:
            return self.name in assignment["operators"]
        claimed = sum(
            r["state"] in ("accepted", "running", "completed", "failed")
            for r in assignment["runs"].values()
        )
        return self.name in assignment["runs"] or claimed < assignment["target"]["peers"]

    def _busy(self) -> bool:
        """Whether a run here still holds the fixed port runs serve on (port 0: never)."""
        if self.config.listen.rpartition(":")[2] == "0":
            return False
        return any(isinstance(r, TaskRun) and r.active for r in self.runs.values())

    def _claim(self, name: str, number: int) -> None:
        """Claim run `number` of task `name` on the ledger (`accepted`), then start it."""
        self.runs[name] = _Claimed(name, number)  # whatever the answer, the ledger decides
        outcome = self.client.submit(
            "task_report", payload={"task": name, "run": number, "state": "accepted"}
        )
        if not outcome.applied:  # another site took the last place, or the task was reset
            log.info("operator %s: not running task %s: %s", self.name, name, outcome.reason)
            self.runs[name] = _Finished(name, number)
            return
        self._launch(name, number)

    def _resume_claim(self, name: str, number: int, record: dict[str, Any] | None) -> None:
        """A claim whose answer was lost, or whose run did not start yet: go on from what
        the ledger recorded."""
        if record is None:
            self._claim(name, number)
        elif record["state"] == "accepted":
            self._launch(name, number)
        else:
            self.runs[name] = _Finished(name, number)

    def _launch(self, name: str, number: int) -> None:
        try:
            spec = agreed_spec(self.client, name)
        except SpecError as exc:
            self.runs[name] = _Finished(name, number)
            self._report(name, number, "refused", detail=str(exc))
            return
        run = TaskRun(name, number, spec, self.config, self.client,
                      lambda state, **more: self._report(name, number, state, **more))  # fmt: skip
        self.runs[name] = run
        log.info("operator %s: starting task %s run %d", self.name, name, number)
        run.start()

    def _answer_log_request(self, name: str, run: TaskRun, asked: int) -> None:
        if asked > run.logs_sent:
            run.logs_sent = asked
            if run.process is not None and run.active:
                self._report(name, run.run, "running", log_tail=run.tail())

    def _report(self, task: str, run: int, state: str, **more: Any) -> None:
        if more.get("detail"):  # one printable line, as the ledger takes it
            more["detail"] = " ".join(printable(str(more["detail"])).split())[:MAX_DETAIL]
        if more.get("log_tail"):
            more["log_tail"] = printable(more["log_tail"], keep="\n\t")
        payload = {
            "task": task,
            "run": run,
            "state": state,
            **{k: v for k, v in more.items() if v is not None},
        }
        deadline = time.monotonic() + REPORT_PATIENCE_S
        while True:  # a report lost to a passing outage would leave the run unfinished
            try:
                outcome = self.client.submit("task_report", payload=payload)
                break
            except LedgerError as exc:
                if not exc.transient or time.monotonic() > deadline or self._stop.is_set():
                    log.warning(
                        "operator %s: could not report %s of %s: %s", self.name, state, task, exc
                    )
                    return
                self._stop.wait(2.0)
        if not outcome.applied:
            log.warning(
                "operator %s: report %s of %s refused: %s", self.name, state, task, outcome.reason
            )
        else:
            log.info("operator %s: task %s run %d %s", self.name, task, run, state)


class _Finished:
    """A run this operator will not start again (done, refused, or taken elsewhere)."""

    def __init__(self, task: str, run: int | None) -> None:
        self.task, self.run = task, run


class _Claimed(_Finished):
    """A run claimed on the ledger (or being claimed) that has not started here yet."""


__all__ = ["Operator", "OperatorError"]
