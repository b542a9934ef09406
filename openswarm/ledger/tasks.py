"""Tasks on the ledger: what every site of a swarm should run, defined once by its admins.

A task names a training contract, a program bundle by its content digest (the files travel
outside the ledger; see openswarm.admin.bundles), the entry point in it, its arguments and
environment, the name of the private data folder each host maps for it, and the Python
requirements it needs. `task_create` records one (immutable from then on: a changed task is
a new task), `task_assign` asks sites to run it (`all` of them, or any `peers` of them), and
`task_reset` withdraws that. All three are admin transactions, approved by the swarm's admin
quorum like `contract_create`. Like the contract, this module is deterministic: no I/O, no
clock but the ledger time it is given.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from openswarm.ledger.contract_checks import (
    ContractError,
    check_digest,
    check_int,
    check_name,
    check_str,
)
from openswarm.ledger.operators import OperatorRoster, alive

Events = list[dict[str, Any]]
TASK_TYPES = ("run_swarm",)
#: The largest program bundle a task may name (its files together).
MAX_BUNDLE_BYTES = 64 << 20
MAX_ITEMS = 64  # arguments, environment variables, requirements
MAX_TEXT = 500  # characters of one argument, value or description
MAX_FILES = 1000  # files of one bundle
MAX_PATH_BYTES = 64 << 10  # their paths together
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
#: Variables a task may not set: what the operator sets for the run itself (the site's
#: identity, ledger, data), and what would change where code or packages come from.
RESERVED_ENV = ("DATA_DIR", "MAX_EPOCHS", "PATH", "HOME", "SCRATCH_DIR", "MODEL_DIR", "BASH_ENV",
                "ENV", "SHELL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
                "CURL_CA_BUNDLE", "NO_PROXY")  # fmt: skip
_RESERVED_PREFIXES = ("OPENSWARM_", "SL_", "PIP_", "LD_", "PYTHON", "UV_", "CONDA", "GIT_")
_RESERVED_SUFFIXES = ("_PROXY",)  # where the run's traffic would go
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LOG_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but tab and newline
# a requirement: a distribution name, maybe extras, and version clauses; nothing else (no
# pip options such as --index-url, no URLs or paths: a site installs from its own index)
_REQUIREMENT = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}(\[[A-Za-z0-9._,-]{1,100}\])?"
    r"((===|==|~=|!=|<=|>=|<|>)[A-Za-z0-9.*+!_-]{1,40})?"
    r"(,(===|==|~=|!=|<=|>=|<|>)[A-Za-z0-9.*+!_-]{1,40}){0,3}"
)
TASK_FIELDS = ("args", "bundle", "contract", "description", "entrypoint", "env", "name",
               "private_data", "requirements", "type")  # fmt: skip


#: A run's states, and which may follow each (None: no report yet). `refused`: the site
#: will not run it (bundle not allowed or not matching, data not configured).
NEXT_STATES: dict[str | None, tuple[str, ...]] = {
    None: ("accepted", "refused"),
    "accepted": ("running", "completed", "failed", "refused"),  # "running" may be lost
    "running": ("running", "completed", "failed"),
}
CLAIMING = ("accepted", "running", "completed", "failed")  # runs that count towards {peers: N}
FINISHED = ("completed", "failed", "refused")
REPORT_FIELDS = ("detail", "exit_code", "log_tail", "run", "state", "task")
MAX_LOG_TAIL = 4000  # characters of a run's log on the ledger (the whole log stays on the host)


class TaskError(ContractError):
    """A task, assignment or reset the ledger refuses; the message names the fix."""


def check_task(spec: Any) -> dict[str, Any]:
    """A task definition, checked field by field; TaskError names the first problem."""
    if not isinstance(spec, Mapping):
        raise TaskError("a task is an object of " + ", ".join(TASK_FIELDS))
    unknown = sorted(str(k) for k in spec if k not in TASK_FIELDS)
    if unknown:
        raise TaskError(f"task: unknown field(s) {', '.join(unknown)}; known: "
                        f"{', '.join(TASK_FIELDS)}")  # fmt: skip
    try:
        name = check_name(spec.get("name"), "task name")
        kind = spec.get("type", "run_swarm")
        if kind not in TASK_TYPES:
            raise TaskError(f"task {name}: type must be one of {', '.join(TASK_TYPES)}, "
                            f"got {kind!r}")  # fmt: skip
        checked = {
            "name": name,
            "type": kind,
            "contract": check_name(spec.get("contract"), f"task {name}: contract"),
            "bundle": _check_bundle(spec.get("bundle"), name),
            "entrypoint": _check_path(spec.get("entrypoint"), f"task {name}: entrypoint"),
            "args": _check_texts(spec.get("args", []), f"task {name}: args"),
            "env": _check_env(spec.get("env", {}), name),
            "private_data": None if spec.get("private_data") is None else check_name(
                spec["private_data"], f"task {name}: private_data"),
            "requirements": _check_requirements(spec.get("requirements", []), name),
            "description": "" if spec.get("description") in (None, "") else _check_text(
                spec["description"], f"task {name}: description"),
        }  # fmt: skip
    except TaskError:
        raise
    except ContractError as exc:
        raise TaskError(str(exc)) from None
    if checked["entrypoint"] not in checked["bundle"]["files"]:
        raise TaskError(f"task {name}: entrypoint {checked['entrypoint']!r} is not a file of "
                        "its bundle")  # fmt: skip
    return checked


def bundle_digest(files: Mapping[str, str]) -> str:
    """The digest of a bundle whose files (path -> sha256) are `files`."""
    text = json.dumps(dict(sorted(files.items())), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(b"openswarm-bundle\0" + text.encode()).hexdigest()


def _check_bundle(value: Any, task: str) -> dict[str, Any]:
    if not isinstance(value, Mapping) or set(value) != {"digest", "size", "files"}:
        raise TaskError(f"task {task}: bundle must be {{digest, size, files}} (what "
                        "'openswarm task create' computes from the program folder)")  # fmt: skip
    size = check_int(value["size"], f"task {task}: bundle size", minimum=0)
    if size > MAX_BUNDLE_BYTES:
        raise TaskError(f"task {task}: its bundle is {size} bytes, more than the "
                        f"{MAX_BUNDLE_BYTES} a task may carry")  # fmt: skip
    files = value["files"]
    if not isinstance(files, Mapping) or not files or len(files) > MAX_FILES:
        raise TaskError(f"task {task}: bundle files must map 1 to {MAX_FILES} paths to digests")
    checked = {_check_path(p, f"task {task}: bundle file"): check_digest(d, "bundle file digest")
               for p, d in files.items()}  # fmt: skip
    if sum(len(p.encode()) for p in checked) > MAX_PATH_BYTES:
        raise TaskError(f"task {task}: its bundle's paths are longer than {MAX_PATH_BYTES} "
                        "bytes together")  # fmt: skip
    folders = {"/".join(p.split("/")[:i]) for p in checked for i in range(1, p.count("/") + 1)}
    clash = sorted(folders & set(checked))
    if clash:
        raise TaskError(f"task {task}: bundle path {clash[0][:80]!r} is both a file and a "
                        "folder")  # fmt: skip
    digest = check_digest(value["digest"], f"task {task}: bundle digest")
    if digest != bundle_digest(checked):
        raise TaskError(f"task {task}: bundle digest {digest[:12]}… is not the digest of its "
                        "files; let 'openswarm task create' compute it")  # fmt: skip
    return {"digest": digest, "size": size, "files": dict(sorted(checked.items()))}


def _check_path(value: Any, what: str) -> str:
    """A relative path inside a bundle: '/'-separated names, no '..', no absolute path."""
    path = check_str(value, what)
    parts = path.split("/")
    if (len(path) > 255 or path.startswith("/") or "\\" in path or ":" in path
            or _CONTROL.search(path) or any(p in ("", ".", "..") for p in parts)):  # fmt: skip
        raise TaskError(f"{what} {path[:80]!r} must be a relative path inside the bundle "
                        "(no '..', no leading '/')")  # fmt: skip
    return path


def _check_texts(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise TaskError(f"{what} must be a list of at most {MAX_ITEMS} strings")
    return [_check_text(item, what) for item in value]


def _check_text(value: Any, what: str) -> str:
    """A non-empty string of at most MAX_TEXT characters, without control characters."""
    text = check_str(value, what)
    if len(text) > MAX_TEXT or _CONTROL.search(text):
        raise TaskError(f"{what}: {text[:40]!r}… must be at most {MAX_TEXT} characters, "
                        "without control characters")  # fmt: skip
    return text


def _check_env(value: Any, task: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or len(value) > MAX_ITEMS:
        raise TaskError(f"task {task}: env must map at most {MAX_ITEMS} names to strings")
    env = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise TaskError(f"task {task}: env name {str(key)[:80]!r} must be upper case "
                            "letters, digits and '_'")  # fmt: skip
        if (key in RESERVED_ENV or key.startswith(_RESERVED_PREFIXES)
                or key.endswith(_RESERVED_SUFFIXES)):  # fmt: skip
            raise TaskError(f"task {task}: env {key} is set by the operator for the run (its "
                            "identity, ledger, data, and where code, packages and traffic come "
                            "from), not by a task")  # fmt: skip
        env[key] = _check_text(item, f"task {task}: env {key}")
    return dict(sorted(env.items()))


def _check_requirements(value: Any, task: str) -> list[str]:
    items = _check_texts(value, f"task {task}: requirements")
    for item in items:
        if not _REQUIREMENT.fullmatch(item):
            raise TaskError(
                f"task {task}: requirement {item[:80]!r} must be a package name with optional "
                "extras and version clauses (e.g. 'scikit-learn>=1.4'); no pip options, URLs "
                "or paths: each site installs from its own package index"
            )
    return items


class TaskBook:
    """The tasks of one ledger: created once, assigned, reset."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}

    def change(
        self,
        tx_type: str,
        payload: Any,
        sender: str,
        now: float,
        contracts: Mapping[str, Any],
        roster: OperatorRoster,
    ) -> Callable[[], Events]:
        """The checked change `tx_type` asks for, to apply later; TaskError if refused."""
        try:
            return self._change(tx_type, payload, sender, now, contracts, roster)
        except TaskError:
            raise
        except ContractError as exc:  # a field check
            raise TaskError(f"'{tx_type}': {exc}") from None

    def _change(
        self,
        tx_type: str,
        payload: Any,
        sender: str,
        now: float,
        contracts: Mapping[str, Any],
        roster: OperatorRoster,
    ) -> Callable[[], Events]:
        if not isinstance(payload, Mapping):
            raise TaskError(f"'{tx_type}' needs an object payload")
        if tx_type in ("task_create", "task_reset", "task_logs") and set(payload) != {"task"}:
            raise TaskError(f"'{tx_type}' needs payload {{task}} and nothing else")
        if tx_type == "task_create":
            return self._create(payload.get("task"), sender, now, contracts)
        name = payload.get("task")
        task = self.tasks.get(name) if isinstance(name, str) else None
        if task is None:
            names = sorted(self.tasks)
            known = ", ".join(names[:10]) + (" …" if len(names) > 10 else "") or "none yet"
            raise TaskError(f"'{tx_type}': no task named {str(name)[:80]!r} (known: {known})")
        if tx_type == "task_assign":
            return self._assign(task, payload, now, roster)
        if tx_type == "task_report":
            return self._report(task, payload, sender, now, roster)
        if tx_type == "task_logs":
            return self._ask_logs(task)
        return self._reset(task, now)

    def _ask_logs(self, task: dict[str, Any]) -> Callable[[], Events]:
        """Ask the operators running `task` to report the end of their logs again."""
        name, assignment = task["spec"]["name"], task["assignment"]
        if assignment is None:
            raise TaskError(f"task {name} is not assigned, so no site runs it")

        def apply() -> Events:
            assignment["log_requests"] = assignment.get("log_requests", 0) + 1
            return [{"kind": "task_logs_requested", "task": name,
                     "request": assignment["log_requests"]}]  # fmt: skip

        return apply

    def _create(self, spec: Any, sender: str, now: float,
                contracts: Mapping[str, Any]) -> Callable[[], Events]:  # fmt: skip
        task = check_task(spec)
        name = task["name"]
        if name in self.tasks:
            raise TaskError(f"task {name!r} exists already, and a task never changes: create "
                            "the changed one under a new name")  # fmt: skip
        if task["contract"] not in contracts:
            raise TaskError(f"task {name}: training contract {task['contract']!r} does not "
                            "exist; create it first ('openswarm contract create')")  # fmt: skip

        def apply() -> Events:
            self.tasks[name] = {"spec": task, "author": sender, "created_at": now,
                                "assignment": None, "resets": 0}  # fmt: skip
            return [{"kind": "task_created", "task": name, "bundle": task["bundle"]["digest"]}]

        return apply

    def _assign(self, task: dict[str, Any], payload: Mapping[str, Any], now: float,
                roster: OperatorRoster) -> Callable[[], Events]:  # fmt: skip
        name = task["spec"]["name"]
        if set(payload) != {"task", "target"}:
            raise TaskError("'task_assign' needs payload {task, target}")
        target = payload["target"]
        known = sorted(roster.operators)
        living = [n for n in known if alive(roster.operators[n], now)]
        operators: list[str] | None = None
        if isinstance(target, Mapping) and set(target) == {"all"} and target["all"] is True:
            checked: dict[str, Any] = {"all": True}
            operators = living  # one that stopped announcing itself would never report
        elif isinstance(target, Mapping) and set(target) == {"peers"}:
            checked = {"peers": check_int(target["peers"], "target peers", minimum=1)}
        elif isinstance(target, Mapping) and set(target) == {"operators"}:
            chosen = target["operators"]
            if (not isinstance(chosen, list) or not chosen or len(chosen) > MAX_ITEMS
                    or not all(isinstance(o, str) for o in chosen)
                    or len(set(chosen)) != len(chosen)):  # fmt: skip
                raise TaskError(f"target operators must list 1 to {MAX_ITEMS} distinct names")
            unknown = [str(o)[:80] for o in chosen if o not in roster.operators]
            if unknown:
                raise TaskError(
                    f"task {name}: no operator named {', '.join(unknown)} has "
                    f"announced itself (known: {', '.join(known) or 'none'})"
                )
            operators = sorted(chosen)
            checked = {"operators": operators}
        else:
            raise TaskError("task_assign target must be {all: true}, {peers: N} or "
                            "{operators: [NAME, …]}")  # fmt: skip
        if operators == []:
            raise TaskError(f"task {name}: no operator is alive (none has announced itself in "
                            "its last three heartbeats); start 'openswarm operator start' on "
                            "the hosts first")  # fmt: skip
        if task["assignment"] is not None:
            raise TaskError(f"task {name} is assigned already: reset it first "
                            "('openswarm task reset')")  # fmt: skip

        def apply() -> Events:
            task["assignment"] = {"target": checked, "assigned_at": now,
                                  "run": task["resets"] + 1, "operators": operators,
                                  "runs": {}, "log_requests": 0}  # fmt: skip
            return [{"kind": "task_assigned", "task": name, "target": dict(checked),
                     "run": task["resets"] + 1}]  # fmt: skip

        return apply

    def _report(self, task: dict[str, Any], payload: Mapping[str, Any], sender: str,
                now: float, roster: OperatorRoster) -> Callable[[], Events]:  # fmt: skip
        name = task["spec"]["name"]
        if not {"task", "run", "state"} <= set(payload) <= set(REPORT_FIELDS):
            raise TaskError(f"'task_report' needs payload {{{', '.join(REPORT_FIELDS)}}} (task, "
                            "run and state at least)")  # fmt: skip
        assignment = task["assignment"]
        if sender not in roster.operators:
            raise TaskError(f"operator {sender} has not announced itself (operator_heartbeat)")
        run = check_int(payload["run"], "run", minimum=1)
        if assignment is None or assignment["run"] != run:
            raise TaskError(f"task {name} run {run} is not the task's current assignment")
        runs = assignment["runs"]
        if assignment["operators"] is not None and sender not in assignment["operators"]:
            raise TaskError(f"task {name} run {run} is not assigned to operator {sender}")
        state = payload["state"]
        before = runs.get(sender, {}).get("state")
        if state not in NEXT_STATES.get(before, ()):
            allowed = ", ".join(NEXT_STATES.get(before, ())) or "nothing: it is over"
            raise TaskError(f"task {name}: a run that is {before or 'not started'} may become "
                            f"{allowed}, not {str(state)[:40]!r}")  # fmt: skip
        cap = assignment["target"].get("peers")
        taken = sum(r["state"] in CLAIMING for o, r in runs.items() if o != sender)
        if cap is not None and before is None and state in CLAIMING and taken >= cap:
            raise TaskError(f"task {name} runs on {cap} site(s), and {taken} have it already")
        exit_code = payload.get("exit_code")
        if exit_code is not None:
            exit_code = check_int(exit_code, "exit_code", minimum=-255)
            if exit_code > 255:
                raise TaskError("exit_code must be between -255 and 255")
        if state == "completed" and exit_code != 0:
            raise TaskError("a completed run exited with code 0; report any other as failed")
        tail = payload.get("log_tail", "")
        if not isinstance(tail, str) or len(tail) > MAX_LOG_TAIL or _LOG_CONTROL.search(tail):
            raise TaskError(
                f"log_tail must be a string of at most {MAX_LOG_TAIL} characters, "
                "without control characters but newlines and tabs (an admin's "
                "terminal prints it)"
            )
        detail = payload.get("detail", "")
        if detail != "":
            detail = _check_text(detail, "detail")

        def apply() -> Events:
            record = runs.setdefault(sender, {"started_at": now, "reports": 0})
            record["reports"] = record.get("reports", 0) + 1
            record.update({"state": state, "exit_code": exit_code, "detail": detail,
                           "at": now, "peer": roster.operators[sender]["peer"]})  # fmt: skip
            if tail or "log_tail" not in record:
                record["log_tail"] = tail
            return [{"kind": "task_" + state, "task": name, "run": run, "operator": sender}]

        return apply

    def _reset(self, task: dict[str, Any], now: float) -> Callable[[], Events]:
        name = task["spec"]["name"]
        if task["assignment"] is None:
            raise TaskError(f"task {name} is not assigned, so there is nothing to reset")

        def apply() -> Events:
            task["assignment"] = None
            task["resets"] += 1
            return [{"kind": "task_reset", "task": name, "at": now}]

        return apply

    def operator_gone(self, name: str, now: float) -> Events:
        """Operator `name` was revoked: its unfinished runs of current assignments fail (so
        that waiting for them ends)."""
        events = []
        for task_name, task in sorted(self.tasks.items()):
            assignment = task["assignment"]
            if assignment is None:
                continue
            record = assignment["runs"].get(name)
            named = assignment["operators"] is not None and name in assignment["operators"]
            if (record is None and named) or (record and record["state"] not in FINISHED):
                assignment["runs"][name] = {
                    **(record or {"started_at": now, "peer": None, "log_tail": ""}),
                    "state": "failed", "exit_code": None, "at": now,
                    "detail": "its operator was revoked"}  # fmt: skip
                events.append({"kind": "task_failed", "task": task_name, "operator": name})
        return events

    def snapshot(self) -> dict[str, Any]:
        """The tasks, each bundle's file list as its length (the digest pins the list)."""
        shown = {}
        for name, task in sorted(self.tasks.items()):
            copy = _copy(task)
            bundle = copy["spec"]["bundle"]
            bundle["files"] = len(bundle["files"])
            shown[name] = copy
        return shown


def run_summary(task: Mapping[str, Any]) -> dict[str, Any]:
    """Where a task's current assignment stands (from its snapshot): `done` once every
    operator it names has finished (or, for {peers: N}, N have), `ok` if all of those
    completed; `runs` is operator -> state."""
    assignment = task.get("assignment")
    if assignment is None:
        return {"assigned": False, "done": False, "ok": False, "runs": {}}
    runs = {op: r["state"] for op, r in sorted(assignment["runs"].items())}
    if assignment["operators"] is not None:
        counted = [runs.get(op) for op in assignment["operators"]]
        done = all(state in FINISHED for state in counted)
    else:  # a site that refused leaves its place to another
        counted = [state for state in runs.values() if state in ("completed", "failed")]
        done = len(counted) >= assignment["target"]["peers"]
    ok = done and all(state == "completed" for state in counted)
    return {"assigned": True, "run": assignment["run"], "done": done, "ok": ok, "runs": runs}


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


__all__ = ["MAX_BUNDLE_BYTES", "NEXT_STATES", "TASK_FIELDS", "TASK_TYPES", "TaskBook",
           "TaskError", "bundle_digest", "check_task", "run_summary"]  # fmt: skip
