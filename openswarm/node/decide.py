"""What a peer does next in a round, decided from the contract's state alone.

`next_step(view, me, now)` is a pure function: the same view, facts and time always give the
same step, so the protocol's choices (seal, lead, vote a silent leader out, wait, give up)
are unit-tested without processes or a ledger. The peer's driver (`peer.py`) performs the
step and calls it again when the ledger pushes a new state or the step's deadline passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

#: How soon the same transaction (a seal, a timeout vote) may be sent again for one round
#: when the state it should have changed has not come back yet.
RESEND_S = 1.0
#: A ready site seals after those before it in name order had their turn (RESEND_S each),
#: counting at most this many turns.
SEAL_TURNS = 3
#: Longest wait without a reason: the view is looked at again (locally) at least this often.
IDLE_S = 5.0


@dataclass(frozen=True)
class Member:
    """One contract member as the ledger records it."""

    name: str
    active: bool
    finished: bool
    contribution: str | None
    last_seen: float
    endpoint: str | None
    leads: bool = True  # False: it opted out of leading

    def present(self, now: float, timeout_s: float) -> bool:
        """Whether it signed anything on the ledger (a heartbeat at least) lately."""
        return now - self.last_seen < timeout_s


@dataclass(frozen=True)
class RoundView:
    """The contract's state, typed: the current round and its members."""

    round: int
    sealed: bool
    ready: tuple[str, ...]
    participants: tuple[str, ...]
    leader: str | None
    leader_since: float
    members: Mapping[str, Member]
    latest_merged: Mapping[str, Any] | None
    history: tuple[Mapping[str, Any], ...]
    leader_timeout_s: float
    timeout_votes: tuple[str, ...] = ()  # who voted the current leader out so far
    audit: Mapping[str, Any] | None = None  # the leader's merge awaiting its auditors
    shards: tuple[Mapping[str, Any], ...] = ()  # a sharded round's shards (ledger/shards.py)
    shard_excluded: tuple[str, ...] = ()  # whom its shards left out so far
    secagg: Mapping[str, Any] | None = None  # a masked round's phases (secure_rounds.py)
    secagg_threshold: int = 0
    sealed_at: float = 0.0

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RoundView:
        current = state["current"]
        members = {
            name: Member(
                name=name,
                active=bool(m["active"]),
                finished=bool(m["finished"]),
                contribution=m.get("contribution"),
                last_seen=float(m.get("last_seen") or 0.0),
                endpoint=m.get("endpoint"),
                leads=bool(m.get("leads", True)),
            )
            for name, m in state["members"].items()
        }
        return cls(
            round=int(state["round"]),
            sealed=bool(current["sealed"]),
            ready=tuple(sorted(current["ready"])),
            participants=tuple(current["participants"]),
            leader=current.get("leader"),
            leader_since=float(current.get("leader_since") or 0.0),
            timeout_votes=tuple(current.get("timeout_votes") or ()),
            audit=current.get("audit"),
            shards=tuple(current.get("shards") or ()),
            shard_excluded=tuple(e["name"] for e in current.get("shard_excluded") or ()),
            members=members,
            latest_merged=state.get("latest_merged"),
            history=tuple(state.get("history") or ()),
            leader_timeout_s=float(state["settings"]["leader_timeout_s"]),
            secagg=current.get("secagg"),
            sealed_at=float(current.get("sealed_at") or 0.0),
            secagg_threshold=int(
                (state["settings"].get("secure_aggregation") or {}).get("threshold", 0)
            ),
        )

    def record(self, round: int) -> Mapping[str, Any] | None:
        """The history entry of `round`, if it is among the recent ones."""
        return next((h for h in self.history if h["round"] == round), None)


@dataclass(frozen=True)
class Me:
    """What the peer itself knows: who it is, its round, its settings and what it did."""

    name: str
    round: int  # the round this peer said ready for
    min_peers: int
    extra_window_s: float
    presence_timeout_s: float
    finished: bool = False
    led: frozenset[int] = frozenset()  # rounds this peer has led already
    # (round, leader, digest) of the merges it recomputed (a rejected merge's next leader
    # may propose the same digest, which its new auditors recompute again)
    audited: frozenset[tuple[int, str, str]] = frozenset()
    quorum_since: float | None = None  # when it first saw min_peers ready in this round
    sent: Mapping[str, float] = field(default_factory=dict)  # step name -> when last sent
    # (round, shard, whom the shards left out) of the shards it merged, and the rounds whose
    # shards it assembled (a shard sent back to be merged again leaves out more)
    sharded: frozenset[tuple[int, int, tuple[str, ...]]] = frozenset()
    # (round, each shard's `posted_as`) of the shards it assembled; (round, shard, posted_as)
    # of those it could not fetch
    assembled: frozenset[tuple[int, tuple[str, ...]]] = frozenset()
    unfetched: frozenset[tuple[int, int, str]] = frozenset()
    masked: frozenset[int] = frozenset()  # rounds it posted (or gave up) its masked update
    revealed: frozenset[int] = frozenset()  # rounds it revealed its shares of


@dataclass(frozen=True)
class Step:
    """One thing to do. `kind` is one of:

    closed: the round is over (look up its result); seal: close the round to newcomers;
    lead: gather, merge and publish as the round's leader; audit: recompute the leader's
    merge as one of its auditors and attest what it found; vote_timeout: the leader has
    been silent too long (`leader` names it; the leader changes once a majority of the
    live other participants voted so, and a peer votes once per leader); left_out: the
    round was sealed without this peer (wait for its end, keep the local model); over: this
    peer finished and nobody is left training; wait: nothing to do until the state changes
    or `until` (seconds of `now`'s clock) passes. In a masked round (secure aggregation):
    mask: post this site's masked update; unmask: reveal its shares for the survivors the
    ledger fixed; secagg_abort: too few shares came in time. In a sharded round: shard: merge shard
    `index`, which this peer owns; vote_shard: that shard's owner (`leader`) has been
    silent too long; assemble: every shard is in, fetch and join them. `ready`, `waiting`
    and `absent` say who the round has, may still get, and stopped waiting for (for
    logging); `quorum` that min_peers are ready.
    """

    kind: str
    until: float | None = None
    leader: str | None = None
    index: int | None = None
    ready: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    quorum: bool = False


def next_step(view: RoundView, me: Me, now: float) -> Step:
    """The next step for `me` in its round `me.round`, at time `now` (wall clock, seconds)."""
    if view.round > me.round:
        return Step("closed")
    if not view.sealed:
        return _unsealed(view, me, now)
    if view.audit is not None:  # the leader delivered; its auditors decide (or time out)
        mine = me.name in view.audit["auditors"] and me.name not in view.audit["attestations"]
        if mine and (me.round, view.audit["leader"], view.audit["digest"]) not in me.audited:
            return Step("audit")
        return Step("wait", until=now + IDLE_S)
    if view.secagg is not None and me.name in view.participants:
        step = _secure(view, me, now)
        if step is not None:
            return step
    if view.shards and me.name in view.participants:
        step, wake = _sharded(view, me, now)
        if step is not None:
            return step
        step = _leader_step(view, me, now)
        if wake is not None and step.kind == "wait":  # also wake for a shard's deadline
            return replace(step, until=min(step.until or wake, wake))
        return step
    return _leader_step(view, me, now)


def _leader_step(view: RoundView, me: Me, now: float) -> Step:
    """Lead, wait for the leader, or vote it out once its time is up."""
    if view.leader == me.name:
        return Step("wait", until=now + IDLE_S) if me.round in me.led else Step("lead")
    if me.name not in view.participants:
        return Step("left_out")
    timeout_at = view.leader_since + view.leader_timeout_s
    if now < timeout_at:
        return Step("wait", until=timeout_at)
    if me.name in view.timeout_votes:  # voted: the others' votes decide
        return Step("wait", until=now + IDLE_S, leader=view.leader)
    return _resend("vote_timeout", me, now, leader=view.leader)


def _secure(view: RoundView, me: Me, now: float) -> Step | None:
    """A masked round's own steps (None: the leader's steps, as in any round): mask once
    sealed, reveal once the survivors are fixed, abort once the shares are overdue."""
    secagg = view.secagg
    assert secagg is not None
    if secagg["survivors"] is None:
        if me.round not in me.masked and me.name not in secagg["masked"]:
            return Step("mask")
        if not view.shards:  # the leader pulls them, then fixes the survivors
            return None
        # sharded: those that posted their masked update, once all did or time is up
        due = view.sealed_at + view.leader_timeout_s / 4
        if set(secagg["masked"]) >= set(view.participants) or now >= due:
            return _resend("survivors", me, now)
        return Step("wait", until=min(due, now + IDLE_S))
    if me.round not in me.revealed and me.name not in secagg["unmasked"]:
        return Step("unmask")
    if len(secagg["unmasked"]) >= view.secagg_threshold:
        return None
    due = float(secagg["survivors_at"]) + view.leader_timeout_s / 2
    if now < due and view.shards:  # the shards wait for the shares
        return Step("wait", until=min(due, now + IDLE_S))
    if now < due:
        step = _leader_step(view, me, now)
        if step.kind == "wait":
            return replace(step, until=min(step.until or due, due))
        return step
    return _resend("secagg_abort", me, now)


def posted_as(shard: Mapping[str, Any]) -> str:
    """A posted shard as one string: its owner and digest (a shard merged again by another
    owner may come with the same digest, yet from elsewhere)."""
    return f"{shard['owner']}:{shard['digest']}"


def _sharded(view: RoundView, me: Me, now: float) -> tuple[Step | None, float | None]:
    """A sharded round's step before its leader's turn: merge a shard this peer owns, vote
    out an owner silent past the timeout (or one whose posted shard this peer could not
    fetch), wait for the shards, assemble them. None once this peer assembled them (then
    it is the leader's turn, as in any round), with when to look again for a vote."""
    pending = [i for i, shard in enumerate(view.shards) if shard["digest"] is None]
    for i in pending:
        if view.shards[i]["owner"] == me.name and (
            (me.round, i, view.shard_excluded) not in me.sharded
        ):
            return Step("shard", index=i), None
    if not pending:
        if (me.round, tuple(map(posted_as, view.shards))) not in me.assembled:
            return Step("assemble"), None
        unfetched = [i for i, s in enumerate(view.shards)
                     if (me.round, i, posted_as(s)) in me.unfetched]  # fmt: skip
        step, wake = _vote_shards(view, me, now, unfetched)
        return (step if step.kind != "wait" else None), wake
    step, wake = _vote_shards(view, me, now, pending)
    return (step if step.kind != "wait" else Step("wait", until=wake)), None


def _vote_shards(view: RoundView, me: Me, now: float,
                 indices: list[int]) -> tuple[Step, float | None]:  # fmt: skip
    """A vote against the owner of one of shards `indices` whose time is up, or a wait
    (and until when: None if there is nothing to vote on)."""
    deadlines = []
    for i in indices:
        shard = view.shards[i]
        owner, due = shard["owner"], float(shard["since"]) + view.leader_timeout_s
        if owner == me.name or me.name in shard["votes"]:
            continue
        if now < due:
            deadlines.append(due)
            continue
        step = _resend(f"vote_shard:{i}:{owner}", me, now, leader=owner)
        if step.kind != "wait":
            return Step("vote_shard", leader=owner, index=i), None
        deadlines.append(step.until or now + RESEND_S)
    if not deadlines:
        return Step("wait", until=now + IDLE_S), (now + IDLE_S if indices else None)
    return Step("wait", until=min(deadlines)), min(deadlines)


def _unsealed(view: RoundView, me: Me, now: float) -> Step:
    timeout = me.presence_timeout_s
    absent = tuple(n for n, m in sorted(view.members.items())
                   if m.active and not m.present(now, timeout))  # fmt: skip
    if me.finished:
        # Only sites still training seal rounds; once none is left, it is over.
        training = [m for n, m in view.members.items()
                    if m.active and not m.finished and n != me.name
                    and m.present(now, timeout)]  # fmt: skip
        if not training:
            return Step("over")
        return Step("wait", until=_earliest_absence(training, timeout, now), absent=absent)
    ready = view.ready
    expected = [
        m for n, m in sorted(view.members.items())
        if m.active and n not in ready
        and (not m.finished or m.contribution != "inactive")
        and m.present(now, timeout)
    ]  # fmt: skip
    waiting = tuple(m.name for m in expected)
    may_lead = any(n in view.members and view.members[n].leads for n in ready)
    if len(ready) < me.min_peers or not may_lead:  # (the contract seals only with a leader)
        until = _earliest_absence(expected, timeout, now)
        return Step("wait", until=until, ready=ready, waiting=waiting, absent=absent)
    quorum_at = me.quorum_since if me.quorum_since is not None else now
    window_end = quorum_at + me.extra_window_s
    if waiting and now < window_end:
        until = min(window_end, _earliest_absence(expected, timeout, now))
        return Step("wait", until=until, ready=ready, waiting=waiting, absent=absent,
                    quorum=True)  # fmt: skip
    # One seal is enough: the first ready site (by name) seals at once, the k-th only
    # k x RESEND_S later (counting at most SEAL_TURNS), should the ones before it be gone.
    turn = min(ready.index(me.name) if me.name in ready else len(ready), SEAL_TURNS)
    seal_at = (window_end if waiting else quorum_at) + turn * RESEND_S
    if now < seal_at:
        return Step("wait", until=seal_at, ready=ready, waiting=waiting, absent=absent,
                    quorum=True)  # fmt: skip
    step = _resend("seal", me, now)
    return Step(step.kind, until=step.until, ready=ready, waiting=waiting, absent=absent,
                quorum=True)  # fmt: skip


def _resend(kind: str, me: Me, now: float, leader: str | None = None) -> Step:
    """`kind`, unless it was sent less than RESEND_S ago (then wait for its effect)."""
    sent = me.sent.get(kind)
    if sent is not None and now - sent < RESEND_S:
        return Step("wait", until=sent + RESEND_S, leader=leader)
    return Step(kind, leader=leader)


def _earliest_absence(members: list[Member], timeout: float, now: float) -> float:
    """When the first of `members` will count as gone unless it shows up (capped)."""
    times = [m.last_seen + timeout for m in members]
    return min([*times, now + IDLE_S])
