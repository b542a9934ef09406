"""A participant (or leader) with a valid certificate against secure aggregation's rules on
the ledger (openswarm.ledger.secure_rounds): it cannot hide or add survivors, make honest
sites reveal both secrets of one site, merge before the shares, or end a round early."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_contract import PEERS, Driver, digest

from openswarm.ledger.contract import ContractError, ContractSettings
from openswarm.ledger.secure_rounds import REVEALED_SHARE_HEX, SEALED_SHARES_HEX

SHARE_KEY = (
    ec.derive_private_key(7, ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    .hex()
)
OFF_CURVE = "04" + "ab" * 64
SECURE = {"threshold": 2, "bound": 1.0}


def _secagg(names: list[str], tag: object) -> dict[str, Any]:
    return {"pk": digest(("pk", tag)), "commit": digest(("commit", tag)),
            "shares": {n: "cd" * (SEALED_SHARES_HEX // 2) for n in names}}  # fmt: skip


def _masked_round(**settings: Any) -> tuple[Driver, list[str]]:
    """A contract past its first merge, its second round sealed (masked) with all three;
    the ranking."""
    d = Driver(secure_aggregation=SECURE, min_peers=3, leader_timeout_s=10.0, **settings)
    d.register(*PEERS, share_key=SHARE_KEY)
    ranking = d.sealed_round()
    d.ok("merged", ranking[0], 1, {"digest": digest(("ready", ranking[0])), "size": 100})
    for name in PEERS:
        d.ok("ready", name, 2, {"digest": digest((name, 2)), "size": 100,
                                "secagg": _secagg(PEERS, name)})  # fmt: skip
    ranking = d.ok("seal", "alice", 2)["events"][0]["ranking"]
    return d, ranking


def _mask(d: Driver, *names: str) -> None:
    for name in names:
        d.ok("masked", name, 2, {"digest": digest(("m", name)), "root": digest(("r", name)),
                                 "size": 80})  # fmt: skip


def _shares(names: list[str] = PEERS) -> dict[str, Any]:
    return {"shares": {n: "0" * REVEALED_SHARE_HEX for n in names}}


def test_registration_and_ready_carry_only_well_formed_secrets() -> None:
    d = Driver(secure_aggregation=SECURE, min_peers=3)
    d.refused("register", "alice", payload={"endpoint": "10.0.0.1:1", "share_key": "04ff"},
              match="share_key must be an uncompressed P-256")  # fmt: skip
    d.refused("register", "alice", payload={"endpoint": "10.0.0.1:1", "share_key": OFF_CURVE},
              match="not a point on P-256")  # fmt: skip
    plain = Driver()
    plain.register("alice")
    plain.refused("ready", "alice", 1, {"digest": digest(1), "size": 1,
                                        "secagg": _secagg(["alice"], 1)},
                  match="does not aggregate securely")  # fmt: skip
    d.register(*PEERS, share_key=SHARE_KEY)
    d.register("mallory")  # no share key: nobody can deal it a share
    bad = _secagg([*PEERS, "mallory"], 1)
    d.refused("ready", "alice", 1, {"digest": digest(1), "size": 1, "secagg": bad},
              match="not a member with a share key")  # fmt: skip
    short = _secagg(PEERS, 1)
    short["shares"]["bob"] = "cd"
    d.refused("ready", "alice", 1, {"digest": digest(1), "size": 1, "secagg": short},
              match="lowercase hex")  # fmt: skip
    low_order = _secagg(PEERS, 1) | {"pk": "00" * 32}  # would keep everyone from masking
    d.refused("ready", "alice", 1, {"digest": digest(1), "size": 1, "secagg": low_order},
              match="low-order X25519 key")  # fmt: skip


def test_a_site_must_deal_to_every_member_and_the_seal_admits_who_dealt_to_each_other() -> None:
    d = Driver(secure_aggregation=SECURE, min_peers=2, leader_timeout_s=10.0)
    d.register(*PEERS, share_key=SHARE_KEY)
    ranking = d.sealed_round()
    d.ok("merged", ranking[0], 1, {"digest": digest(("ready", ranking[0])), "size": 100})
    # mallory readies first dealing only to itself (so nobody after it would be admitted)
    d.refused("ready", "carol", 2, {"digest": digest(3), "size": 1,
                                    "secagg": _secagg(["carol"], 3)},
              match="every active member with a share key; missing: alice, bob")  # fmt: skip
    d.ok("ready", "alice", 2, {"digest": digest(1), "size": 1, "secagg": _secagg(PEERS, 1)})
    d.ok("ready", "bob", 2, {"digest": digest(2), "size": 1, "secagg": _secagg(PEERS, 2)})
    # dave joins after they dealt: he deals to all, but nobody dealt to him yet
    d.register("dave", share_key=SHARE_KEY)
    d.ok("ready", "dave", 2, {"digest": digest(4), "size": 1,
                              "secagg": _secagg([*PEERS, "dave"], 4)})  # fmt: skip
    sealed = d.ok("seal", "alice", 2)["events"][0]
    assert sealed["participants"] == ["alice", "bob"]  # dave waits for the next round


def test_only_the_leader_fixes_the_survivors_once_from_masked_updates() -> None:
    d, ranking = _masked_round()
    leader, other, third = ranking
    _mask(d, leader, other)
    d.refused("masked", leader, 2, {"digest": digest(9), "root": digest(9), "size": 80},
              match="posted its masked update")  # fmt: skip
    d.refused("survivors", other, 2, {"names": [leader, other]}, match="not the leader")
    d.refused("survivors", leader, 2, {"names": [leader]}, match="at least threshold=2")
    d.refused("survivors", leader, 2, {"names": [leader, third]},
              match="posted their masked update")  # fmt: skip
    d.refused("unmask", other, 2, _shares(), match="no survivors yet")
    d.ok("survivors", leader, 2, {"names": [leader, other]})
    d.refused("survivors", leader, 2, {"names": [leader, other]}, match="fixed already")
    d.refused("masked", third, 2, {"digest": digest(8), "root": digest(8), "size": 80},
              match="fixed already")  # fmt: skip


def test_survivors_stay_fixed_when_the_leader_changes() -> None:
    d, ranking = _masked_round()
    leader, second, third = ranking
    _mask(d, *PEERS)
    d.ok("survivors", leader, 2, {"names": [second, third]})
    d.now += 11  # the leader falls silent: voted out
    d.ok("leader_timeout", second, 2, {"leader": leader})
    d.ok("leader_timeout", third, 2, {"leader": leader})
    assert d.contract.leader == second
    d.refused("survivors", second, 2, {"names": PEERS}, match="fixed already")


def test_shares_come_whole_once_and_merged_names_exactly_the_non_survivors() -> None:
    d, ranking = _masked_round()
    leader, other, third = ranking
    _mask(d, *PEERS)
    d.ok("survivors", leader, 2, {"names": [leader, other]})
    d.refused("unmask", other, 2, _shares([leader, other]), match="one share for each")
    d.refused("unmask", other, 2, {"shares": {n: "zz" for n in PEERS}}, match="lowercase hex")
    d.ok("unmask", other, 2, _shares())
    d.refused("unmask", other, 2, _shares(), match="revealed its shares")
    merged = {"digest": digest("m"), "size": 100,
              "excluded": [{"name": third, "reason": "not had"}]}  # fmt: skip
    d.refused("merged", leader, 2, merged, match="cannot be unmasked yet")
    d.ok("unmask", third, 2, _shares())
    hiding = merged | {"excluded": [{"name": other, "reason": "x"}]}
    d.refused("merged", leader, 2, hiding, match="exactly the participants")
    d.refused("merged", leader, 2, merged | {"excluded": []}, match="exactly the participants")
    d.ok("merged", leader, 2, merged)
    record = d.contract.snapshot()["history"][-1]
    assert record["status"] == "merged" and record["secagg"]["survivors"] == sorted([leader, other])


def test_a_round_short_of_shares_ends_only_when_they_are_overdue() -> None:
    d, ranking = _masked_round()
    leader, other, third = ranking
    _mask(d, *PEERS)
    d.refused("secagg_abort", other, 2, match="no survivors yet")
    d.ok("survivors", leader, 2, {"names": PEERS})
    d.ok("unmask", other, 2, _shares())
    d.now += 4.9  # half the leader timeout is 5 s
    d.refused("secagg_abort", third, 2, match="waits for shares")
    d.now += 0.2
    result = d.ok("secagg_abort", third, 2)
    assert [e["kind"] for e in result["events"]] == ["round_aborted"]
    assert d.contract.snapshot()["history"][-1]["status"] == "aborted"
    assert d.contract.current_round == 3


def test_enough_shares_cannot_be_aborted() -> None:
    d, ranking = _masked_round()
    leader, other, third = ranking
    _mask(d, *PEERS)
    d.ok("survivors", leader, 2, {"names": PEERS})
    d.ok("unmask", other, 2, _shares())
    d.ok("unmask", third, 2, _shares())
    d.now += 6
    d.refused("secagg_abort", third, 2, match="it can be unmasked")


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"merge_method": "krum"}, "merges the masked sum only"),
        ({"merge_method": "mean", "merge_options": {"x": 1}}, "merges the masked sum only"),
        ({"audit": 1, "min_peers": 3}, "cannot be audited"),
        ({"min_peers": 1}, "exceeds min_peers"),
    ],
)
def test_settings_that_would_need_to_see_an_update_are_refused(
    settings: dict[str, Any], match: str
) -> None:
    with pytest.raises(ContractError, match=match):
        ContractSettings(secure_aggregation=True, **{"min_peers": 2, **settings})


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ({"threshold": 1}, "threshold must be an integer ≥ 2"),
        ({"bound": 0}, r"bound must be a number in \(0, 2\^20\]"),
        ({"bound": 1e9}, r"bound must be a number"),
        ({"rounds": 3}, "has no option"),
        ("yes", "must be true, false or an object"),
    ],
)
def test_malformed_secure_aggregation_settings_are_refused(value: Any, match: str) -> None:
    with pytest.raises(ContractError, match=match):
        ContractSettings(secure_aggregation=value, min_peers=3)


def test_the_leader_may_end_a_round_it_cannot_unmask_others_only_when_overdue() -> None:
    d, ranking = _masked_round()
    leader, other, _ = ranking
    _mask(d, *PEERS)
    d.refused("secagg_abort", leader, 2, match="no survivors yet")
    d.ok("survivors", leader, 2, {"names": PEERS})
    for name in PEERS:
        d.ok("unmask", name, 2, _shares())
    d.refused("secagg_abort", other, 2, match="it can be unmasked")
    result = d.ok("secagg_abort", leader, 2)  # e.g. a dealer's shares open to nothing
    assert [e["kind"] for e in result["events"]] == ["round_aborted"]


def test_in_a_sharded_round_the_survivors_are_exactly_who_posted_in_time() -> None:
    d, ranking = _masked_round(merge_topology="sharded")
    leader, other, third = ranking
    _mask(d, leader, other)
    # any participant may fix them, but only as the ledger recorded the masked updates
    d.refused("survivors", third, 2, {"names": [leader, other, third]}, match="exactly the")
    d.refused("survivors", third, 2, {"names": sorted([leader, other])},
              match="waits for masked updates")  # fmt: skip
    d.now += 2.5  # a quarter of the leader timeout
    d.ok("survivors", third, 2, {"names": sorted([leader, other])})
    # a shard must leave out exactly the non-survivors, even a majority-sized set is fine
    shard = {"index": 0, "digest": digest("s"), "root": digest("r"), "size": 10}
    owner = d.contract.snapshot()["current"]["shards"][0]["owner"]
    d.refused("shard", owner, 2, shard, match="exactly the participants that are not")
    d.ok("shard", owner, 2, shard | {"excluded": [{"name": third, "reason": "not posted"}]})
