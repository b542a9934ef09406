"""A three-site swarm of real processes under site-level DP (tests/swarm_script.py): each
site stops releasing exactly when its budget would be exceeded, and all end with one model."""

from __future__ import annotations

import pytest

from openswarm import DEFAULT_CONTRACT
from openswarm.cli.status import render
from openswarm.privacy import site_epsilon
from openswarm.ui.chain import ChainIndex
from openswarm.ui.views import contract_view

pytestmark = pytest.mark.slow

NOISE = 2.0
RELEASES = 2  # what the budget covers; the run would sync about 6 times without it


def test_the_budget_stop_takes_effect_on_every_site(swarm_factory) -> None:
    budget = (site_epsilon(NOISE, RELEASES, 1e-5) + site_epsilon(NOISE, RELEASES + 1, 1e-5)) / 2
    swarm = swarm_factory(3, EPOCHS="2", MIN_PEERS="3", DP="site", DP_NOISE=str(NOISE),
                          DP_CLIP="0.5", DP_EPSILON=repr(budget))  # fmt: skip
    swarm.start_all()
    swarm.wait()
    results = [swarm.result(n) for n in swarm.names]
    assert len({r["final_digest"] for r in results}) == 1, results
    spent = site_epsilon(NOISE, RELEASES, 1e-5)
    for r in results:
        assert r["privacy"]["releases"] == RELEASES, r
        assert r["privacy"]["spent"] is True, r
        assert r["privacy"]["epsilon"] == pytest.approx(spent) and spent <= budget
    # the ledger holds each site's ε, never over the budget, and its stop
    state = swarm.state()
    assert state is not None
    records = [(site, m["privacy"]) for by_site in state["metrics"].values()
               for site, m in by_site.items()]  # fmt: skip
    for name in swarm.names:
        mine = [p for site, p in records if site == name]
        assert mine and all(p["epsilon"] <= budget and p["unit"] == "site" for p in mine)
        assert any(p["spent"] for p in mine), (name, mine)
    # after the initial sync every site joined only the rounds its budget covered, then
    # at most the end's rounds that re-offer its last release (no new one)
    merged = [h for h in state["history"] if h["status"] == "merged"]
    assert len(merged) >= 1 + RELEASES
    # `openswarm status` / `perf` and the dashboard show each site's ε and its stop
    text = render(state, DEFAULT_CONTRACT)
    for name in swarm.names:
        line = next(x for x in text.splitlines() if name in x)
        assert f"ε {spent:.2f} at δ 1e-05 per site (site-level DP), budget spent" in line, text
    view = contract_view(DEFAULT_CONTRACT, state, ChainIndex(), {}, {})
    assert {s["name"]: s["privacy"]["epsilon"] for s in view["sites"]} == {
        n: pytest.approx(spent) for n in swarm.names
    }
