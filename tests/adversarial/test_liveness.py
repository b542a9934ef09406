"""Members that go idle, a ledger that goes away for a while, and a revoked site, against
real site processes: none of them stalls the honest sites or splits their final model."""

from __future__ import annotations

import time

import pytest
from harness import identical_final

from openswarm import DEFAULT_CONTRACT

pytestmark = pytest.mark.slow


def test_an_idle_member_with_an_open_port_never_blocks_the_end(swarm_factory) -> None:
    # site-3 registers with an endpoint that accepts TCP connections (the ledger's own
    # port), then says nothing: only signed presence on the ledger counts.
    swarm = swarm_factory(3, EPOCHS="2", MIN_PEERS="2", PRESENCE_TIMEOUT="10",
                          BATCH_DELAY_S="0.01")  # fmt: skip
    swarm.start("site-1")
    swarm.start("site-2")
    swarm.wait_for(lambda s: bool(s["members"]), what="the contract and a first member")
    with swarm.ledger.client("site-3") as idle:
        endpoint = {"endpoint": swarm.ledger.endpoints[0]}
        idle.submit("register", contract=DEFAULT_CONTRACT, payload=endpoint).raise_for_status()
    swarm.wait(["site-1", "site-2"], timeout_s=180)
    identical_final(swarm, ["site-1", "site-2"])
    assert any("site-3 has been silent on the ledger" in swarm.log(n) for n in swarm.names[:2])
    state = swarm.state()
    assert not state["members"]["site-3"]["finished"]
    assert all(h["participants"] == ["site-1", "site-2"] for h in state["history"])


def test_sites_ride_out_a_ledger_outage(swarm_factory) -> None:
    swarm = swarm_factory(2, EPOCHS="3", MIN_PEERS="2", BATCH_DELAY_S="0.02")
    swarm.start_all()
    swarm.wait_for(lambda s: len(s["history"]) >= 2, what="two merged rounds")
    swarm.ledger.kill(0)
    time.sleep(3)  # the outage itself: every call the sites make in it fails
    swarm.ledger.start(0)
    swarm.wait()
    identical_final(swarm, swarm.names)
    assert any("ledger unavailable while" in swarm.log(n) and "retrying" in swarm.log(n)
               for n in swarm.names)  # fmt: skip


def test_a_revoked_site_is_cut_off_at_once_and_the_others_finish(swarm_factory) -> None:
    swarm = swarm_factory(3, EPOCHS="3", MIN_PEERS="2", BATCH_DELAY_S="0.02")
    swarm.start_all()
    # site-3 is cut off as a member: rounds can be fast enough to merge twice before it joins
    swarm.wait_for(lambda s: len(s["history"]) >= 2 and "site-3" in s["members"],
                   what="two merged rounds, site-3 a member")  # fmt: skip
    swarm.admin.submit("revoke", payload={"name": "site-3"}).raise_for_status()
    assert swarm.procs["site-3"].wait(120) != 0
    assert "PERMISSION_DENIED" in swarm.log("site-3")
    swarm.wait(["site-1", "site-2"])
    final = identical_final(swarm, ["site-1", "site-2"])
    state = swarm.state()
    assert state["members"]["site-3"]["active"] is False
    blocks = swarm.tx_blocks()
    revoked_at = max(b["height"] for b in blocks if b["tx"].get("type") == "revoke")
    later = [b for b in blocks if b["height"] > revoked_at and b["tx"].get("sender") == "site-3"]
    assert all(b["outcome"]["status"] == "rejected" for b in later)  # at most in flight
    assert final == state["latest_merged"]["digest"]
