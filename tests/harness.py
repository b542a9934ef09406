"""Shared test harness: site processes on a real ledger, and the CLI as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.local import LocalLedger

SCRIPT = Path(__file__).with_name("swarm_script.py")


def running_ledger(root: Path, **create: object) -> Iterator[LocalLedger]:
    """A started ledger network (LocalLedger.create's keywords), closed when done."""
    net = LocalLedger.create(root, **create)  # type: ignore[arg-type]
    try:
        net.start()
        net.wait_ready()
        yield net
    finally:
        net.close()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`openswarm ARGS…` in a fresh process, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "openswarm.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


class Swarm:
    """A ledger (embedded, or `ledger_nodes` etcd-backed nodes) and N site processes running
    a training script (by default tests/swarm_script.py), each with its identity, rank and
    result file in its environment."""

    def __init__(
        self,
        root: Path,
        sites: int,
        *,
        script: Path = SCRIPT,
        ledger_nodes: int = 1,
        cas: dict[str, list[str]] | None = None,
        **env: str,
    ) -> None:
        self.root = root
        self.script = script
        self.names = [f"site-{i + 1}" for i in range(sites)]
        self.ledger = LocalLedger.create(
            root / "ledger", replicas=ledger_nodes, peers=self.names, sites=cas
        )
        self.ledger.start()
        self.ledger.wait_ready()
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.admin = self.ledger.client("admin")

    def start(self, name: str, **env: str) -> None:
        rank = self.names.index(name)
        full = {
            **os.environ,
            "OPENSWARM_LEDGER": ",".join(self.ledger.endpoints),
            "OPENSWARM_IDENTITY": str(self.ledger.identity_dir(name)),
            "OPENSWARM_ADMIN_IDENTITY": str(self.ledger.identity_dir("admin")),
            "OPENSWARM_PEER_NAME": name,
            "OPENSWARM_RANK": str(rank),
            "OPENSWARM_PEERS": str(len(self.names)),
            "OPENSWARM_RESULT": str(self.root / f"{name}.json"),
            **self.env,
            **env,
        }
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        self.procs[name] = subprocess.Popen(
            [sys.executable, str(self.script)], env=full, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()

    def start_all(self, **env: str) -> None:
        for name in self.names:
            self.start(name, **env)

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def wait(self, names: list[str] | None = None, timeout_s: float = 240) -> None:
        for name in names or self.names:
            try:
                code = self.procs[name].wait(timeout_s)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} did not finish:\n{self.log(name)[-3000:]}")
            assert code == 0, f"{name} exited {code}:\n{self.log(name)[-3000:]}"

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def result(self, name: str) -> dict:
        return json.loads((self.root / f"{name}.json").read_text())

    def state(self) -> dict | None:
        return self.admin.state(DEFAULT_CONTRACT)["state"]

    def tx_blocks(self) -> list[dict]:
        """Every block that records a transaction (the genesis and clock ticks left out)."""
        return [b for b in self.admin.blocks(0) if "tx" in b]

    def wait_for(self, predicate, timeout_s: float = 120, what: str = "condition") -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.state()
            if state is not None and predicate(state):
                return state
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {what}")

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.admin.close()
        self.ledger.close()


def identical_final(swarm: Swarm, names: list[str]) -> str:
    """The one final model digest these sites ended with (fails if they differ)."""
    digests = {swarm.result(n)["final_digest"] for n in names}
    assert len(digests) == 1 and None not in digests, digests
    return digests.pop()
