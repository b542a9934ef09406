"""Operators on the multi-host harness (NetnsLab): three hosts each run a ledger node and an
operator, an admin on a fourth host records contracts and tasks and assigns them.

The lab's network namespaces, their names and their /28 are unique to the run and removed at
the end. The test process, in the root namespace, cannot reach the lab: every client (the
admin's `openswarm` commands, the readiness probe) runs in the admin's host; the operators'
work folders and the ledger nodes' logs are on the shared disk, read directly.

1. A task assigned to all three operators: the training finishes on all three hosts with
   identical final digests, and `openswarm nodes` / `openswarm perf` show the operators and
   the sites.
2. A second training (a contract with min_peers 2): one host's link goes down in the middle
   of it; the two others go on merging rounds without it (two is min_peers), the link comes
   back, that site rejoins from the swarm's model (the latest merged one, or the merge of the
   round its in-flight offer joined), takes part in the rounds again and ends with the same
   final model as the others.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skewed_digits
import yaml
from netns import Host, NetnsLab

from openswarm.ledger.local import LocalLedger, ReplicaProcess

# pytest-timeout's default (300 s) would cut a failing test short of its own deadlines
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

EXAMPLE = Path(__file__).parents[1] / "examples" / "operator_task"
LOAD = Path(__file__).with_name("ledger_load.py")
SITES = (1, 2, 3)
DEADLINE_S = 90.0  # for anything that must happen eventually (generous: CI is loaded)
TRAIN_S = 240.0  # for a whole training
STOP_S = 40.0  # an operator stops its run, then itself
#: How long the others get to merge rounds without the cut-off site: its peer rides out an
#: unreachable ledger for ledger_retry_s (60 s) only, so a longer cut would fail its run.
CUT_S = 45.0


@dataclass
class HostSwarm:
    """Ledger node and operator N on host N (1-3), the admin on host 4."""

    lab: NetnsLab
    net: LocalLedger
    root: Path
    operators: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def admin_host(self) -> Host:
        return self.lab.hosts[3]

    def site_host(self, site: int) -> Host:
        return self.lab.hosts[site - 1]

    def spawn(self, replica: ReplicaProcess, argv: list[str], **popen: Any) -> subprocess.Popen:
        host = next(h for h in self.lab.hosts if h.address == replica.host)
        return self.lab.popen(host, argv, **popen)

    # --- the admin, on host 4 -------------------------------------------------------------
    def cli(self, *args: str, timeout_s: float = DEADLINE_S) -> subprocess.CompletedProcess[str]:
        """`openswarm ARGS` as the admin, in the admin's host."""
        context = ["--connect", ",".join(self.net.endpoints),
                   "--identity", str(self.net.identity_dir("admin"))]  # fmt: skip
        argv = [sys.executable, "-m", "openswarm.cli.main", *args, *context]
        return self.lab.run(
            self.admin_host, argv, capture_output=True, text=True, timeout=timeout_s
        )

    def ok(self, *args: str, timeout_s: float = DEADLINE_S) -> str:
        """`openswarm ARGS`, which must succeed: its output."""
        done = self.cli(*args, timeout_s=timeout_s)
        assert done.returncode == 0, (
            f"openswarm {' '.join(args)}: exit {done.returncode}\n{done.stdout[-3000:]}\n"
            f"{done.stderr[-3000:]}\n{self.logs()}"
        )
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def contract(self, name: str) -> dict[str, Any]:
        return self.json("contract", "show", name)

    def task(self, name: str) -> dict[str, Any]:
        return json.loads(self.ok("task", "show", name))

    def ledger_ready(self) -> None:
        """Every ledger node has quorum and ledger time (probed from the admin's host)."""
        endpoints = ",".join(self.net.endpoints)
        argv = [sys.executable, str(LOAD), "ready", "--pki", str(self.net.pki_dir),
                "--endpoints", endpoints, "--ready", endpoints,
                "--ready-s", str(DEADLINE_S)]  # fmt: skip
        done = self.lab.run(
            self.admin_host, argv, capture_output=True, text=True, timeout=3 * DEADLINE_S
        )
        assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n{self.logs()}"

    # --- the operators, on hosts 1-3 ------------------------------------------------------
    def operator_config(self, site: int) -> Path:
        address = self.site_host(site).address
        config = {
            "ledger": self.net.endpoints,
            "identity": str(self.net.identity_dir(f"op-{site}")),
            "peer_identity": str(self.net.identity_dir(f"site-{site}")),
            "work_dir": str(self.work_dir(site)),
            "private_data": {
                "digits": str(self.root / f"data-{site}"),
                "digits-even": str(self.root / f"even-{site}"),
            },
            "allow_admin_approved": True,
            "listen": f"{address}:0",
            "advertise": address,
            "host": self.site_host(site).name,
            "heartbeat_s": 2,
            "poll_s": 0.5,
        }
        path = self.root / f"operator-{site}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start_operators(self) -> None:
        for site in SITES:
            config = self.operator_config(site)
            with open(self.root / f"operator-{site}.log", "wb") as log:
                argv = [sys.executable, "-m", "openswarm.cli.main", "operator", "start",
                        "--config", str(config)]  # fmt: skip
                proc = self.lab.popen(self.site_host(site), argv, stdout=log,
                                      stderr=subprocess.STDOUT)  # fmt: skip
            self.operators.append(proc)

    def stop_operators(self) -> None:
        """SIGTERM each operator (it stops its run first); the lab kills what is left."""
        for proc in self.operators:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.operators:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_S)

    def work_dir(self, site: int) -> Path:
        return self.root / f"work-{site}"

    def result(self, site: int, task: str, run: int = 1) -> dict[str, Any]:
        path = self.work_dir(site) / "tasks" / task / f"run-{run}" / "result.json"
        assert path.exists(), f"no {path}\n{self.logs()}"
        return json.loads(path.read_text())

    # --- waiting and explaining -----------------------------------------------------------
    def until(self, check: Callable[[], Any], what: str, timeout_s: float = DEADLINE_S) -> Any:
        """Poll `check()` until it returns something true (returned); fails after
        `timeout_s`, or at once if an operator has exited."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = check()
            if value:
                return value
            gone = [f"op-{i + 1}" for i, p in enumerate(self.operators) if p.poll() is not None]
            if gone or time.monotonic() > deadline:
                why = f"operators {gone} exited" if gone else f"{timeout_s:.0f} s passed"
                pytest.fail(f"waiting for {what}: {why}\n{self.logs()}")
            time.sleep(0.5)

    def logs(self) -> str:
        """The ends of the operators' logs, of their runs' logs and of the ledger nodes'."""
        paths = [self.root / f"operator-{site}.log" for site in SITES]
        paths += sorted(self.root.glob("work-*/tasks/*/run-*/run.log"))
        paths += [r.log_path for r in self.net.replicas if r.log_path is not None]
        parts = [f"--- {path.relative_to(self.root.parent)} ---\n"
                 f"{path.read_text(errors='replace')[-2500:]}"
                 for path in paths if path.exists()]  # fmt: skip
        return "\n".join(parts)


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostSwarm]:
    root = tmp_path_factory.mktemp("operator-hosts")
    _write_data(root)
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(NetnsLab(4))
        net = LocalLedger.create(
            root / "net", replicas=3, peers=[f"site-{s}" for s in SITES],
            extra_identities=[(f"op-{s}", "operator") for s in SITES],
            identity_hosts={f"site-{s}": [lab.hosts[s - 1].address] for s in SITES},
            hosts=[h.address for h in lab.hosts[:3]],
        )  # fmt: skip
        stack.callback(net.close)  # runs before the lab's close
        swarm = HostSwarm(lab, net, root)
        net.spawner = swarm.spawn
        net.start()
        swarm.ledger_ready()
        stack.callback(swarm.stop_operators)  # runs before the ledger's close
        swarm.start_operators()
        swarm.until(lambda: _alive(swarm) == {f"op-{s}" for s in SITES}, "three live operators")
        yield swarm


def _write_data(root: Path) -> None:
    """Each site's skewed share of the digits in data-N, and cut to the smallest share's
    size in even-N: with as many batches everywhere, all sites train (and seal rounds)
    together until the end, so that a cut in the middle of a training has others to go on."""
    skewed_digits.write_site_dirs(root, len(SITES))
    shares = [np.load(root / f"data-{site}" / "digits.npz") for site in SITES]
    size = min(len(share["y"]) for share in shares)
    for site, share in zip(SITES, shares, strict=True):
        (root / f"even-{site}").mkdir()
        np.savez(root / f"even-{site}" / "digits.npz", x=share["x"][:size], y=share["y"][:size])


def _alive(swarm: HostSwarm) -> set[str]:
    operators = swarm.json("nodes")["operators"]
    return {name for name, row in operators.items() if row["alive"]}


def _task_file(swarm: HostSwarm, name: str, contract: str, env: dict[str, str],
               **changes: Any) -> Path:  # fmt: skip
    """The example task (examples/operator_task) as `name`, for `contract`."""
    folder = swarm.root / name
    shutil.copytree(EXAMPLE, folder)
    spec = yaml.safe_load((folder / "task.yaml").read_text())
    spec.update({"name": name, "contract": contract,
                 "env": {"EPOCHS": "2", "SYNC_FREQUENCY": "4", "MIN_PEERS": "3", **env},
                 **changes})  # fmt: skip
    (folder / "task.yaml").write_text(yaml.safe_dump(spec))
    return folder / "task.yaml"


def _wait_task(swarm: HostSwarm, name: str) -> str:
    """`openswarm task wait NAME`: every site must complete it."""
    done = swarm.cli("task", "wait", name, "--timeout", str(TRAIN_S), timeout_s=TRAIN_S + 60)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}\n{swarm.logs()}"
    for site in SITES:
        assert f"op-{site} as site-{site}: completed (exit 0)" in done.stdout, done.stdout
    return done.stdout


def test_three_hosts_train_an_assigned_task_to_one_model(swarm: HostSwarm) -> None:
    swarm.ok("contract", "create", "digits", "--settings", json.dumps({"min_peers": 3}))
    swarm.ok("task", "create", "-f", str(_task_file(swarm, "digits-1", "digits", {})))
    swarm.ok("task", "assign", "digits-1", "--all")
    _wait_task(swarm, "digits-1")

    results = {site: swarm.result(site, "digits-1") for site in SITES}
    assert {r["site"] for r in results.values()} == {f"site-{s}" for s in SITES}
    assert len({r["final_digest"] for r in results.values()}) == 1, results
    assert all(r["rounds"] >= 2 for r in results.values()), results

    operators = swarm.json("nodes")["operators"]
    assert {name: (row["alive"], row["peer"], row["host"]) for name, row in operators.items()} == {
        f"op-{s}": (True, f"site-{s}", f"host-{s}") for s in SITES
    }
    perf = swarm.json("perf", "digits")
    assert set(perf) == {f"site-{s}" for s in SITES}, perf
    assert all(row["loss"] is not None and row["eta_s"] == 0.0 for row in perf.values()), perf


def test_a_cut_off_site_rejoins_the_training_and_ends_with_the_same_model(
    swarm: HostSwarm,
) -> None:
    contract, task = "digits-cut", "digits-2"
    swarm.ok("contract", "create", contract, "--settings", json.dumps({"min_peers": 2}))
    task_file = _task_file(swarm, task, contract, {"EPOCHS": "24", "MIN_PEERS": "2"},
                           private_data="digits-even")  # fmt: skip
    swarm.ok("task", "create", "-f", str(task_file))
    swarm.ok("task", "assign", task, "--all")

    def training() -> dict[str, Any] | None:
        """The contract's state once all three run it and two rounds merged all three."""
        runs = swarm.task(task)["assignment"]["runs"]
        if sorted(r["state"] for r in runs.values()) != ["running"] * 3:
            return None
        state = swarm.contract(contract)
        return state if len(_merged(state, lambda p: len(p) == 3)) >= 2 else None

    before = swarm.until(training, "two rounds merged by all three sites", TRAIN_S)
    assert not before["finished"], before["finished"]  # else the cut comes too late
    swarm.lab.link_down(swarm.site_host(3))
    cut_at = before["round"]

    def without_site_3() -> dict[str, Any] | None:
        state = swarm.contract(contract)
        merged = _merged(state, lambda p: "site-3" not in p, after=cut_at)
        return state if len(merged) >= 2 else None

    during = swarm.until(without_site_3, "two rounds merged without site-3", CUT_S)
    assert not during["finished"], during["finished"]  # site-1 and site-2 still train
    swarm.lab.link_up(swarm.site_host(3))
    back_at = during["round"]

    def rejoined() -> list[int]:
        return _merged(swarm.contract(contract), lambda p: "site-3" in p, after=back_at)

    swarm.until(rejoined, "site-3 to take part in a merged round again")
    _wait_task(swarm, task)
    results = {site: swarm.result(site, task) for site in SITES}
    assert len({r["final_digest"] for r in results.values()}) == 1, results
    # It came back to the swarm's model: it caught up from the latest merged one before
    # offering its own (logged: "rejoining from that model"), or, when its offer was already
    # in flight across the cut, that offer joined the round under way and it loaded that
    # round's merge. Never did it give up on a merged model and keep its own parameters.
    log = (swarm.work_dir(3) / "tasks" / task / "run-1" / "run.log").read_text()
    assert "keeping this site's parameters" not in log, log[-3000:]
    caught_up = [int(r) for r in re.findall(r"the swarm merged round (\d+) while this site was "
                                            r"away; rejoining from that model", log)]  # fmt: skip
    assert all(r > cut_at for r in caught_up), (caught_up, cut_at)


def _merged(state: dict[str, Any], who: Callable[[list[str]], bool], after: int = 0) -> list[int]:
    """The rounds after round `after` that merged, with participants `who` accepts."""
    return [
        h["round"]
        for h in state["history"]
        if h["round"] > after and h["status"] == "merged" and who(h["participants"])
    ]
