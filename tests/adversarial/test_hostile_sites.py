"""A participant with a valid peer certificate attacks a swarm of real site processes.

Each test starts a real ledger and real site processes training on sklearn's digits
(tests/swarm_script.py), one or more of them carrying a fault from faults.py, and checks
that the attack is refused or has no effect, that it is named in a log or on the ledger,
and that the honest sites still end with identical final models.
"""

from __future__ import annotations

import json
import re

import pytest
from harness import Swarm, identical_final

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("how", "named"),
    [
        ("header65", "rank 65"),
        ("flood", "bytes"),
        ("silent", "silent"),
    ],
)
def test_a_site_serving_hostile_bytes_is_left_out_and_named(
    swarm_factory, how: str, named: str
) -> None:
    # The hostile site never leads, so an honest leader pulls its snapshot every round.
    swarm = swarm_factory(3, EPOCHS="1", MIN_PEERS="3", LEADER_TIMEOUT="12",
                          PRESENCE_TIMEOUT="15")  # fmt: skip
    swarm.start("site-1")
    swarm.start("site-2")
    swarm.start("site-3", FAULT=f"serve:{how}")
    swarm.wait()
    history = swarm.state()["history"]
    later = [h for h in history if h["round"] > 1 and h["status"] == "merged"]
    assert later, history
    for record in later:
        assert record["leader"] != "site-3"
        reasons = {e["name"]: e["reason"] for e in record["excluded"]}
        assert set(reasons) == {"site-3"}, record
        assert named in reasons["site-3"], reasons
    leaders = {h["leader"] for h in later}
    assert any("leaving site-3 out of round" in swarm.log(n) for n in leaders)
    identical_final(swarm, ["site-1", "site-2"])


def test_a_site_cannot_fetch_another_sites_local_snapshot(swarm_factory) -> None:
    swarm = swarm_factory(3, EPOCHS="1", MIN_PEERS="3")
    report = swarm.root / "snoop.json"
    swarm.start("site-1")
    swarm.start("site-2")
    swarm.start("site-3", FAULT="snoop", FAULT_REPORT=str(report))
    swarm.wait()
    outcome = json.loads(report.read_text())
    assert outcome["refused"] is True, outcome
    assert "PERMISSION_DENIED" in outcome["error"] and "leader" in outcome["error"], outcome
    identical_final(swarm, swarm.names)


def _with_fault_once(swarm: Swarm, fault: str) -> dict:
    """Run every site with `fault`, which one of them acts on; wait for all to exit and
    return what that one reported (tests/adversarial/faults.py)."""
    marker, report = swarm.root / "fault.marker", swarm.root / "fault.json"
    swarm.start_all(FAULT=fault, FAULT_MARKER=str(marker), FAULT_REPORT=str(report))
    swarm.wait()  # a site that dies on purpose exits with status 0 too
    return json.loads(report.read_text())


def test_a_leader_publishing_a_malformed_merge_is_voided_and_demoted(swarm_factory) -> None:
    swarm = swarm_factory(3, EPOCHS="2", MIN_PEERS="3")
    bad = _with_fault_once(swarm, "bad_merged_once")
    state = swarm.state()
    record = state["history"][bad["round"] - 1]
    assert record["digest"] == bad["digest"] and record["status"] == "voided:refused", record
    assert state["demoted"] == [bad["leader"]]
    assert state["latest_merged"]["digest"] != bad["digest"]
    others = [n for n in swarm.names if n != bad["leader"]]
    assert all("refused" in swarm.log(n) for n in others)
    assert identical_final(swarm, swarm.names) == state["latest_merged"]["digest"]


def test_a_leader_dying_right_after_merged_ends_the_same_on_every_site(swarm_factory) -> None:
    # Forced, not timed: the first site to lead a round after the first records `merged`
    # and exits before anyone could fetch the model.
    swarm = swarm_factory(3, EPOCHS="2", MIN_PEERS="2", LEADER_TIMEOUT="10",
                          PRESENCE_TIMEOUT="15", BATCH_DELAY_S="0.01")  # fmt: skip
    dead = _with_fault_once(swarm, "die_after_merged_once")["leader"]
    survivors = [n for n in swarm.names if n != dead]
    state = swarm.state()
    lost = [h for h in state["history"] if h["status"] == "voided:unavailable"]
    assert [h["leader"] for h in lost] == [dead], state["history"]
    final = identical_final(swarm, survivors)
    assert final == state["latest_merged"]["digest"]


def test_a_leader_claiming_a_huge_merged_model_cannot_fill_anyones_memory(swarm_factory) -> None:
    # It records a size of 2**62 bytes and serves 64 MiB: every site refuses to fetch more
    # than a few times its own model's size (so it does not even ask), and the merge nobody
    # could take is voided.
    swarm = swarm_factory(3, EPOCHS="2", MIN_PEERS="3", LEADER_TIMEOUT="10",
                          BATCH_DELAY_S="0.01")  # fmt: skip
    huge = _with_fault_once(swarm, "huge_merged_once")
    state = swarm.state()
    record = state["history"][huge["round"] - 1]
    assert record["size"] == 2**62 and record["status"] == "voided:unavailable", record
    stopped = re.compile(
        rf"merged model of round {huge['round']} from {huge['leader']}: the ledger records "
        rf"{2**62} bytes, more than the (\d+) this site accepts"
    )
    for name in (n for n in swarm.names if n != huge["leader"]):
        caps = [int(m.group(1)) for m in stopped.finditer(swarm.log(name))]
        assert caps and max(caps) < 8 << 20, (name, caps)  # a few times its own model, no more
    assert identical_final(swarm, swarm.names) == state["latest_merged"]["digest"]
