"""Many peers on one machine: `openswarm run SCRIPT --peers 32`, as a user types it.

The sites are plain numpy (tests/many_peers_script.py): 32 torch processes would not fit
beside a second test run on a small machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("many_peers_script.py")
PEERS = 32
RUN_LIMIT_S = 480  # a guard against a hang, far above a run's time on a busy machine
STOP_GRACE_S = 60  # for the launcher to stop its peers and ledger when the test gives up


def _openswarm_run(workdir: Path) -> subprocess.CompletedProcess[str]:
    """`openswarm run` with this environment's console script. Past RUN_LIMIT_S (or when the
    test itself is stopped) it gets SIGTERM, which stops its peers and ledger too: they run
    in sessions of their own that a SIGKILL of the launcher would leave behind."""
    command = [
        str(Path(sys.executable).with_name("openswarm")), "run", str(SCRIPT),
        "--peers", str(PEERS), "--workdir", str(workdir), "--epochs", "3",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=RUN_LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=STOP_GRACE_S)
        stderr += f"\n(stopped: still running after {RUN_LIMIT_S} s)"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _digests(stdout: str) -> dict[str, str]:
    """Site name -> final digest, from the summary table."""
    digests = {}
    for line in stdout.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[0].startswith("site-"):
            digests[fields[0]] = fields[3]
    return digests


def _unfinished_logs(workdir: Path) -> dict[str, str]:
    """The log tails of the sites that wrote no result (with their threads' stacks, when the
    launcher stopped them: see many_peers_script.py)."""
    return {
        log.stem: log.read_text(errors="replace")[-5000:]
        for log in sorted(workdir.glob("site-*.log"))
        if not (workdir / log.stem / "result.json").exists()
    }


@pytest.mark.slow
@pytest.mark.timeout(RUN_LIMIT_S + 2 * STOP_GRACE_S)
def test_32_numpy_peers_on_one_machine_end_with_one_model(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    done = _openswarm_run(workdir)
    report = (done.stdout[-4000:], done.stderr[-3000:], _unfinished_logs(workdir))
    assert done.returncode == 0, report
    assert "every peer holds the same final model" in done.stdout, report
    digests = _digests(done.stdout)
    assert sorted(digests) == sorted(f"site-{i}" for i in range(1, PEERS + 1)), done.stdout
    assert len(set(digests.values())) == 1, digests
    results = [json.loads((workdir / name / "result.json").read_text()) for name in digests]
    assert {r["final_digest"] for r in results} == set(digests.values())
    # The initial sync, then a round after every epoch: more than the first sync happened.
    assert all(r["rounds"] >= 2 for r in results), [r["rounds"] for r in results]
