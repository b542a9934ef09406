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
from openswarm.ledger.tasks import TaskBook, TaskError, check_task


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
        ({"env": {"PIP_INDEX_URL": "http://evil"}}, "where code and packages come from"),
        ({"env": {"LD_PRELOAD": "/tmp/x.so"}}, "where code and packages come from"),
        ({"env": {"PYTHONSTARTUP": "x.py"}}, "where code and packages come from"),
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


def test_tasks_are_immutable_and_assigned_once_until_reset(tmp_path: Path) -> None:
    book, task = TaskBook(), load_task(_task_file(tmp_path))
    with pytest.raises(TaskError, match="training contract 'study' does not exist"):
        book.change("task_create", {"task": task}, "ops", 1.0, {})
    book.change("task_create", {"task": task}, "ops", 1.0, {"study": object()})()
    with pytest.raises(TaskError, match="exists already, and a task never changes"):
        book.change("task_create", {"task": task}, "ops", 2.0, {"study": object()})
    with pytest.raises(TaskError, match="not assigned"):
        book.change("task_reset", {"task": "run-1"}, "ops", 2.0, {})
    with pytest.raises(TaskError, match=r"needs payload \{task\} and nothing else"):
        book.change("task_create", {"task": task, "junk": 1}, "ops", 1.0, {"study": object()})
    for target in ({"peers": 0}, {"all": False}, {"all": 1}, {"operators": ["x"]}):
        with pytest.raises(TaskError):
            book.change("task_assign", {"task": "run-1", "target": target}, "ops", 2.0, {})
    book.change("task_assign", {"task": "run-1", "target": {"all": True}}, "ops", 3.0, {})()
    with pytest.raises(TaskError, match="assigned already: reset it first"):
        book.change("task_assign", {"task": "run-1", "target": {"peers": 2}}, "ops", 4.0, {})
    book.change("task_reset", {"task": "run-1"}, "ops", 5.0, {})()
    [entry] = book.snapshot().values()
    assert entry["assignment"] is None and entry["resets"] == 1 and entry["author"] == "ops"
    with pytest.raises(TaskError, match="no task named 'nope'"):
        book.change("task_assign", {"task": "nope", "target": {"all": True}}, "ops", 6.0, {})


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
    ledger.ok("adm-a", "task_assign", task="run-1", target={"all": True})
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
    assert "task_assigned" in _ok("task", "assign", "run-1", "--all")
    again = run_cli("task", "assign", "run-1", "--peers", "2")
    assert again.returncode == 1 and "reset it first" in again.stderr
    both = run_cli("task", "assign", "run-1")
    assert both.returncode == 1 and "exactly one of --peers N or --all" in both.stderr
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
