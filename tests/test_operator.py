"""Operators (issue 14) on one machine: a ledger node, three operators each running tasks as
their site's peer, and an admin that records a task and assigns it. The runs train a real
swarm on each site's private digits and report back through the ledger; refusals (allow-list,
private data, a tampered bundle) are reported, not run."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import skewed_digits
import yaml
from harness import run_cli, running_ledger

from openswarm.admin import Admin, AdminError
from openswarm.admin.tasks import load_task
from openswarm.ledger.local import LocalLedger
from swarmlearning.swci import Swci

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).parents[1] / "examples" / "operator_task"
SITES = ("a", "b", "c")
DEADLINE_S = 240.0


def operator_config(net: LocalLedger, root: Path, site: str, **changes: Any) -> Path:
    data = root / f"data-{site}"
    config = {
        "ledger": net.endpoints,
        "identity": str(net.identity_dir(f"op-{site}")),
        "peer_identity": str(net.identity_dir(f"site-{site}")),
        "work_dir": str(root / f"work-{site}"),
        "private_data": {"digits": str(data)},
        "allow_admin_approved": True,
        "heartbeat_s": 2,
        "poll_s": 0.5,
        **changes,
    }
    path = root / f"operator-{site}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def operators(configs: list[Path], root: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`openswarm operator start` per config, logs under `root`; stopped (SIGTERM) after."""
    procs = []
    try:
        for config in configs:
            log = open(root / f"{config.stem}.log", "wb")  # noqa: SIM115 - closed below
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "openswarm.cli.main", "operator", "start", "--config",
                 str(config)], stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
            log.close()
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _admin(net: LocalLedger) -> Admin:
    return Admin(connect=",".join(net.endpoints), identity=net.identity_dir("admin"))


def wait_operators(admin: Admin, names: list[str], procs: list[subprocess.Popen[bytes]],
                   root: Path) -> None:  # fmt: skip
    deadline = time.monotonic() + 60
    while not set(names) <= set(admin.nodes()["operators"]):
        for proc in procs:
            assert proc.poll() is None, _logs(root)
        assert time.monotonic() < deadline, _logs(root)
        time.sleep(0.5)


def _logs(root: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted(root.glob("*.log")))  # fmt: skip


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[LocalLedger]:
    skewed_data = skewed_digits.write_site_dirs(tmp_path, len(SITES))
    for site, folder in zip(SITES, skewed_data, strict=True):
        folder.rename(tmp_path / f"data-{site}")
    yield from running_ledger(
        tmp_path / "net", replicas=1, peers=[f"site-{s}" for s in SITES],
        extra_identities=[(f"op-{s}", "operator") for s in SITES],
    )  # fmt: skip


def _task_file(root: Path, **changes: Any) -> Path:
    folder = root / "task"
    shutil.copytree(EXAMPLE, folder, dirs_exist_ok=True)
    spec = yaml.safe_load((folder / "task.yaml").read_text())
    spec.update({"env": {"EPOCHS": "2", "SYNC_FREQUENCY": "4", "MIN_PEERS": "3"}, **changes})
    (folder / "task.yaml").write_text(yaml.safe_dump(spec))
    return folder / "task.yaml"


def test_operators_run_an_assigned_task_as_their_sites(swarm: LocalLedger, tmp_path: Path) -> None:
    configs = [operator_config(swarm, tmp_path, s) for s in SITES]
    with _admin(swarm) as admin:
        admin.create_contract("digits", min_peers=3)
        admin.create_task(_task_file(tmp_path))
        with operators(configs, tmp_path) as procs:
            wait_operators(admin, [f"op-{s}" for s in SITES], procs, tmp_path)
            admin.assign_task("digits-1")
            status = admin.wait_task("digits-1", timeout_s=DEADLINE_S, poll_s=1)
            assert status["ok"], (status, _logs(tmp_path))
            nodes = admin.nodes()
            perf = admin.perf("digits")
    details = status["details"]
    assert {op: r["peer"] for op, r in details.items()} == {f"op-{s}": f"site-{s}" for s in SITES}
    assert all(r["exit_code"] == 0 and '"final_digest"' in r["log_tail"] for r in details.values())
    results = [json.loads((tmp_path / f"work-{s}/tasks/digits-1/run-1/result.json").read_text())
               for s in SITES]  # fmt: skip
    assert len({r["final_digest"] for r in results}) == 1 and results[0]["rounds"] >= 2
    assert {r["site"] for r in results} == {f"site-{s}" for s in SITES}
    assert all(o["alive"] for o in nodes["operators"].values())
    assert set(perf) == {f"site-{s}" for s in SITES}
    # the same view from the CLI
    context = [
        "--connect",
        ",".join(swarm.endpoints),
        "--identity",
        str(swarm.identity_dir("admin")),
    ]
    waited = run_cli("task", "wait", "digits-1", "--timeout", "5", *context)
    assert waited.returncode == 0 and "op-a as site-a: completed (exit 0)" in waited.stdout
    logs = run_cli("task", "logs", "digits-1", *context)
    assert logs.returncode == 0 and "=== op-c (completed) ===" in logs.stdout, logs.stderr
    shown = run_cli("nodes", *context)
    assert "op-b" in shown.stdout and "site-b" in shown.stdout, shown.stdout


def test_a_site_refuses_what_it_does_not_allow(swarm: LocalLedger, tmp_path: Path) -> None:
    """Not on the allow-list (a), private data not configured (b), a bundle file tampered
    with on the ledger node (c): each is refused with its reason, nothing runs."""
    task_file = _task_file(tmp_path)
    digest = load_task(task_file)["bundle"]["digest"]
    configs = [
        operator_config(swarm, tmp_path, "a", allow=["0" * 64], allow_admin_approved=False),
        operator_config(swarm, tmp_path, "b", private_data={}),
        operator_config(swarm, tmp_path, "c", allow=[digest], allow_admin_approved=False),
    ]
    with _admin(swarm) as admin:
        admin.create_contract("digits", min_peers=3)
        admin.create_task(task_file)
        stored = swarm.root / "ledger-1" / "blobs"
        entry = load_task(task_file)["bundle"]["files"]["train.py"]
        (stored / entry).write_bytes(b"import os; os.system('echo owned')\n")
        with operators(configs, tmp_path) as procs:
            wait_operators(admin, [f"op-{s}" for s in SITES], procs, tmp_path)
            admin.assign_task("digits-1")
            status = admin.wait_task("digits-1", timeout_s=60, poll_s=0.5)
    assert not status["ok"] and status["runs"] == dict.fromkeys(("op-a", "op-b", "op-c"), "refused")
    details = status["details"]
    assert "not on this site's allow-list" in details["op-a"]["detail"]
    assert "private data 'digits', which this site has not configured" in details["op-b"]["detail"]
    assert "do not match the digest on the ledger" in details["op-c"]["detail"]
    assert not list(tmp_path.glob("work-*/tasks/*/run-1/run.log"))  # nothing ran anywhere


def test_a_reset_stops_the_runs_and_a_new_assignment_runs_again(
    swarm: LocalLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENSWARM_CONTEXTS", str(tmp_path / "contexts.yaml"))
    configs = [operator_config(swarm, tmp_path, s) for s in SITES[:2]]
    with _admin(swarm) as admin:
        admin.create_contract("digits", min_peers=3)  # a third site never comes: runs wait
        admin.create_task(_task_file(tmp_path))
        with operators(configs, tmp_path) as procs:
            wait_operators(admin, ["op-a", "op-b"], procs, tmp_path)
            with pytest.raises(AdminError, match="no operator named op-c"):
                admin.assign_task("digits-1", operators=["op-a", "op-c"])
            admin.assign_task("digits-1", operators=["op-a", "op-b"])
            both = {"op-a": "running", "op-b": "running"}
            _until(lambda: admin.task_status("digits-1")["runs"] == both)
            _until(
                lambda: all(
                    "registered with digits" in (r.get("log_tail") or "")
                    for r in admin.task_logs("digits-1", refresh=True).values()
                )
            )
            admin.reset_task("digits-1")
            _until(lambda: not _training(tmp_path))  # both runs' processes are gone
            # the second assignment through the SWCI-shaped facade
            swci = Swci()
            swci.createContext("lab", ",".join(swarm.endpoints), swarm.identity_dir("admin"))
            swci.switchContext("lab")
            assert swci.finalizeTask("digits-1") and swci.assignTask("digits-1", peers=1)
            _until(lambda: list(swci.getTaskStatus("digits-1")["runs"].values()) == ["running"])
            assert admin.tasks()["digits-1"]["assignment"]["run"] == 2
            assert not swci.isTaskDone("digits-1")
            swci.resetTask("digits-1")
            _until(lambda: not _training(tmp_path))


def _training(root: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"{root}/work-.*/program/train.py"],
                           capture_output=True, text=True)  # fmt: skip
    return found.stdout.split()


def _until(check: Any, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.5)


def _wheel(folder: Path, name: str = "openswarm_probe_dep", version: str = "1.0") -> Path:
    """A one-module wheel, made by hand (a zip with its metadata): the host's own index."""
    import base64
    import hashlib
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"  # noqa: E501
              for path, data in files.items()]  # fmt: skip
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path


PROBE = """\
import json, os, openswarm_probe_dep
names = ("DATA_DIR", "OPENSWARM_IDENTITY", "OPENSWARM_CONTRACT", "OPENSWARM_PEER_NAME", "LR")
print(json.dumps({"value": openswarm_probe_dep.VALUE, **{n: os.environ.get(n) for n in names},
                  "data": sorted(os.listdir(os.environ["DATA_DIR"]))}))
"""


def test_a_run_installs_its_requirements_from_the_hosts_index(
    swarm: LocalLedger, tmp_path: Path
) -> None:
    """The task's requirements come from the site's own package index (find_links here):
    there, the run imports them; where the index lacks one, pip's refusal ends the run as
    failed, its output in the reported log."""
    wheels = tmp_path / "wheels"
    _wheel(wheels)
    (tmp_path / "empty-index").mkdir()
    program = tmp_path / "probe" / "program"
    program.mkdir(parents=True)
    (program / "probe.py").write_text(PROBE)
    spec = {"name": "probe", "contract": "digits", "program": "program", "entrypoint": "probe.py",
            "env": {"LR": "0.1"}, "private_data": "digits",
            "requirements": ["openswarm_probe_dep==1.0"]}  # fmt: skip
    (tmp_path / "probe" / "task.yaml").write_text(yaml.safe_dump(spec))
    empty = str(tmp_path / "empty-index")
    configs = [operator_config(swarm, tmp_path, "a", find_links=str(wheels)),
               operator_config(swarm, tmp_path, "b", find_links=empty)]  # fmt: skip
    with _admin(swarm) as admin:
        admin.create_contract("digits", min_peers=2)
        admin.create_task(tmp_path / "probe" / "task.yaml")
        with operators(configs, tmp_path) as procs:
            wait_operators(admin, ["op-a", "op-b"], procs, tmp_path)
            admin.assign_task("probe", operators=["op-a", "op-b"])
            status = admin.wait_task("probe", timeout_s=DEADLINE_S, poll_s=0.5)
    details = status["details"]
    assert status["runs"] == {"op-a": "completed", "op-b": "failed"}, (status, _logs(tmp_path))
    seen = json.loads(details["op-a"]["log_tail"].strip().splitlines()[-1])
    assert seen == {"value": 42, "DATA_DIR": str(tmp_path / "data-a"), "LR": "0.1",
                    "OPENSWARM_IDENTITY": str(swarm.identity_dir("site-a")),
                    "OPENSWARM_CONTRACT": "digits", "OPENSWARM_PEER_NAME": "site-a",
                    "data": ["digits.npz"]}  # fmt: skip
    assert "could not install the task's requirements" in details["op-b"]["detail"]
    assert "openswarm_probe_dep==1.0" in details["op-b"]["log_tail"]  # pip's own words


def test_an_operator_that_died_stops_its_orphaned_run_when_it_returns(
    swarm: LocalLedger, tmp_path: Path
) -> None:
    """Killed outright (no chance to stop its runs), an operator leaves its run's process
    behind; started again, it stops that process and reports the run failed, and waiting
    for the task ends."""
    configs = [operator_config(swarm, tmp_path, s) for s in SITES[:2]]
    with _admin(swarm) as admin:
        admin.create_contract("digits", min_peers=3)  # a third site never comes: runs wait
        admin.create_task(_task_file(tmp_path))
        with operators(configs, tmp_path) as procs:
            wait_operators(admin, ["op-a", "op-b"], procs, tmp_path)
            admin.assign_task("digits-1", operators=["op-a"])
            _until(lambda: admin.task_status("digits-1")["runs"] == {"op-a": "running"})
            procs[0].kill()
            procs[0].wait()
            orphans = _training(tmp_path)
            assert len(orphans) == 1  # its run lives on, as the site's peer
            (tmp_path / "again").mkdir()
            with operators(configs[:1], tmp_path / "again") as again:
                status = admin.wait_task("digits-1", timeout_s=60, poll_s=0.5)
                assert again[0].poll() is None
    assert status["runs"] == {"op-a": "failed"}
    assert "restarted mid-run (its process was stopped)" in status["details"]["op-a"]["detail"]
    assert not _training(tmp_path)
