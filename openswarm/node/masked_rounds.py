"""Driving a masked round (secure aggregation) for one peer: post the masked update, reveal
shares, and as leader pull the masked updates, fix the survivors on the ledger, wait for
the shares and unmask the sum. The cryptography is openswarm.node.secure's; the contract's
rules are openswarm.ledger.secure_rounds'.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from openswarm.codec import CodecError, decode, digest_encoded, encode
from openswarm.codec.arrays import flat_storage
from openswarm.codec.chunks import CHUNK_BYTES, root_of
from openswarm.codec.chunks import leaves as chunk_leaves
from openswarm.codec.shards import Shard, cut
from openswarm.codec.tensors import TensorSpec
from openswarm.codec.transport import Transport
from openswarm.ledger.client import Outcome
from openswarm.merge import MergeInputError
from openswarm.node.checks import Structure
from openswarm.node.exchange import ExchangeClient, ExchangeError, SnapshotStore
from openswarm.node.leader import MAX_IDLE_S, Merged
from openswarm.node.secure import (
    MASKED_TENSOR,
    SecureAggregation,
    add_masked,
    masked_size,
    rebuilt,
    weight_shares,
)
from openswarm.node.shard_merge import MergedShard
from openswarm.secagg import SecAggError, max_error

log = logging.getLogger("openswarm.peer")

State = dict[str, Any]
#: submit(type, round, payload) -> outcome; state(newer_than, timeout) -> (height, state)
Submit = Callable[[str, int, Mapping[str, Any]], Outcome]
StateAfter = Callable[[int, float], tuple[int, State]]


@dataclass
class Facilities:
    """What a masked round needs of its peer."""

    name: str
    submit: Submit
    state: StateAfter
    store: SnapshotStore
    fetcher: ExchangeClient
    previous: Callable[[Mapping[str, Any]], Mapping[str, Any]]  # the latest merged model
    transport: Callable[[], Transport]


class MaskedRounds:
    """One peer's masked rounds."""

    def __init__(self, facilities: Facilities, contract: str) -> None:
        self.f = facilities
        self.secure = SecureAggregation(facilities.name, contract)

    @property
    def share_key(self) -> str:
        return self.secure.share_key

    def ready_part(self, state: State, round: int) -> dict[str, Any] | None:
        return self.secure.ready_part(state, round)

    # --- a participant ---
    def mask(self, state: State, round: int, own_data: bytes, reference: Structure) -> None:
        """Post this site's masked update of `round` (served to the leader as `masked`)."""
        name = self.f.name
        try:
            own = self.f.transport().unpack(own_data, reference, copy=False)
            previous = self.f.previous(state["latest_merged"])
            specs = list(reference.values())
            masked = self.secure.masked(state, round, own, previous, specs)
        except (SecAggError, MergeInputError, CodecError, KeyError) as exc:
            log.error("%s: cannot mask its update of round %d: %s", name, round, exc)
            return
        data = encode({MASKED_TENSOR: masked.view(np.int64)})
        digest, leaves = digest_encoded(data), chunk_leaves(data)
        self.f.store.publish("masked", round, digest, data, leaves)
        payload = {"digest": digest, "root": root_of(leaves), "size": len(data)}
        outcome = self.f.submit("masked", round, payload)
        if not outcome.applied:
            log.warning("%s: masked update of round %d refused: %s", name, round, outcome.reason)

    def reveal(self, state: State, round: int) -> None:
        """Reveal this site's shares for the survivors the ledger fixed."""
        shares = self.secure.reveal(state, round)
        outcome = self.f.submit("unmask", round, {"shares": shares})
        if not outcome.applied:
            log.warning("%s: shares of round %d refused: %s", self.f.name, round, outcome.reason)

    # --- the leader ---
    def lead(self, state: State, round: int, reference: Structure,
             revealed: set[int]) -> Merged | None:  # fmt: skip
        """Lead masked round `round`: the merged model, or None (logged) if it cannot be
        had; the round then times out or aborts on the ledger. `revealed` gets the round
        once this site revealed its own shares."""
        name = self.f.name
        timeout = float(state["settings"]["leader_timeout_s"])
        started = time.monotonic()
        deadline = started + timeout * 3 / 4
        specs = list(reference.values())
        count = masked_size(specs)
        expected = masked_layout(specs)[0]
        height, state = self._masked_posts(state, round, started + timeout / 4)
        secure = state["current"]["secagg"]
        fixed = secure["survivors"]
        names = list(fixed) if fixed is not None else sorted(secure["masked"])
        pulled = self._pull(state, round, names, count, expected, deadline)
        total = None
        got = []
        for who, masked in zip(names, pulled, strict=True):
            if isinstance(masked, str):
                log.warning("%s: masked update of %s in round %d not had: %s", name, who, round,
                            masked)  # fmt: skip
                continue
            total = add_masked(total, masked)
            got.append(who)
        if fixed is not None and got != list(fixed):
            log.error("%s: round %d's survivors are fixed, but not all of their masked updates "
                      "could be had", name, round)  # fmt: skip
            return None
        if total is None:
            log.error("%s: no masked update of round %d could be had", name, round)
            return None
        if fixed is None:
            outcome = self.f.submit("survivors", round, {"names": got})
            if not outcome.applied:
                log.error("%s: survivors of round %d refused: %s", name, round, outcome.reason)
                return None
        height, state = self._settled(round, height)
        if state["round"] != round or state["current"]["secagg"]["survivors"] != sorted(got):
            return None
        if round not in revealed and name not in state["current"]["secagg"]["unmasked"]:
            revealed.add(round)
            self.reveal(state, round)
        found = self._mean_update(state, round, total, height, deadline, 0, got)
        if found is None:
            return None
        mean, previous = found
        current = state["current"]
        params = rebuilt(previous, mean, specs)
        data = self.f.transport().pack(params)
        excluded = [{"name": n, "reason": "its masked update was not had"}
                    for n in current["participants"] if n not in got]  # fmt: skip
        return Merged(data, digest_encoded(data), got, excluded)

    def _mean_update(self, state: State, round: int, total: np.ndarray, height: int,
                     deadline: float, offset: int, survivors: list[str],
                     ) -> tuple[np.ndarray, Mapping[str, Any]] | None:  # fmt: skip
        """The survivors' mean update (from element `offset` on) and the previous merged
        model it applies to; None (logged) if it cannot be had: then a round that cannot be
        unmasked, or whose sum lies beyond the bound, is ended at once rather than left to
        time out."""
        summed = self._unmask(state, round, total, height, deadline, offset)
        if summed is None:
            outcome = self.f.submit("secagg_abort", round, {})
            log.error("%s: round %d cannot be unmasked; ending it (%s)", self.f.name, round,
                      "ended" if outcome.applied else outcome.reason)  # fmt: skip
            return None
        mean = self._checked_mean(state, round, summed, survivors)
        if mean is None:
            return None
        try:
            return mean, self.f.previous(state["latest_merged"])
        except MergeInputError as exc:
            log.error("%s: round %d: %s", self.f.name, round, exc)
            return None

    def _checked_mean(self, state: State, round: int, summed: np.ndarray,
                      survivors: list[str]) -> np.ndarray | None:  # fmt: skip
        """The survivors' mean update; None, and the round ended, if it lies beyond ±bound
        anywhere: honest updates, clipped and weighted, cannot put it there, so a survivor
        sent an out-of-range masked update (nobody can tell which: the sum is not used)."""
        current = state["current"]
        shares = weight_shares(current["ready"], list(current["participants"]))
        total = sum(shares[n] for n in survivors)
        mean = summed / total
        bound = float(state["settings"]["secure_aggregation"]["bound"])
        slack = max_error(len(survivors)) / total + bound * 1e-12
        beyond = int(np.count_nonzero(np.abs(mean) > bound + slack))
        if not beyond:
            return mean
        log.error("%s: the masked sum of round %d decodes beyond ±%g in %d coordinate(s): a "
                  "survivor sent an out-of-range update; ending the round", self.f.name, round,
                  bound, beyond)  # fmt: skip
        self.f.submit("secagg_abort", round, {})
        return None

    def _masked_posts(self, state: State, round: int, until: float) -> tuple[int, State]:
        """The state once every participant posted its masked update (or `until`)."""
        height = -1
        while True:
            secure = state["current"].get("secagg") if state["round"] == round else None
            if secure is None or secure["survivors"] is not None:
                return height, state
            if set(secure["masked"]) >= set(state["current"]["participants"]):
                return height, state
            left = until - time.monotonic()
            if left <= 0:
                return height, state
            height, state = self.f.state(height, left)

    def _settled(self, round: int, height: int) -> tuple[int, State]:
        """The state once it shows this round's survivors (or the round is over)."""
        stop = time.monotonic() + 10.0
        while True:
            height, state = self.f.state(height, max(0.0, stop - time.monotonic()))
            secure = state["current"].get("secagg") if state["round"] == round else None
            if secure is None or secure["survivors"] is not None or time.monotonic() > stop:
                return height, state

    def _pull(self, state: State, round: int, names: list[str], count: int, expected: int,
              deadline: float) -> Iterator[np.ndarray | str]:  # fmt: skip
        """Each of `names`' masked update (uint64, read-only), or why it cannot be had, in
        order; two pulled at a time, so the leader holds the sum and two more, not all."""
        secure = state["current"]["secagg"]
        members = state["members"]
        transport = self.f.transport()

        def pull(who: str) -> np.ndarray | str:
            entry = secure["masked"].get(who)
            if entry is None:
                return "posted no masked update"
            if int(entry["size"]) != expected:
                return f"announced {entry['size']} bytes, a masked update here has {expected}"
            try:
                if who == self.f.name:
                    found = self.f.store.find("masked", round, entry["digest"])
                    if found is None:
                        return "this site's masked update is gone"
                    data = found.data
                else:
                    data = self.f.fetcher.fetch(
                        members[who]["endpoint"], "masked", round, entry["digest"],
                        max_bytes=expected, size=expected, root=entry["root"],
                        zstd=transport.zstd, idle_s=MAX_IDLE_S, peer=who,
                        deadline_s=deadline - time.monotonic(),
                    )  # fmt: skip
                tensors = decode(data, copy=False)
            except (ExchangeError, CodecError, KeyError) as exc:
                return str(exc)
            values = tensors.get(MASKED_TENSOR)
            if (
                set(tensors) != {MASKED_TENSOR}
                or values is None
                or values.dtype != np.int64
                or values.shape != (count,)
            ):
                return f"not a masked update of {count} elements"
            return values.view(np.uint64)

        with ThreadPoolExecutor(max_workers=2) as pool:
            queued = iter(names)
            ahead = deque(pool.submit(pull, who) for who in itertools.islice(queued, 2))
            while ahead:
                got = ahead.popleft().result()
                ahead.extend(pool.submit(pull, who) for who in itertools.islice(queued, 1))
                yield got
                del got  # before the next one arrives

    def _unmask(self, state: State, round: int, total: np.ndarray, height: int,
                deadline: float, offset: int) -> np.ndarray | None:  # fmt: skip
        """The survivors' weighted sum of updates (from element `offset` on) once enough
        shares rebuild every secret; None if the round ends, or the deadline passes, first."""
        threshold = int(state["settings"]["secure_aggregation"]["threshold"])
        tried = -1
        while True:
            secure = state["current"].get("secagg") if state["round"] == round else None
            if secure is None:
                return None
            unmasked = len(secure["unmasked"])
            if unmasked >= threshold and unmasked > tried:
                tried = unmasked
                try:
                    return self.secure.unmask(state, round, total.copy(), offset)
                except SecAggError as exc:  # a bogus share: wait for more
                    log.warning("%s: round %d cannot be unmasked from %d sites' shares yet: "
                                "%s", self.f.name, round, unmasked, exc)  # fmt: skip
                    if unmasked == len(state["current"]["participants"]):
                        return None
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("%s: round %d: too few shares to unmask in time", self.f.name, round)
                return None
            height, state = self.f.state(height, left)

    # --- a shard owner (merge_topology sharded) ---
    def merge_shard(self, state: State, round: int, index: int,
                    reference: Structure) -> MergedShard | None:  # fmt: skip
        """Shard `index` of masked round `round`: its part of every survivor's masked
        update pulled and summed, unmasked, and written as that part of the merged model's
        encoding; None (logged) if it cannot be had (the owner is then voted out, or ends
        the round when the shares rebuild nothing)."""
        name = self.f.name
        specs = list(reference.values())
        current = state["current"]
        survivors = list(current["secagg"]["survivors"])
        shard = cut(specs, len(current["shards"]))[index]
        lo, hi = element_span(specs, shard)
        timeout = float(state["settings"]["leader_timeout_s"])
        deadline = time.monotonic() + timeout * 3 / 4
        total = np.zeros(hi - lo, dtype=np.uint64)
        if hi > lo:
            pulled = self._pull_span(state, round, survivors, specs, lo, hi, deadline)
            for who, part in zip(survivors, pulled, strict=True):
                if isinstance(part, str):
                    log.error("%s: shard %d of round %d: %s's masked update not had: %s",
                              name, index, round, who, part)  # fmt: skip
                    return None
                total = add_masked(total, part)
        found = self._mean_update(state, round, total, -1, deadline, lo, survivors)
        if found is None:
            return None
        mean, previous = found
        out = bytearray(shard.size)
        out[: len(shard.header)] = shard.header
        start = 0
        for piece in shard.pieces:
            spec = specs[piece.tensor]
            count = piece.stop - piece.first
            base = np.asarray(previous[spec.name]).reshape(-1)[piece.first : piece.stop]
            merged = rebuilt({spec.name: base}, mean[start : start + count],
                             [TensorSpec(spec.name, spec.dtype, (count,))])[spec.name]  # fmt: skip
            raw = flat_storage(merged, spec.dtype).tobytes()
            out[piece.offset : piece.offset + len(raw)] = raw
            start += count
        excluded = [{"name": n, "reason": "its masked update was not posted"}
                    for n in current["participants"] if n not in survivors]  # fmt: skip
        digest = hashlib.sha256(out).hexdigest()
        return MergedShard(index, out, digest, chunk_leaves(out), survivors, excluded)

    def _pull_span(self, state: State, round: int, names: list[str], specs: list[TensorSpec],
                   lo: int, hi: int, deadline: float) -> list[np.ndarray | str]:  # fmt: skip
        """Elements [lo, hi) of each of `names`' masked updates (uint64), or why not."""
        secure = state["current"]["secagg"]
        members = state["members"]
        size, header = masked_layout(specs)
        start, end = header + 8 * lo, header + 8 * hi
        first, stop = start // CHUNK_BYTES, -(-end // CHUNK_BYTES)

        def pull(who: str) -> np.ndarray | str:
            entry = secure["masked"].get(who)
            if entry is None or int(entry["size"]) != size:
                return f"no masked update of {size} bytes posted"
            try:
                if who == self.f.name:
                    found = self.f.store.find("masked", round, entry["digest"])
                    if found is None:
                        return "this site's masked update is gone"
                    part = memoryview(found.data)[start:end]
                else:
                    data = self.f.fetcher.fetch(
                        members[who]["endpoint"], "masked", round, entry["digest"],
                        max_bytes=size, size=size, root=entry["root"], chunks=(first, stop),
                        idle_s=MAX_IDLE_S, peer=who, deadline_s=deadline - time.monotonic(),
                    )  # fmt: skip
                    skip = start - first * CHUNK_BYTES
                    part = memoryview(data)[skip : skip + end - start]
            except (ExchangeError, KeyError) as exc:
                return str(exc)
            return np.frombuffer(part, dtype="<u8").astype(np.uint64)

        with ThreadPoolExecutor(max_workers=max(1, min(4, len(names)))) as pool:
            return list(pool.map(pull, names))


def masked_layout(specs: list[TensorSpec]) -> tuple[int, int]:
    """The encoded size of a masked update of a model with `specs`, and its header's."""
    count = masked_size(specs)
    size = len(encode({MASKED_TENSOR: np.zeros(count, np.int64)}))
    return size, size - 8 * count


def element_span(specs: list[TensorSpec], shard: Shard) -> tuple[int, int]:
    """The elements [lo, hi) of a masked update (the model's tensors back to back, in
    `specs` order) that hold `shard`'s values."""
    prefix = [0]
    for spec in specs:
        prefix.append(prefix[-1] + int(spec.size))
    if not shard.pieces:
        return 0, 0
    first, last = shard.pieces[0], shard.pieces[-1]
    return prefix[first.tensor] + first.first, prefix[last.tensor] + last.stop


def masked_chunks(specs: list[TensorSpec], shard: Shard) -> tuple[int, int]:
    """The chunks [first, stop) of a masked update that hold `shard`'s part."""
    lo, hi = element_span(specs, shard)
    _, header = masked_layout(specs)
    return (header + 8 * lo) // CHUNK_BYTES, -(-(header + 8 * hi) // CHUNK_BYTES)
