"""HPE's extension API (`swarmlearning.client.swarm.SwarmCallbackBase`) and SWARM_LOOPBACK."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from openswarm.launch import format_summary, run_swarm

SCRIPT = Path(__file__).parent / "hpe_platform_script.py"


def test_a_platform_written_against_hpes_base_class_trains_as_a_swarm(tmp_path: Path) -> None:
    result = run_swarm(SCRIPT, 3, workdir=tmp_path / "run", epochs=3, min_peers=3)
    assert result.ok, format_summary(result)
    outcomes = [peer.result for peer in result.peers]
    assert all(o is not None and o["over"] for o in outcomes)
    assert len({o["final_digest"] for o in outcomes}) == 1  # identical parameters
    assert all(o["accuracy"] > 0.9 for o in outcomes), outcomes


def test_swarm_loopback_runs_a_program_to_the_end_without_a_ledger(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENSWARM_")}
    env.update({"SWARM_LOOPBACK": "True", "MAX_EPOCHS": "1",
                "OPENSWARM_RESULT": str(tmp_path / "result.json")})  # fmt: skip
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "SWARM_LOOPBACK: parameters checked" in done.stdout  # HPE's logger: stdout
    assert "accuracy" in done.stdout and (tmp_path / "result.json").exists()
