"""The peer's decision function over generated round views: no processes, no ledger."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from openswarm.node.decide import IDLE_S, RESEND_S, Me, Member, RoundView, next_step

NAMES = ("a", "b", "c", "d", "e")
NOW = 10_000.0
PRESENCE_S = 30.0
WINDOW_S = 2.0


@st.composite
def views(draw: st.DrawFn) -> RoundView:
    """A contract state as the ledger could hold it in round 5, seen by member "a"."""
    names = draw(st.lists(st.sampled_from(NAMES[1:]), unique=True, max_size=4))
    members = {}
    for name in ("a", *names):
        members[name] = Member(
            name=name,
            active=name == "a" or draw(st.booleans()),
            finished=draw(st.booleans()) if name != "a" else False,
            contribution=draw(st.sampled_from(["inactive", "snapshot", "active"])),
            last_seen=NOW - draw(st.floats(0, 2 * PRESENCE_S)),
            endpoint=f"{name}:1",
        )
    ready = tuple(sorted(draw(st.sets(st.sampled_from(sorted(members))))))
    sealed = bool(ready) and draw(st.booleans())
    participants = ready if sealed else ()
    leader = draw(st.sampled_from(participants)) if sealed else None
    return RoundView(
        round=draw(st.sampled_from([5, 5, 5, 6])),
        sealed=sealed,
        ready=ready,
        participants=participants,
        leader=leader,
        leader_since=NOW - draw(st.floats(0, 40)) if sealed else 0.0,
        members=members,
        latest_merged=None,
        history=(),
        leader_timeout_s=20.0,
        timeout_votes=tuple(draw(st.sets(st.sampled_from(participants)))) if sealed else (),
        audit=_audit(draw, participants, leader) if sealed and draw(st.booleans()) else None,
    )


def _audit(draw: st.DrawFn, participants: tuple[str, ...], leader: str | None) -> dict | None:
    """A merge of `leader` awaiting some of the other participants as its auditors."""
    others = [n for n in participants if n != leader]
    if not others:
        return None
    auditors = draw(st.lists(st.sampled_from(others), unique=True, min_size=1))
    attested = draw(st.sets(st.sampled_from(auditors)))
    return {"auditors": auditors, "attestations": {n: "d" * 64 for n in attested},
            "digest": "d" * 64, "leader": leader}  # fmt: skip


def me(**changes: object) -> Me:
    base = Me(name="a", round=5, min_peers=2, extra_window_s=WINDOW_S,
              presence_timeout_s=PRESENCE_S)  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(views(), st.booleans(), st.sampled_from([None, NOW - 1.0, NOW - 5.0]))
def test_every_step_fits_the_view(view: RoundView, finished: bool, quorum_since) -> None:
    facts = me(finished=finished, quorum_since=quorum_since)
    step = next_step(view, facts, NOW)
    assert step == next_step(view, facts, NOW)  # a function of its inputs alone
    if view.round > facts.round:
        assert step.kind == "closed"
        return
    if step.kind == "wait":
        assert step.until is not None and step.until > NOW  # always woken again
    if step.kind == "seal":
        assert not view.sealed and len(view.ready) >= facts.min_peers and not finished
    if step.kind == "lead":
        assert view.sealed and view.leader == "a" and view.audit is None
    if step.kind == "audit":
        assert view.audit is not None and "a" in view.audit["auditors"]
    if step.kind == "vote_timeout":
        assert view.sealed and step.leader == view.leader != "a"
        assert view.leader_since + view.leader_timeout_s <= NOW
        assert "a" in view.participants and "a" not in view.timeout_votes  # one vote each
    if step.kind == "left_out":
        assert view.sealed and "a" not in view.participants
    if step.kind == "over":
        assert finished and not view.sealed
    if not view.sealed and not finished and len(view.ready) < facts.min_peers:
        assert step.kind == "wait"  # never seal short of min_peers


@settings(max_examples=200, deadline=None)
@given(views())
def test_a_leader_silent_past_its_timeout_is_voted_out_once_a_second(view: RoundView) -> None:
    if not view.sealed or view.round != 5 or view.leader == "a" or "a" not in view.participants:
        return
    view = replace(view, timeout_votes=(), audit=None)  # "a" has not voted yet (see below)
    late = view.leader_since + view.leader_timeout_s + 0.1
    assert next_step(view, me(), late).kind == "vote_timeout"
    resent = next_step(view, me(sent={"vote_timeout": late}), late + 0.5)
    assert resent.kind == "wait" and resent.until == late + RESEND_S
    assert next_step(view, me(sent={"vote_timeout": late}), late + RESEND_S).kind == (
        "vote_timeout"
    )
    early = next_step(view, me(), view.leader_since + 1)
    assert early.kind == "wait" and early.until == view.leader_since + view.leader_timeout_s


def _member(name: str, *, seen_ago: float = 1.0, finished: bool = False,
            contribution: str = "snapshot", active: bool = True) -> Member:  # fmt: skip
    return Member(name, active, finished, contribution, NOW - seen_ago, f"{name}:1")


def _open_round(ready: tuple[str, ...], *members: Member) -> RoundView:
    return RoundView(5, False, ready, (), None, 0.0, {m.name: m for m in members}, None, (),
                     20.0)  # fmt: skip


def test_quorum_waits_a_window_for_late_joiners_then_seals() -> None:
    view = _open_round(("a", "b"), _member("a"), _member("b"), _member("c"))
    first = next_step(view, me(), NOW)
    assert first.kind == "wait" and first.quorum and first.waiting == ("c",)
    assert first.until == NOW + WINDOW_S
    assert next_step(view, me(quorum_since=NOW), NOW + 1).kind == "wait"
    assert next_step(view, me(quorum_since=NOW), NOW + WINDOW_S).kind == "seal"
    everyone = _open_round(("a", "b", "c"), _member("a"), _member("b"), _member("c"))
    assert next_step(everyone, me(), NOW).kind == "seal"  # nobody left to wait for
    # one seal is enough: the others take their turn only if the ones before them are gone
    second = next_step(everyone, me(name="b"), NOW)
    assert second.kind == "wait" and second.until == NOW + RESEND_S
    assert next_step(everyone, me(name="b", quorum_since=NOW), NOW + RESEND_S).kind == "seal"
    late = next_step(view, me(name="c", quorum_since=NOW), NOW + WINDOW_S)  # not ready itself
    assert late.kind == "wait" and late.until == NOW + WINDOW_S + 2 * RESEND_S


def test_silent_or_inactive_members_are_not_waited_for() -> None:
    view = _open_round(
        ("a", "b"), _member("a"), _member("b"),
        _member("gone", seen_ago=PRESENCE_S + 1),
        _member("done", finished=True, contribution="inactive"),
        _member("off", active=False),
    )  # fmt: skip
    step = next_step(view, me(), NOW)
    assert step.kind == "seal" and step.absent == ("gone",)
    # one that falls silent while waited for is waited for only until then
    fading = _open_round(("a", "b"), _member("a"), _member("b"), _member("c", seen_ago=29.5))
    step = next_step(fading, me(quorum_since=NOW), NOW)
    assert step.kind == "wait" and step.until == NOW + 0.5


def test_finished_peers_stop_when_nobody_trains() -> None:
    training = _open_round((), _member("a", finished=True), _member("b"))
    assert next_step(training, me(finished=True), NOW).kind == "wait"
    gone = _open_round((), _member("a", finished=True), _member("b", seen_ago=PRESENCE_S))
    assert next_step(gone, me(finished=True), NOW).kind == "over"
    done = _open_round((), _member("a", finished=True), _member("b", finished=True))
    assert next_step(done, me(finished=True), NOW).kind == "over"


def test_leader_leads_once_and_late_rounds_close() -> None:
    members = {n: _member(n) for n in "abc"}
    sealed = RoundView(5, True, ("a", "b"), ("a", "b"), "a", NOW, members, None, (), 20.0)
    assert next_step(sealed, me(), NOW).kind == "lead"
    assert next_step(sealed, me(led=frozenset({5})), NOW).kind == "wait"
    without = replace(sealed, participants=("b", "c"), ready=("b", "c"), leader="b")
    assert next_step(without, me(), NOW).kind == "left_out"
    assert next_step(replace(sealed, round=6), me(), NOW).kind == "closed"
    # below min_peers nothing is sealed, however long it waits
    alone = _open_round(("a",), _member("a"), _member("b", seen_ago=PRESENCE_S + 5))
    step = next_step(alone, me(), NOW)
    assert step.kind == "wait" and step.until == NOW + IDLE_S and step.ready == ("a",)


def test_a_peer_votes_a_silent_leader_out_once() -> None:
    members = {n: _member(n) for n in "abc"}
    sealed = RoundView(5, True, ("a", "b", "c"), ("a", "b", "c"), "b", NOW - 20, members,
                       None, (), 20.0)  # fmt: skip
    step = next_step(sealed, me(), NOW)
    assert step.kind == "vote_timeout" and step.leader == "b"
    voted = replace(sealed, timeout_votes=("a",))  # the ledger has it: wait for the others
    step = next_step(voted, me(), NOW + 3)
    assert step.kind == "wait" and step.leader == "b"
    assert next_step(voted, me(name="c"), NOW).kind == "vote_timeout"


def test_a_round_is_not_sealed_without_a_site_that_may_lead() -> None:
    followers = (replace(_member("a"), leads=False), replace(_member("b"), leads=False))
    view = _open_round(("a", "b"), *followers)
    step = next_step(view, me(), NOW)
    assert step.kind == "wait" and not step.quorum
    view = _open_round(("a", "b"), followers[0], _member("b"))
    assert next_step(view, me(), NOW).kind == "seal"


def test_while_a_merge_awaits_its_audit_auditors_recompute_it_once_and_nobody_votes() -> None:
    members = {n: _member(n) for n in "abc"}
    audit = {"auditors": ["a"], "attestations": {}, "digest": "d" * 64, "leader": "b"}
    sealed = RoundView(5, True, ("a", "b", "c"), ("a", "b", "c"), "b", NOW - 60, members,
                       None, (), 20.0, audit=audit)  # fmt: skip
    assert next_step(sealed, me(), NOW).kind == "audit"
    # recomputed already (its attestation not on the ledger yet): it waits
    assert next_step(sealed, me(audited=frozenset({(5, "b", "d" * 64)})), NOW).kind == "wait"
    # the same digest proposed by the next leader is recomputed again
    again = replace(sealed, leader="c", audit={**audit, "leader": "c"})
    assert next_step(again, me(audited=frozenset({(5, "b", "d" * 64)})), NOW).kind == "audit"
    # the leader is long past its timeout, but it delivered: others wait, nobody votes
    for name in ("b", "c"):
        step = next_step(sealed, me(name=name), NOW)
        assert step.kind == "wait" and step.until == NOW + IDLE_S
    attested = replace(sealed, audit={**audit, "attestations": {"a": "d" * 64}})
    assert next_step(attested, me(), NOW).kind == "wait"


# --- sharded rounds -------------------------------------------------------------------------------


def _sharded(shards: list[dict], leader: str = "b", excluded: tuple[str, ...] = ()) -> RoundView:
    members = {n: Member(n, True, False, None, NOW, f"{n}:1") for n in ("a", "b", "c")}
    return RoundView(round=5, sealed=True, ready=("a", "b", "c"), participants=("a", "b", "c"),
                     leader=leader, leader_since=NOW - 1.0, members=members, latest_merged=None,
                     history=(), leader_timeout_s=20.0, shards=tuple(shards),
                     shard_excluded=excluded)  # fmt: skip


def _shard(owner: str, digest: str | None = None, since: float = NOW - 1.0,
           votes: tuple[str, ...] = ()) -> dict:  # fmt: skip
    return {"owner": owner, "digest": digest, "since": since, "votes": list(votes)}


def test_an_owner_merges_its_shard_again_when_more_are_left_out() -> None:
    view = _sharded([_shard("b"), _shard("a")])
    assert next_step(view, me(), NOW) == next_step(view, me(), NOW)
    step = next_step(view, me(), NOW)
    assert (step.kind, step.index) == ("shard", 1)
    merged = me(sharded=frozenset({(5, 1, ())}))
    assert next_step(view, merged, NOW).kind == "wait"
    more = replace(view, shard_excluded=("c",))  # sent back: merge it again without c
    assert (next_step(more, merged, NOW).kind, next_step(more, merged, NOW).index) == ("shard", 1)


def test_a_silent_owner_is_voted_out_once_past_the_timeout() -> None:
    view = _sharded([_shard("b", since=NOW - 19.0), _shard("a", "d" * 64)])
    step = next_step(view, me(), NOW)
    assert step.kind == "wait" and step.until == NOW + 1.0  # the owner's time is not up
    late = _sharded([_shard("b", since=NOW - 21.0), _shard("a", "d" * 64)])
    step = next_step(late, me(), NOW)
    assert (step.kind, step.index, step.leader) == ("vote_shard", 0, "b")
    sent = me(sent={"vote_shard:0:b": NOW - 0.5})
    assert next_step(late, sent, NOW).kind == "wait"  # sent a moment ago
    voted = _sharded([_shard("b", since=NOW - 21.0, votes=("a",)), _shard("a", "d" * 64)])
    assert next_step(voted, me(), NOW).kind == "wait"


def test_every_shard_in_means_assemble_then_the_leaders_turn() -> None:
    done = [_shard("b", "d" * 64), _shard("a", "e" * 64)]
    assert next_step(_sharded(done), me(), NOW).kind == "assemble"
    assembled = me(assembled=frozenset({(5, ("b:" + "d" * 64, "a:" + "e" * 64))}))
    assert next_step(_sharded(done), assembled, NOW).kind == "wait"  # b leads
    assert next_step(_sharded(done, leader="a"), assembled, NOW).kind == "lead"
    redone = [_shard("b", "f" * 64), _shard("a", "e" * 64)]  # b's shard was merged again
    assert next_step(_sharded(redone), assembled, NOW).kind == "assemble"


def test_a_posted_shard_not_had_is_voted_on_once_its_time_is_up() -> None:
    posted = [_shard("b", "d" * 64, since=NOW - 5.0), _shard("a", "e" * 64)]
    facts = me(assembled=frozenset({(5, ("b:" + "d" * 64, "a:" + "e" * 64))}),
               unfetched=frozenset({(5, 0, "b:" + "d" * 64)}))  # fmt: skip
    step = next_step(_sharded(posted, leader="c"), facts, NOW)
    assert step.kind == "wait" and step.until == NOW + 15.0  # woken for the vote
    late = [_shard("b", "d" * 64, since=NOW - 20.0), _shard("a", "e" * 64)]
    step = next_step(_sharded(late, leader="c"), facts, NOW)
    assert (step.kind, step.index, step.leader) == ("vote_shard", 0, "b")
