"""The sharded topology's part of the training contract (`merge_topology: sharded`).

At the seal of a round after the first, every participant that may lead owns one shard (a
contiguous part of the merged model; node/shards.py cuts it), in ranking order. An owner
pulls that part of every participant's snapshot, merges it and posts `shard` with the
part's digest, chunk root and size and whom it left out. The shards must agree on whom
they left out: a shard posted with fewer exclusions than another is refused, and one
posted with more sends the others back to merging again without them. Once every shard is
in, the round's leader assembles them and posts `merged` as in the leader topology (its
`excluded` must be the shards'), and its timeout counts from then. An owner silent for
`leader_timeout_s` is voted out by a majority of the live other participants, and its
shard goes to the next owner in ranking order that has not failed this round; so does a
posted shard that a majority could not fetch within `leader_timeout_s` of its posting (its
owner crashed, or serves other bytes than its root says). A shard may leave out only a
minority of the round's participants. With audits, the leader's `merged` is audited as in the
leader topology; auditors that find another merge name the shards that differ, and those a
majority names go to their next owners (the leader only joined them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openswarm.ledger.contract_checks import (
    ContractError,
    check_digest,
    check_excluded,
    check_fields,
    check_int,
    check_str,
)


class ShardedRounds:
    """Shard ownership, posts and timeouts; mixed into TrainingContract, whose state and
    helpers (`_event`, `_live`, `_require_sealed`, `_abort_round` ...) it uses."""

    _shards: list[dict[str, Any]]
    _shard_owners: list[str]
    _shard_excluded: list[dict[str, str]]
    _failed_owners: list[str]
    # the contract's own, used here
    _settings: Any
    _latest_merged: dict[str, Any] | None
    _ranking: list[str]
    _participants: list[str]
    _leader_since: float | None
    _round: int
    _audit: dict[str, Any] | None
    _timeout_votes: list[str]

    def _event(self, kind: str, call: Any, **fields: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _live(self, name: str, call: Any) -> bool:
        raise NotImplementedError

    def _may_lead(self, name: str) -> bool:
        raise NotImplementedError

    # secure aggregation's (secure_rounds.py): a masked round's phases, its shards' rule
    _secagg: dict[str, Any] | None
    _secagg_shard_excluded: Callable[[Any, list[dict[str, str]]], None]

    def _require_sealed(self, round: int) -> None:
        raise NotImplementedError

    def _abort_round(self, call: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _reset_shards(self) -> None:
        self._shards = []  # {owner, since, votes, digest, root, size} per shard
        self._shard_owners = []  # who may own a shard this round, in ranking order
        self._shard_excluded = []  # whom the shards merged so far left out
        self._failed_owners = []

    def _open_shards(self, call: Any) -> None:
        """At the seal: one shard for each participant that may lead, in ranking order
        (none in a leader-topology round, or when the leader hands out its own model)."""
        if self._settings.merge_topology != "sharded" or self._latest_merged is None:
            return
        self._shard_owners = [n for n in self._ranking if self._may_lead(n)]
        self._shards = [_fresh(owner, call.timestamp) for owner in self._shard_owners]

    def _shards_pending(self) -> bool:
        """Whether this round is sharded and a shard is still to come."""
        return any(shard["digest"] is None for shard in self._shards)

    def _shard_of(self, call: Any, what: str) -> tuple[int, dict[str, Any]]:
        self._require_sealed(call.round)
        if not self._shards:
            raise ContractError(
                f"{what}: round {call.round} is not merged in shards (merge_topology leader, "
                "or the first round, whose leader hands out its own model)"
            )
        index = check_int(call.payload["index"], "payload.index", minimum=0)
        if index >= len(self._shards):
            raise ContractError(
                f"{what}: round {call.round} has {len(self._shards)} shards, no shard {index}"
            )
        return index, self._shards[index]

    def _on_shard(self, call: Any) -> list[dict[str, Any]]:
        """A shard owner's merge of its shard: digest, chunk root, size and exclusions."""
        payload = call.payload
        check_fields(payload, "shard", ("index", "digest", "root", "size"), ("excluded",))
        index, shard = self._shard_of(call, "shard")
        if call.sender != shard["owner"]:
            raise ContractError(f"{call.sender} does not own shard {index} of round "
                                f"{call.round} (its owner is {shard['owner']})")  # fmt: skip
        if shard["digest"] is not None:
            raise ContractError(f"shard {index} of round {call.round} is merged already")
        digest = check_digest(payload["digest"], "payload.digest")
        root = check_digest(payload["root"], "payload.root")
        size = check_int(payload["size"], "payload.size", minimum=0)
        excluded = check_excluded(payload.get("excluded", []), self._participants)
        if self._secagg is not None:
            self._secagg_shard_excluded(call, excluded)
        elif 2 * len(excluded) >= len(self._participants):
            raise ContractError(
                f"a shard may leave out only a minority of the round's "
                f"{len(self._participants)} participants (it left out {len(excluded)})"
            )
        floor = [e["name"] for e in self._shard_excluded]
        names = {e["name"] for e in excluded}
        if not set(floor) <= names:
            raise ContractError(
                f"shard {index} of round {call.round} must leave out {', '.join(sorted(floor))} "
                "as the round's other shards do: merge it again without them"
            )

        redo = []
        if names != set(floor):  # new exclusions: the shards merged with them go again,
            self._shard_excluded += [e for e in excluded if e["name"] not in floor]
            for number, other in enumerate(self._shards):  # and each owner has its full time
                if other["digest"] is not None:
                    redo.append(number)
                self._shards[number] = _fresh(other["owner"], call.timestamp)
            shard = self._shards[index]
        # from now on, `since` is when it was posted (for votes that it cannot be had)
        shard.update(digest=digest, root=root, size=size, votes=[], since=call.timestamp)
        complete = not self._shards_pending()
        if complete:  # the leader's turn: its timeout counts from now (votes cast before
            self._leader_since = call.timestamp  # belong to an earlier wait)
            self._timeout_votes = []
        event = self._event("shard_merged", call, round=call.round, index=index,
                            owner=call.sender, digest=digest, redo=redo, complete=complete,
                            excluded=[e["name"] for e in self._shard_excluded])  # fmt: skip
        return [event]

    def _on_shard_timeout(self, call: Any) -> list[dict[str, Any]]:
        """A participant's vote that a shard's owner has been silent for leader_timeout_s."""
        check_fields(call.payload, "shard_timeout", ("index", "owner"), ())
        index, shard = self._shard_of(call, "shard_timeout")
        if self._audit is not None:
            raise ContractError(f"the merge of round {call.round} awaits its audit: its shards "
                                "stay as they are until the audit decides")  # fmt: skip
        if call.sender not in self._participants:
            raise ContractError(f"{call.sender} is not a participant of round {call.round}")
        named = check_str(call.payload["owner"], "payload.owner")
        owner = shard["owner"]
        if named != owner:
            raise ContractError(f"owner already changed: shard {index} of round {call.round} "
                                f"belongs to {owner}, not {named}")  # fmt: skip
        if call.sender == owner:
            raise ContractError(f"{owner} cannot vote itself out of shard {index}")
        limit = self._settings.leader_timeout_s
        waited = call.timestamp - shard["since"]
        if waited < limit:
            what = "timed out" if shard["digest"] is None else "declared unavailable"
            raise ContractError(
                f"the owner of shard {index} of round {call.round} cannot be {what} for "
                f"another {limit - waited:.3f} s (leader_timeout_s={limit:g})"
            )
        if call.sender in shard["votes"]:
            raise ContractError(f"{call.sender} already voted {owner} out of shard {index}")

        shard["votes"] = [*shard["votes"], call.sender]
        settled = self._settle_shards(call)
        if settled:
            return settled
        event = self._event("shard_timeout_voted", call, round=call.round, index=index,
                            owner=owner, votes=list(shard["votes"]))  # fmt: skip
        return [event]

    def _settle_shards(self, call: Any) -> list[dict[str, Any]]:
        """Hand each shard whose owner a majority of the live other participants voted out
        to the next owner (on every vote and heartbeat); abort the round when a shard is
        past its timeout and fewer than min_peers participants are live."""
        live = [n for n in self._participants if self._live(n, call)]
        limit = self._settings.leader_timeout_s
        overdue = any(s["digest"] is None and call.timestamp - s["since"] >= limit
                      for s in self._shards)  # fmt: skip
        if overdue and len(live) < self._settings.min_peers:
            return [self._abort_round(call)]
        events: list[dict[str, Any]] = []
        for index, shard in enumerate(self._shards):
            if not shard["votes"]:
                continue
            electorate = [n for n in self._participants if n != shard["owner"]
                          and (n in shard["votes"] or n in live)]  # fmt: skip
            if len(shard["votes"]) < len(electorate) // 2 + 1:
                continue
            moved = self._reassign(call, index, live)
            if moved is None:
                return [*events, self._abort_round(call)]
            events.append(moved)
        return events

    def _reassign(self, call: Any, index: int, live: list[str]) -> dict[str, Any] | None:
        """Shard `index` to the next owner, to be merged again (its owner failed); the
        event, or None when nobody is left to own it."""
        shard = self._shards[index]
        successor = self._next_owner(shard["owner"], live)
        if successor is None:
            return None
        previous = shard["owner"]
        self._failed_owners = sorted({*self._failed_owners, previous})
        self._shards[index] = _fresh(successor, call.timestamp)
        return self._event("shard_owner_changed", call, round=self._round, index=index,
                           previous=previous, owner=successor)  # fmt: skip

    def _reassign_shards(self, call: Any, indices: list[int]) -> list[dict[str, Any]]:
        """Shards `indices` (a majority of auditors found them wrong) to their next owners;
        the round is aborted when one has none."""
        live = [n for n in self._participants if self._live(n, call)]
        events = []
        for index in indices:
            moved = self._reassign(call, index, live)
            if moved is None:
                return [*events, self._abort_round(call)]
            events.append(moved)
        return events

    def _check_blamed(self, value: Any, digest: str, size: int,
                      audit: dict[str, Any]) -> list[int] | None:  # fmt: skip
        """An auditor's list of the shards its recomputation differs in (None: none given)."""
        if value is None:
            return None
        if not self._shards:
            raise ContractError("payload.shards names shards, but the round is not sharded")
        if digest == audit["digest"] and size == audit["size"]:
            raise ContractError("payload.shards names shards that differ, but the digest agrees")
        if not isinstance(value, list) or not all(type(i) is int for i in value):
            raise ContractError("payload.shards must be a list of shard numbers")
        if len(set(value)) != len(value) or not all(0 <= i < len(self._shards) for i in value):
            raise ContractError(f"payload.shards must name distinct shards of the "
                                f"{len(self._shards)}")  # fmt: skip
        return sorted(value)

    def _blamed_shards(self, audit: dict[str, Any], disagree: list[str], needed: int) -> list[int]:
        """The shards that a majority of the audit's auditors found wrong."""
        counts: dict[int, int] = {}
        for name in disagree:
            for index in audit["blamed"].get(name, []):
                counts[index] = counts.get(index, 0) + 1
        return sorted(i for i, count in counts.items() if count >= needed)

    def _next_owner(self, failed: str, live: list[str]) -> str | None:
        """The owner after `failed` in ranking order (wrapping round) that is live and has
        not failed this round; None when there is none."""
        owners = self._shard_owners
        start = owners.index(failed)
        for step in range(1, len(owners) + 1):
            name = owners[(start + step) % len(owners)]
            if name in live and name not in self._failed_owners and name != failed:
                return name
        return None

    def _shards_for_merged(self, call: Any, size: int, excluded: list[dict[str, str]]) -> None:
        """Refuse a sharded round's `merged` before every shard is in, of another size than
        theirs together, or with exclusions other than theirs."""
        if not self._shards:
            return
        if self._shards_pending():
            raise ContractError(f"round {call.round} is merged in shards and not all are in")
        total = sum(int(shard["size"]) for shard in self._shards)
        if size != total:
            raise ContractError(f"payload.size must be {total}, the size of the shards of round "
                                f"{call.round} together")  # fmt: skip
        theirs = sorted(e["name"] for e in self._shard_excluded)
        if sorted(e["name"] for e in excluded) != theirs:
            left_out = ", ".join(theirs) or "nobody"
            raise ContractError(f"payload.excluded must name whom the shards of round "
                                f"{call.round} left out: {left_out}")  # fmt: skip

    def _shards_view(self) -> list[dict[str, Any]]:
        return [dict(sorted(shard.items())) for shard in self._shards]

    def _shards_record(self) -> list[dict[str, Any]] | None:
        """The shards as the round's history keeps them (None: not a sharded round)."""
        if not self._shards:
            return None
        return [{k: s[k] for k in ("digest", "owner", "root", "size")} for s in self._shards]


def _fresh(owner: str, since: float) -> dict[str, Any]:
    return {"digest": None, "owner": owner, "root": None, "since": since, "size": None,
            "votes": []}  # fmt: skip
