"""Tasks (issue 14): task files and their content-addressed bundles, the ledger's rules for
tasks (immutable, assigned, reset; approved by the admin quorum), and the CLI and Python API
driving them against a real ledger replica."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import run_cli, running_ledger
from site_pki import ledger_time_now  # noqa: F401 - an autouse fixture: ledger time, per test
from test_admin_quorum import Ledger, pki  # noqa: F401 - pki: the module's k=2 swarm

from openswarm.admin import Admin, AdminError, ContextStore
from openswarm.admin.bundles import BundleError, bundle_of
from openswarm.admin.tasks import load_task
from openswarm.ledger.local import LocalLedger
from openswarm.ledger.operators import OperatorRoster
from openswarm.ledger.tasks import TaskBook, TaskError, check_task, run_summary


def _program(root: Path, body: str = "print('training')\n") -> Path:
    folder = root / "program"
    (folder / "lib").mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(body)
    (folder / "lib" / "model.py").write_text("WIDTH = 8\n")
    (folder / "__pycache__").mkdir(exist_ok=True)
    (folder / "__pycache__" / "x.pyc").write_bytes(b"\0")  # left out
    return folder


def _task_file(root: Path, **changes: Any) -> Path:
    _program(root)
    spec = {"name": "run-1", "contract": "study", "program": "program",
            "entrypoint": "train.py", "args": ["--epochs", "2"], "env": {"LR": "0.1"},
            "private_data": "mnist", "requirements": ["scikit-learn>=1.4"], **changes}  # fmt: skip
    path = root / "task.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in spec.items() if v is not None}))
    return path


def test_a_bundle_is_addressed_by_its_content(tmp_path: Path) -> None:
    folder = _program(tmp_path)
    bundle = bundle_of(folder)
    assert sorted(bundle["files"]) == ["lib/model.py", "train.py"]
    assert bundle["size"] == len("print('training')\n") + len("WIDTH = 8\n")
    assert bundle_of(folder) == bundle  # the same files, the same digest
    (folder / "lib" / "model.py").write_text("WIDTH = 9\n")
    assert bundle_of(folder)["digest"] != bundle["digest"]
    with pytest.raises(BundleError, match="more than 10 bytes"):
        bundle_of(folder, limit=10)
    os.symlink(folder / "train.py", folder / "alias.py")
    with pytest.raises(BundleError, match="symbolic link"):
        bundle_of(folder)


def test_a_task_file_is_read_checked_and_bundled(tmp_path: Path) -> None:
    task = load_task(_task_file(tmp_path))
    assert task["name"] == "run-1" and task["type"] == "run_swarm"
    assert task["bundle"] == bundle_of(tmp_path / "program")
    assert task["private_data"] == "mnist" and task["env"] == {"LR": "0.1"}


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"colour": "red"}, "unknown field"),
        ({"program": "nowhere"}, "does not exist"),
        ({"entrypoint": "../train.py"}, "relative path inside the bundle"),
        ({"entrypoint": "/etc/passwd"}, "relative path inside the bundle"),
        ({"entrypoint": "missing.py"}, "is not a file of its bundle"),
        ({"env": {"OPENSWARM_LEDGER": "evil:1"}}, "set by the operator"),
        ({"env": {"DATA_DIR": "/"}}, "set by the operator"),
        ({"env": {"lower": "x"}}, "upper case"),
        ({"env": {"FOO\n": "x"}}, "upper case"),
        ({"env": {"PIP_INDEX_URL": "http://evil"}}, "where code, packages and traffic"),
        ({"env": {"LD_PRELOAD": "/tmp/x.so"}}, "where code, packages and traffic"),
        ({"env": {"PYTHONSTARTUP": "x.py"}}, "where code, packages and traffic"),
        ({"env": {"HTTPS_PROXY": "http://evil:3128"}}, "where code, packages and traffic"),
        ({"env": {"BASH_ENV": "/tmp/x.sh"}}, "set by the operator"),
        ({"env": {"A": "x\ny"}}, "without control characters"),
        ({"args": ["x" * 501]}, "at most 500 characters"),
        ({"requirements": ["numpy\n"]}, "without control characters"),
        ({"requirements": ["--index-url=http://evil"]}, "no pip options"),
        ({"requirements": ["pkg @ https://x/y.whl"]}, "no pip options"),
        ({"private_data": "../../etc"}, "private_data"),
        ({"type": "pull_image"}, "type must be one of run_swarm"),
        ({"name": "bad name"}, "task name"),
    ],
)
def test_a_task_file_that_cannot_work_is_refused(tmp_path: Path, changes: dict,
                                                 match: str) -> None:  # fmt: skip
    with pytest.raises(TaskError, match=match):
        load_task(_task_file(tmp_path, **changes))


def test_the_ledger_checks_the_bundle_digest_itself(tmp_path: Path) -> None:
    task = load_task(_task_file(tmp_path))
    forged = {**task, "bundle": {**task["bundle"], "digest": "0" * 64}}
    with pytest.raises(TaskError, match="is not the digest of its files"):
        check_task(forged)
    grown = {**task, "bundle": {**task["bundle"], "size": 1 << 30}}
    with pytest.raises(TaskError, match="more than the"):
        check_task(grown)
    files = {**task["bundle"]["files"], "train.py/inner": "0" * 64}
    from openswarm.ledger.tasks import bundle_digest

    clash = {**task, "bundle": {**task["bundle"], "files": files,
                                "digest": bundle_digest(files)}}  # fmt: skip
    with pytest.raises(TaskError, match="both a file and a folder"):
        check_task(clash)
    for path in ("a\x00b.py", "C:evil.py"):
        bad = {**task["bundle"]["files"], path: "0" * 64}
        odd = {**task, "bundle": {**task["bundle"], "files": bad, "digest": bundle_digest(bad)}}
        with pytest.raises(TaskError, match="relative path inside the bundle"):
            check_task(odd)


def _roster(*operators: str) -> OperatorRoster:
    roster = OperatorRoster()
    admitted = {**{f"peer-{o}": "peer" for o in operators}, **dict.fromkeys(operators, "operator")}
    for name in operators:
        roster.heartbeat({"peer": f"peer-{name}"}, name, 1.0, admitted, {})()
    return roster


def test_tasks_are_immutable_and_assigned_once_until_reset(tmp_path: Path) -> None:
    book, task = TaskBook(), load_task(_task_file(tmp_path))
    nobody, roster = OperatorRoster(), _roster("op-a", "op-b")

    def change(kind: str, payload: dict, now: float = 2.0, contracts: Any = None,
               operators: OperatorRoster = roster) -> Any:  # fmt: skip
        return book.change(kind, payload, "ops", now, contracts or {}, operators)

    with pytest.raises(TaskError, match="training contract 'study' does not exist"):
        change("task_create", {"task": task}, 1.0)
    change("task_create", {"task": task}, 1.0, {"study": object()})()
    with pytest.raises(TaskError, match="exists already, and a task never changes"):
        change("task_create", {"task": task}, 2.0, {"study": object()})
    with pytest.raises(TaskError, match="not assigned"):
        change("task_reset", {"task": "run-1"})
    with pytest.raises(TaskError, match=r"needs payload \{task\} and nothing else"):
        change("task_create", {"task": task, "junk": 1}, 1.0, {"study": object()})
    for target in ({"peers": 0}, {"all": False}, {"all": 1}, {"operators": ["x"]},
                   {"operators": []}, {"operators": ["op-a", "op-a"]}):  # fmt: skip
        with pytest.raises(TaskError):
            change("task_assign", {"task": "run-1", "target": target})
    with pytest.raises(TaskError, match="no operator is alive"):
        change("task_assign", {"task": "run-1", "target": {"all": True}}, operators=nobody)
    change("task_assign", {"task": "run-1", "target": {"all": True}}, 3.0)()
    with pytest.raises(TaskError, match="assigned already: reset it first"):
        change("task_assign", {"task": "run-1", "target": {"peers": 2}}, 4.0)
    change("task_reset", {"task": "run-1"}, 5.0)()
    [entry] = book.snapshot().values()
    assert entry["assignment"] is None and entry["resets"] == 1 and entry["author"] == "ops"
    with pytest.raises(TaskError, match="no task named 'nope'"):
        change("task_assign", {"task": "nope", "target": {"all": True}}, 6.0)


def test_a_run_reports_only_forward_and_only_its_own(tmp_path: Path) -> None:
    book, roster = TaskBook(), _roster("op-a", "op-b", "op-c")
    book.change("task_create", {"task": load_task(_task_file(tmp_path))}, "ops", 1.0,
                {"study": object()}, roster)()  # fmt: skip

    def report(sender: str, state: str, run: int = 1, **more: Any) -> None:
        payload = {"task": "run-1", "run": run, "state": state, **more}
        book.change("task_report", payload, sender, 3.0, {}, roster)()

    book.change("task_assign", {"task": "run-1", "target": {"peers": 2}}, "ops", 2.0, {},
                roster)()  # fmt: skip
    report("op-a", "accepted")
    report("op-b", "accepted")
    with pytest.raises(TaskError, match="runs on 2 site"):
        report("op-c", "accepted")  # both places are taken
    report("op-c", "refused", detail="not on the allow-list")  # refusing takes no place
    with pytest.raises(TaskError, match="not the task's current assignment"):
        report("op-a", "running", run=2)
    with pytest.raises(TaskError, match="may become running, completed, failed, refused"):
        report("op-a", "accepted")  # accepted already
    report("op-a", "running")
    with pytest.raises(TaskError, match="completed run exited with code 0"):
        report("op-a", "completed", exit_code=3)
    with pytest.raises(TaskError, match="log_tail must be a string of at most"):
        report("op-a", "running", log_tail="x" * 5000)
    with pytest.raises(TaskError, match="without control characters"):
        report("op-a", "running", log_tail="\x1b]0;owned\x07 \x1b[2J")  # a terminal's escapes
    with pytest.raises(TaskError, match="has not announced itself"):
        report("op-z", "accepted")
    report("op-a", "completed", exit_code=0, log_tail="done")
    with pytest.raises(TaskError, match="nothing: it is over"):
        report("op-a", "failed", exit_code=1)
    assert not run_summary(book.snapshot()["run-1"])["done"]
    report("op-b", "failed", exit_code=2)
    summary = run_summary(book.snapshot()["run-1"])
    assert summary["done"] and not summary["ok"]
    assert summary["runs"] == {"op-a": "completed", "op-b": "failed", "op-c": "refused"}
    book.change("task_reset", {"task": "run-1"}, "ops", 4.0, {}, roster)()
    book.change("task_assign", {"task": "run-1", "target": {"operators": ["op-b"]}}, "ops", 5.0,
                {}, roster)()  # fmt: skip
    with pytest.raises(TaskError, match="not the task's current assignment"):
        report("op-b", "accepted", run=1)  # a report for the withdrawn run
    with pytest.raises(TaskError, match="is not assigned to operator op-a"):
        report("op-a", "accepted", run=2)
    report("op-b", "accepted", run=2)


def test_a_task_without_the_required_approvals_changes_nothing(pki, tmp_path: Path) -> None:  # noqa: F811
    ledger = Ledger(pki)  # admin_quorum 2
    ledger.ok("adm-a", "contract_create", "study", min_peers=2)
    ledger.ok("adm-b", "contract_create", "study", min_peers=2)
    task = load_task(_task_file(tmp_path))
    [proposed] = ledger.ok("adm-a", "task_create", task=task)
    assert proposed["kind"] == "proposed" and ledger.snap["tasks"] == {}
    ledger.refused("needs role 'admin'", "pa", "task_create", task=task)
    events = ledger.ok("adm-c", "task_create", task=task)
    assert events[0]["kind"] == "task_created" and events[0]["approvers"] == ["adm-a", "adm-c"]
    shown = ledger.snap["tasks"]["run-1"]["spec"]  # the file list as its length
    assert shown == {**task, "bundle": {**task["bundle"], "files": 2}}
    ledger.ok("adm-a", "task_assign", task="run-1", target={"peers": 1})
    assert ledger.snap["tasks"]["run-1"]["assignment"] is None  # one approval of two


@pytest.fixture
def ledger_net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalLedger]:
    monkeypatch.setenv("OPENSWARM_CONTEXTS", str(tmp_path / "contexts.yaml"))
    monkeypatch.delenv("OPENSWARM_IDENTITY", raising=False)
    yield from running_ledger(tmp_path / "net", replicas=1, peers=["site-a"])


def _ok(*args: str) -> str:
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_tasks_from_the_cli_and_from_python(ledger_net: LocalLedger, tmp_path: Path) -> None:
    ContextStore().add("local", ",".join(ledger_net.endpoints), ledger_net.identity_dir("admin"))
    _ok("contract", "create", "study")
    task_file = _task_file(tmp_path)
    created = _ok("task", "create", "-f", str(task_file))
    assert "task run-1: bundle" in created and "task_created" in created
    assert "run-1: contract study" in _ok("task", "list") and "not assigned" in _ok("task", "list")
    assert '"entrypoint": "train.py"' in _ok("task", "show", "run-1")
    no_one = run_cli("task", "assign", "run-1", "--all")
    assert no_one.returncode == 1 and "no operator is alive" in no_one.stderr
    assert "task_assigned" in _ok("task", "assign", "run-1", "--peers", "3")
    again = run_cli("task", "assign", "run-1", "--peers", "2")
    assert again.returncode == 1 and "reset it first" in again.stderr
    both = run_cli("task", "assign", "run-1")
    assert both.returncode == 1 and "exactly one of --peers N, --all or --target" in both.stderr
    assert "task_reset" in _ok("task", "reset", "run-1")
    bad = run_cli("task", "create", "-f", str(_task_file(tmp_path / "b", entrypoint="x.py")))
    assert bad.returncode == 1 and "is not a file of its bundle" in bad.stderr
    assert "Traceback" not in bad.stderr
    with Admin() as admin:  # the same flow from Python
        with pytest.raises(AdminError, match="exists already"):
            admin.create_task(task_file)
        admin.create_task(_task_file(tmp_path / "c", name="run-2"))
        admin.assign_task("run-2", peers=1)
        tasks = admin.tasks()
        assert tasks["run-2"]["assignment"]["target"] == {"peers": 1}
        assert tasks["run-1"]["resets"] == 1 and tasks["run-1"]["assignment"] is None
        admin.reset_task("run-2")
        with pytest.raises(AdminError, match="not assigned"):
            admin.reset_task("run-2")


def test_a_revoked_operators_unfinished_runs_fail(tmp_path: Path) -> None:
    book, roster = TaskBook(), _roster("op-a", "op-b")
    book.change("task_create", {"task": load_task(_task_file(tmp_path))}, "ops", 1.0,
                {"study": object()}, roster)()  # fmt: skip
    book.change("task_assign", {"task": "run-1", "target": {"all": True}}, "ops", 2.0, {},
                roster)()  # fmt: skip
    payload = {"task": "run-1", "run": 1, "state": "accepted"}
    book.change("task_report", payload, "op-a", 3.0, {}, roster)()
    book.change("task_report", {**payload, "state": "running"}, "op-a", 3.0, {}, roster)()
    book.change("task_report", {**payload, "state": "completed", "exit_code": 0}, "op-a", 4.0,
                {}, roster)()  # fmt: skip
    assert not run_summary(book.snapshot()["run-1"])["done"]  # op-b never began
    events = book.operator_gone("op-b", 5.0)
    assert events == [{"kind": "task_failed", "task": "run-1", "operator": "op-b"}]
    summary = run_summary(book.snapshot()["run-1"])
    assert summary["done"] and summary["runs"] == {"op-a": "completed", "op-b": "failed"}
    assert book.operator_gone("op-a", 6.0) == []  # a finished run stays as it was


def test_all_means_every_operator_alive_now(tmp_path: Path) -> None:
    book, roster = TaskBook(), _roster("op-a", "op-b")  # both last heard of at 1.0, every 10 s
    admitted = {"peer-op-b": "peer", "op-b": "operator"}
    roster.heartbeat({"peer": "peer-op-b", "heartbeat_s": 10}, "op-b", 25.0, admitted, {})()
    book.change("task_create", {"task": load_task(_task_file(tmp_path))}, "ops", 1.0,
                {"study": object()}, roster)()  # fmt: skip
    book.change("task_assign", {"task": "run-1", "target": {"all": True}}, "ops", 40.0, {},
                roster)()  # fmt: skip
    assert book.snapshot()["run-1"]["assignment"]["operators"] == ["op-b"]  # op-a: 39 s silent
