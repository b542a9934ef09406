"""Several processes of one Trainer job (DDP, as `accelerate launch` or torchrun start it)
take part as one site: rank 0 talks to the swarm, the others load what it broadcasts.

The processes form a gloo process group on the CPU here, the same code path as NCCL on
GPUs except for where the broadcast buffers live. Each rank is started directly with
torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, ...), so a failing rank is not torn
down by an elastic agent before it reports.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from harness import Swarm

SCRIPT = Path(__file__).with_name("hf_group_script.py")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
]


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[Swarm]:
    made = Swarm(tmp_path / "swarm", 2, script=SCRIPT)
    yield made
    made.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_group(swarm: Swarm, name: str, world: int, **env: str) -> list[subprocess.Popen]:
    """`world` processes of site `name`, in one process group (torchrun's variables)."""
    port = str(_free_port())
    procs = []
    for rank in range(world):
        full = {
            **os.environ,
            "OPENSWARM_LEDGER": ",".join(swarm.ledger.endpoints),
            "OPENSWARM_IDENTITY": str(swarm.ledger.identity_dir(name)),
            "OPENSWARM_ADMIN_IDENTITY": str(swarm.ledger.identity_dir("admin")),
            "OPENSWARM_PEER_NAME": name,
            "OPENSWARM_RANK": str(swarm.names.index(name)),
            "OPENSWARM_PEERS": str(len(swarm.names)),
            "OPENSWARM_RESULT": str(swarm.root / f"{name}.json"),
            "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
            **env,
        }  # fmt: skip
        log = open(swarm.root / f"{name}.rank{rank}.log", "ab")  # noqa: SIM115 - the child's
        command = [sys.executable, str(SCRIPT)]
        procs.append(
            subprocess.Popen(
                command, env=full, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )
        log.close()
    swarm.procs.update({f"{name}.rank{r}": p for r, p in enumerate(procs)})  # closed with it
    return procs


def _wait(swarm: Swarm, name: str, procs: list[subprocess.Popen], timeout_s: float = 300) -> None:
    for rank, proc in enumerate(procs):
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log = (swarm.root / f"{name}.rank{rank}.log").read_text(errors="replace")
            pytest.fail(f"{name} rank {rank} did not finish:\n{log[-3000:]}")


def _records(swarm: Swarm, name: str, world: int) -> list[dict]:
    base = swarm.root / f"{name}.json"
    paths = [base, *(Path(f"{base}.rank{r}") for r in range(1, world))]
    return [json.loads(p.read_text()) for p in paths]


def test_two_process_trainer_is_one_site_and_all_replicas_end_identical(swarm: Swarm) -> None:
    group = _start_group(swarm, "site-1", 2, EPOCHS="2", SYNC_FREQUENCY="4")
    swarm.start("site-2", EPOCHS="2", SYNC_FREQUENCY="4", OMP_NUM_THREADS="1")
    swarm.wait(["site-2"], timeout_s=300)
    _wait(swarm, "site-1", group)
    main, other = _records(swarm, "site-1", 2)
    alone = swarm.result("site-2")
    logs = {f"rank{r}": (swarm.root / f"site-1.rank{r}.log").read_text()[-2000:] for r in (0, 1)}
    assert "error" not in main and "error" not in other, logs
    assert (main["group"], main["has_peer"]) == (True, True)
    assert (other["group"], other["has_peer"]) == (True, False)  # never joined the swarm
    assert (alone["group"], alone["has_peer"]) == (False, True)
    finals = {r["final_digest"] for r in (main, other, alone)}
    assert len(finals) == 1 and None not in finals
    assert {main["model_digest"], other["model_digest"]} == finals  # every replica loaded it
    assert main["rounds"] == other["rounds"] >= 3
    registered = [b["tx"]["sender"] for b in swarm.tx_blocks() if b["tx"]["type"] == "register"]
    assert sorted(registered) == ["site-1", "site-2"], registered  # one site, joined once


def test_a_failure_on_rank_0_ends_the_other_ranks_with_a_clear_error(swarm: Swarm) -> None:
    group = _start_group(swarm, "site-1", 2, FAIL_EARLY="1")
    _wait(swarm, "site-1", group, timeout_s=240)
    main, other = _records(swarm, "site-1", 2)
    assert [p.returncode for p in group] == [1, 1]
    assert "adaptive sync decides from validation loss" in main["error"]
    assert other["error"] == (
        "SwarmError: rank 1: the site's main process (rank 0) failed; see its log"
    )
    assert (main["has_peer"], other["has_peer"]) == (False, False)
