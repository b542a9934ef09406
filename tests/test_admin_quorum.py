"""k of n admins: admit, revoke and contract_create take effect once k distinct admins sent
the same change, each approval a signed transaction; replicas stay identical, and a refused
approval changes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from site_pki import (
    SitePki,
    build_sites,
    commit,
    ledger_time_now,  # noqa: F401 - an autouse fixture: ledger time, per test
    tick_record,
    tx_record,
)

from openswarm.ledger.genesis import GenesisError, make_genesis
from openswarm.ledger.quorum import (
    MAX_APPROVALS_PER_ADMIN,
    PROPOSAL_WINDOW_S,
    QUORUM_EVENT_KINDS,
    proposal_digest,
)
from openswarm.ledger.state import LedgerState

SITES = {
    "a": [("ledger-1", "ledger"), ("adm-a", "admin"), ("pa", "peer")],
    "b": [("adm-b", "admin"), ("pb", "peer")],
    "c": [("adm-c", "admin")],
}
ADMINS = ("adm-a", "adm-b", "adm-c")
NOW = round(time.time(), 3)  # ledger time: set again as each test starts (site_pki)


ADMIT_PC = {"name": "pc", "role": "peer", "site": "b"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SitePki:
    return _pki(tmp_path_factory.mktemp("quorum"))


_BUILT: dict[str, SitePki] = {}


def _pki(root: Path | None = None) -> SitePki:
    """The module's swarm (built once: hypothesis examples share it)."""
    if "pki" not in _BUILT:
        assert root is not None
        built = build_sites(root, SITES, admin_quorum=2, contracts={})
        built.ids["forged-adm-b"] = built.forge("a", "adm-b", "admin")
        _BUILT["pki"] = built
    return _BUILT["pki"]


class Ledger:
    """One ledger state at ledger time `now`, fed signed records."""

    def __init__(self, pki: SitePki, genesis: dict[str, Any] | None = None) -> None:
        self.pki = pki
        self.state = LedgerState(genesis or pki.genesis)
        self.now = NOW
        self.first = tick_record(pki.ids["ledger-1"], NOW)  # starts ledger time
        commit(self.state, self.first)

    def tick(self, seconds: float) -> dict[str, Any]:
        self.now = round(self.now + seconds, 3)
        return commit(self.state, tick_record(self.pki.ids["ledger-1"], self.now))

    def send(self, sender: str, tx_type: str, contract: str = "", **payload: Any) -> dict:
        record = tx_record(self.pki.ids[sender], tx_type, self.now, contract=contract,
                           payload=payload)  # fmt: skip
        return commit(self.state, record)

    def ok(self, *args: Any, **payload: Any) -> list[dict[str, Any]]:
        outcome = self.send(*args, **payload)
        assert outcome["status"] == "applied", outcome
        return outcome["result"]["events"]

    def refused(self, match: str, *args: Any, **payload: Any) -> None:
        before = view(self.state)
        outcome = self.send(*args, **payload)
        assert outcome["status"] == "rejected", outcome
        assert match in outcome["reason"], outcome["reason"]
        assert view(self.state) == before

    @property
    def snap(self) -> dict[str, Any]:
        return self.state.snapshot()


def view(state: LedgerState) -> str:
    """Everything the ledger decides, but the chain head (which every block moves)."""
    snap = {k: v for k, v in state.snapshot().items() if k not in ("height", "last_hash")}
    return json.dumps(snap, sort_keys=True)


# --- one admin is not enough ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tx_type", "contract", "payload", "effect"),
    [
        ("admit", "", ADMIT_PC, lambda s: s["admitted"].get("pc") == "peer"),
        ("revoke", "", {"name": "pb"}, lambda s: "pb" not in s["admitted"]),
        ("contract_create", "c1", {"min_peers": 3}, lambda s: "c1" in s["contracts"]),
    ],
)
def test_one_admin_alone_changes_nothing_two_do(
    pki: SitePki, tx_type: str, contract: str, payload: dict, effect: Any
) -> None:
    ledger = Ledger(pki)
    events = ledger.ok("adm-a", tx_type, contract, **payload)
    digest = proposal_digest(tx_type, contract, payload)
    assert events == [{"kind": "proposed", "proposal": digest, "type": tx_type,
                       "contract": contract, "approvers": ["adm-a"], "needed": 2}]  # fmt: skip
    assert not effect(ledger.snap)
    assert ledger.snap["proposals"][digest]["approvers"] == ["adm-a"]
    ledger.refused("already approved", "adm-a", tx_type, contract, **payload)
    events = ledger.ok("adm-c", tx_type, contract, **payload)
    assert effect(ledger.snap)
    assert [e["approvers"] for e in events] == [["adm-a", "adm-c"]]
    assert ledger.snap["proposals"] == {}


def test_a_different_payload_is_a_different_proposal(pki: SitePki) -> None:
    ledger = Ledger(pki)
    ledger.ok("adm-a", "admit", **ADMIT_PC)
    ledger.ok("adm-b", "admit", **{**ADMIT_PC, "role": "admin"})
    assert "pc" not in ledger.snap["admitted"]
    assert len(ledger.snap["proposals"]) == 2


def test_a_forged_admin_cannot_add_an_approval(pki: SitePki) -> None:
    ledger = Ledger(pki)
    ledger.ok("adm-a", "admit", **ADMIT_PC)
    ledger.refused("only a site's own CA", "forged-adm-b", "admit", **ADMIT_PC)
    assert "pc" not in ledger.snap["admitted"]


def test_an_invalid_change_is_refused_before_it_is_proposed(pki: SitePki) -> None:
    ledger = Ledger(pki)
    ledger.refused("not admitted", "adm-a", "revoke", name="nobody")
    ledger.refused("unknown setting", "adm-a", "contract_create", "c2", bogus=1)
    ledger.refused("must name the site", "adm-a", "admit", name="pc", role="peer")
    assert ledger.snap["proposals"] == {}


def test_revoking_an_admin_drops_its_approvals(pki: SitePki) -> None:
    ledger = Ledger(pki)
    ledger.ok("adm-c", "admit", **ADMIT_PC)
    ledger.ok("adm-a", "contract_create", "c1")
    ledger.ok("adm-c", "contract_create", "c1")  # c1 exists: adm-c's approval was used
    ledger.ok("adm-c", "admit", name="adm-d", role="admin", site="c")
    ledger.ok("adm-b", "admit", name="adm-d", role="admin", site="c")
    ledger.ok("adm-a", "revoke", name="adm-c")
    events = ledger.ok("adm-b", "revoke", name="adm-c")
    assert events[0]["kind"] == "revoked" and events[0]["approvers"] == ["adm-a", "adm-b"]
    assert ledger.snap["proposals"] == {}  # adm-c's approval of admitting pc is gone
    ledger.ok("adm-a", "admit", **ADMIT_PC)  # so one more approval is not enough
    assert "pc" not in ledger.snap["admitted"]


def test_the_last_admins_needed_for_the_quorum_cannot_be_removed(pki: SitePki) -> None:
    ledger = Ledger(pki)
    ledger.ok("adm-a", "revoke", name="adm-c")
    ledger.ok("adm-b", "revoke", name="adm-c")
    ledger.refused("only 1 admin(s) would be left", "adm-a", "revoke", name="adm-b")
    ledger.refused("only 1 admin(s) would be left", "adm-a", "admit", name="adm-b",
                   role="peer", site="b")  # fmt: skip


def test_proposals_expire_after_their_window(pki: SitePki) -> None:
    ledger = Ledger(pki)
    ledger.ok("adm-a", "admit", **ADMIT_PC)
    ledger.tick(PROPOSAL_WINDOW_S - 1)
    assert len(ledger.snap["proposals"]) == 1
    ledger.tick(2)
    assert ledger.snap["proposals"] == {}
    events = ledger.ok("adm-b", "admit", **ADMIT_PC)
    assert events[0]["kind"] == "proposed" and "pc" not in ledger.snap["admitted"]


def test_an_admin_holds_a_bounded_number_of_pending_approvals(pki: SitePki) -> None:
    ledger = Ledger(pki)
    for i in range(MAX_APPROVALS_PER_ADMIN):
        ledger.ok("adm-a", "contract_create", f"c{i}")
    ledger.refused("pending approvals (limit", "adm-a", "contract_create", "one-more")
    ledger.ok("adm-b", "contract_create", "c0")  # completing a proposal is always possible
    ledger.ok("adm-a", "contract_create", "one-more")  # and frees a place
    assert len(ledger.snap["proposals"]) == MAX_APPROVALS_PER_ADMIN


def test_archive_needs_one_admin(pki: SitePki) -> None:
    ledger = Ledger(pki)
    assert ledger.ok("adm-a", "archive", upto=3) == [{"kind": "archived", "upto": 3}]


def test_quorum_one_applies_at_once_as_before(pki: SitePki) -> None:
    genesis = {k: v for k, v in pki.genesis.items() if k != "admin_quorum"}
    ledger = Ledger(pki, genesis)
    events = ledger.ok("adm-a", "admit", **ADMIT_PC)
    assert events == [{"kind": "admitted", "name": "pc", "role": "peer", "site": "b"}]
    assert ledger.snap["admin_quorum"] == 1 and ledger.snap["proposals"] == {}


def test_genesis_quorum_must_be_reachable(pki: SitePki) -> None:
    ca = pki.genesis["sites"]["a"]["ca_cert"].encode()
    admins = [("x", "admin"), ("y", "admin")]
    assert make_genesis("sites", ca, admins, admin_quorum=2)["admin_quorum"] == 2
    for bad, match in ((3, "only 2 admin"), (0, ">= 1"), (True, ">= 1")):
        with pytest.raises(GenesisError, match=match):
            make_genesis("sites", ca, admins, admin_quorum=bad)


# --- replicas fed the same transactions stay identical -------------------------------------
SENDERS = (*ADMINS, "forged-adm-b", "pa")
NAMES = ("pc", "pd", "adm-b", "adm-c", "adm-d", "pb")


def _draw_record(pick: Any, ledger: Ledger) -> str:
    """A tick, or an admin transaction from a small space, so that proposals repeat."""
    ids = ledger.pki.ids
    if pick(range(6)) == 0:
        ledger.now = round(ledger.now + pick((1.0, 60.0, PROPOSAL_WINDOW_S / 2)), 3)
        return tick_record(ids["ledger-1"], ledger.now)
    sender = pick(SENDERS)
    tx_type = pick(("admit", "admit", "revoke", "contract_create", "archive"))
    contract = ""
    if tx_type == "admit":
        payload: dict = {"name": pick(NAMES), "role": pick(("peer", "admin")),
                         "site": pick(("a", "b", "c", "z", ["a"]))}  # fmt: skip
    elif tx_type == "revoke":
        payload = {"name": pick((*NAMES, ["pb"]))}
    elif tx_type == "contract_create":
        contract, payload = pick(("c1", "c2")), pick(({}, {"min_peers": 3}))
    else:
        payload = {"upto": 1}
    return tx_record(ids[sender], tx_type, ledger.now, contract=contract, payload=payload)


def _check_invariants(snap: dict[str, Any]) -> None:
    admins = {name for name, role in snap["admitted"].items() if role == "admin"}
    assert len(admins) >= snap["admin_quorum"]
    held: dict[str, int] = {}
    for proposal in snap["proposals"].values():
        approvers = proposal["approvers"]
        assert 1 <= len(approvers) < snap["admin_quorum"]
        assert len(set(approvers)) == len(approvers) and set(approvers) <= admins
        for name in approvers:
            held[name] = held.get(name, 0) + 1
    assert all(count <= MAX_APPROVALS_PER_ADMIN for count in held.values())
    assert set(snap["sites"]) == set(snap["admitted"])


def run_replicas(pick: Any, steps: int, quorum: int) -> tuple[list[str], LedgerState, set[str]]:
    """Drive two replicas with the same random records; check they agree after each."""
    pki = _pki()
    genesis = {**pki.genesis, "admin_quorum": quorum}
    one, two = Ledger(pki, genesis), LedgerState(genesis)
    log = [one.first]
    two.commit(one.first)
    seen: set[str] = set()
    before = view(one.state)
    for _ in range(steps):
        record = _draw_record(pick, one)
        log.append(record)
        block_one, block_two = one.state.commit(record), two.commit(record)
        assert block_one == block_two, f"replicas disagree on {record[:200]}"
        after = view(one.state)
        assert view(two) == after
        if block_one["outcome"]["status"] == "rejected":
            assert after == before, f"refused {record[:200]} changed the state"
        else:
            result = block_one["outcome"]["result"]
            seen.update(e["kind"] for e in result.get("events", []))
        _check_invariants(one.state.snapshot())
        before = after
    return log, one.state, seen


def replay(log: Sequence[str], quorum: int) -> LedgerState:
    state = LedgerState({**_pki().genesis, "admin_quorum": quorum})
    for record in log:
        state.commit(record)
    return state


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(data=st.data(), steps=st.integers(1, 40), quorum=st.sampled_from([2, 3]))
def test_replicas_agree_and_refusals_change_nothing(
    pki: SitePki, data: st.DataObject, steps: int, quorum: int
) -> None:
    def pick(options: Sequence[Any]) -> Any:
        return options[data.draw(st.integers(0, len(options) - 1))]

    log, state, _ = run_replicas(pick, steps, quorum)
    again = replay(log, quorum)  # a replica replaying the whole log later reaches the same state
    assert again.last_hash == state.last_hash and view(again) == view(state)


def test_random_runs_reach_every_quorum_event(pki: SitePki) -> None:
    import random

    seen: set[str] = set()
    for seed in range(6):
        rng = random.Random(seed)
        _, _, seen_here = run_replicas(rng.choice, steps=150, quorum=2 + seed % 2)
        seen |= seen_here
    # Guard for the generator itself: the walks must propose, approve and apply changes.
    for kind in (*QUORUM_EVENT_KINDS, "admitted", "revoked", "contract_created"):
        assert kind in seen, f"random runs produced no {kind!r}: {seen}"
