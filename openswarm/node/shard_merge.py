"""A shard owner's work in a sharded round: merge one contiguous part of the model.

The owner pulls just the chunks of every participant's snapshot that hold its shard
(openswarm.codec.shards), each checked against the root the site announced with `ready`,
checks the shard's header bytes are the model's (so names, shapes and dtypes agree), that
booleans are 0 or 1 and floats finite, and merges the pieces in the ledger's ranking order
with the very arithmetic a leader applies to whole snapshots (`mean`: the running sum with
the round's weight scale; the other coordinate-wise methods: the same merge on the pieces),
so the assembled shards are bit for bit the leader topology's merge. A participant that
fails anywhere is left out; the contract then has the other shards merged again without it.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from openswarm.codec.arrays import flat_storage, from_storage
from openswarm.codec.chunks import CHUNK_BYTES, chunk_root, leaves, root_of
from openswarm.codec.finite import has_nonfinite
from openswarm.codec.shards import Shard, chunk_span, cut
from openswarm.codec.tensors import TensorSpec
from openswarm.merge import MergeInputError, merge
from openswarm.merge.running_mean import Float64Sum, RunningMean, weight_scale
from openswarm.node.exchange import Buffer, ExchangeClient, ExchangeError, SnapshotStore
from openswarm.node.leader import MAX_IDLE_S, Timed
from openswarm.node.settings import SwarmSettings

log = logging.getLogger("openswarm.peer")

PARALLEL_PULLS = 4  # pieces pulled at once (each a fraction of a model)


class ShardsUnavailable(ExchangeError):
    """Some posted shards could not be had from their owners, or are not what their part
    of the model can be (`indices`)."""

    def __init__(self, message: str, indices: list[int]) -> None:
        super().__init__(message)
        self.indices = indices


@dataclass(frozen=True)
class MergedShard:
    """One merged shard: its bytes and what the contract records of it."""

    index: int
    data: bytearray
    digest: str  # sha256 of the bytes
    leaves: bytes
    used: list[str]
    excluded: list[dict[str, str]]  # {"name", "reason"}, those the contract named first

    @property
    def root(self) -> str:
        return root_of(self.leaves)


class ShardMerger:
    """Merges the shards this site owns."""

    def __init__(self, name: str, settings: SwarmSettings, fetcher: ExchangeClient,
                 timed: Timed) -> None:  # fmt: skip
        self.name, self.settings, self.fetcher, self.timed = name, settings, fetcher, timed

    def run(self, view: Mapping[str, Any], round: int, index: int, own_data: Buffer,
            specs: Sequence[TensorSpec]) -> MergedShard:  # fmt: skip
        """Merge shard `index` of `round` (`own_data`: this site's snapshot; `specs`: the
        swarm's model). MergeInputError if no participant is left to merge."""
        current = view["current"]
        shard = cut(specs, len(current["shards"]))[index]
        total = shard_total(specs)
        excluded = [dict(e) for e in current["shard_excluded"]]
        names = [n for n in current["ranking"] if n not in {e["name"] for e in excluded}]
        pull = _Pieces(self, view, round, shard, specs, total, own_data)
        ready = current["ready"]
        weights = {name: float(ready[name]["weight"]) for name in names}
        out = bytearray(shard.size)
        out[: len(shard.header)] = shard.header
        parts = [_slice_spec(specs, p.tensor, p.stop - p.first) for p in shard.pieces]
        outputs = [np.frombuffer(out, s.dtype.storage, s.size, p.offset)
                   for s, p in zip(parts, shard.pieces, strict=True)]  # fmt: skip
        if self.settings.merge_method == "mean" and not self.settings.merge_options:
            scale = weight_scale([float(ready[n]["weight"]) for n in current["ranking"]])
            used = self._mean(pull, names, weights, scale, parts, outputs, excluded)
        else:
            used = self._other(pull, names, weights, parts, outputs, excluded)
        digest = hashlib.sha256(out).hexdigest()
        return MergedShard(index, out, digest, leaves(out), used, excluded)

    def _mean(self, pull: _Pieces, names: list[str], weights: Mapping[str, float],
              scale: float, parts: list[TensorSpec], outputs: list[np.ndarray],
              excluded: list[dict[str, str]]) -> list[str]:  # fmt: skip
        running = RunningMean(parts, scale, outputs)
        used = []
        with ThreadPoolExecutor(PARALLEL_PULLS) as pool:
            for name, got in zip(names, self._pulled(pool, pull, names), strict=True):
                if isinstance(got, str):
                    self._leave_out(excluded, name, pull.round, got)
                    continue
                with self.timed("merge"):
                    running.add(got, weights[name])
                used.append(name)
        if not used:
            raise MergeInputError("no snapshot left to merge")
        with self.timed("merge"):
            overflowed = running.finish()
        if overflowed:  # summed again in float64, as a leader does (node/leader.py)
            again = Float64Sum(parts, overflowed, scale)
            for name in used:
                got = pull.get(name)
                if isinstance(got, str):
                    raise MergeInputError(f"snapshot of {name} could not be had again: {got}")
                again.add(got, weights[name])
            again.finish(outputs, running.overflows)
        return used

    def _other(self, pull: _Pieces, names: list[str], weights: Mapping[str, float],
               parts: list[TensorSpec], outputs: list[np.ndarray],
               excluded: list[dict[str, str]]) -> list[str]:  # fmt: skip
        sets, kept, used = [], [], []
        with ThreadPoolExecutor(PARALLEL_PULLS) as pool:
            for name, got in zip(names, self._pulled(pool, pull, names), strict=True):
                if isinstance(got, str):
                    self._leave_out(excluded, name, pull.round, got)
                    continue
                sets.append({s.name: from_storage(f, s.shape, s.dtype, as_torch=False)
                             for s, f in zip(parts, got, strict=True)})  # fmt: skip
                kept.append(weights[name])
                used.append(name)
        if not used:
            raise MergeInputError("no snapshot left to merge")
        if not any(kept):
            kept = [1.0] * len(sets)
        with self.timed("merge"):
            merged = merge(sets, kept, method=self.settings.merge_method,
                           **dict(self.settings.merge_options))  # fmt: skip
            for spec, output in zip(parts, outputs, strict=True):
                output[:] = flat_storage(merged[spec.name], spec.dtype)
        return used

    def _pulled(self, pool: ThreadPoolExecutor, pull: _Pieces,
                names: list[str]) -> Iterator[list[np.ndarray] | str]:  # fmt: skip
        """Each of `names`' pieces in order, at most PARALLEL_PULLS pulled ahead (so at most
        that many pieces are held); the wait is "transfer"."""
        ahead: deque[Future[list[np.ndarray] | str]] = deque()
        queued = iter(names)
        for name in itertools.islice(queued, PARALLEL_PULLS):
            ahead.append(pool.submit(pull.get, name))
        while ahead:
            with self.timed("transfer"):
                got = ahead.popleft().result()
            for name in itertools.islice(queued, 1):
                ahead.append(pool.submit(pull.get, name))
            yield got

    def _leave_out(self, excluded: list[dict[str, str]], name: str, round: int,
                   reason: str) -> None:  # fmt: skip
        log.warning("%s: leaving %s out of round %d: %s", self.name, name, round, reason)
        excluded.append({"name": name, "reason": reason[:500]})


class _Pieces:
    """Pulling one shard's pieces of each participant's snapshot, checked."""

    def __init__(self, merger: ShardMerger, view: Mapping[str, Any], round: int, shard: Shard,
                 specs: Sequence[TensorSpec], total: int, own_data: Buffer) -> None:  # fmt: skip
        self.merger, self.view, self.round, self.shard = merger, view, round, shard
        self.specs, self.total, self.own_data = specs, total, own_data
        self.timeout = float(view["settings"]["leader_timeout_s"])
        self.first, self.stop = chunk_span(shard)

    def get(self, name: str) -> list[np.ndarray] | str:
        """The shard's pieces of `name`'s snapshot (flat raw arrays), or why not."""
        try:
            data = self._bytes(name)
        except ExchangeError as exc:
            return str(exc)
        return self._checked(data)

    def _bytes(self, name: str) -> Buffer:
        shard = self.shard
        entry = self.view["current"]["ready"][name]
        if name == self.merger.name:
            if len(self.own_data) != self.total:
                raise ExchangeError("this site's own snapshot does not encode the swarm's model")
            return memoryview(self.own_data)[shard.start : shard.end]
        member = self.view["members"].get(name)
        if member is None:
            raise ExchangeError("not a member")
        if entry["size"] != self.total:
            raise ExchangeError(f"announced a snapshot of {entry['size']} bytes, but the model's "
                                f"names, shapes and dtypes encode to {self.total}")  # fmt: skip
        if not entry.get("root"):
            raise ExchangeError("announced no chunk root, so no part of its snapshot can be "
                                "checked on its own")  # fmt: skip
        if shard.size == 0:
            return b""
        data = self.merger.fetcher.fetch(
            member["endpoint"], "local", self.round, entry["digest"], max_bytes=self.total,
            size=self.total, root=entry["root"], chunks=(self.first, self.stop), peer=name,
            idle_s=min(MAX_IDLE_S, self.timeout / 4), deadline_s=self.timeout / 2,
        )  # fmt: skip
        skip = shard.start - self.first * CHUNK_BYTES
        return memoryview(data)[skip : skip + shard.size]

    def _checked(self, data: Buffer) -> list[np.ndarray] | str:
        return checked_pieces(data, self.shard, self.specs)


def checked_pieces(data: Buffer, shard: Shard,
                   specs: Sequence[TensorSpec]) -> list[np.ndarray] | str:  # fmt: skip
    """The pieces of `shard` in `data` (its bytes; flat raw arrays, views), or why they
    cannot be part of the swarm's model: other header bytes (names, shapes, dtypes),
    booleans other than 0 and 1, NaN or infinity."""
    view = memoryview(data).cast("B")
    if bytes(view[: len(shard.header)]) != shard.header:
        return "its tensor names, shapes or dtypes differ from the swarm's model's"
    pieces = []
    for piece in shard.pieces:
        spec = specs[piece.tensor]
        flat = np.frombuffer(view, spec.dtype.storage, piece.stop - piece.first, piece.offset)
        if spec.dtype.name == "bool" and flat.size and flat.view(np.uint8).max() > 1:
            return f"tensor {spec.name!r}: BOOL data holds bytes other than 0 and 1"
        if has_nonfinite(flat, spec.dtype):
            return f"tensor {spec.name!r} contains NaN or infinity"
        pieces.append(flat)
    return pieces


class ShardAssembly:
    """Joining a sharded round's merged shards into the merged model."""

    def __init__(self, name: str, store: SnapshotStore, fetcher: ExchangeClient) -> None:
        self.name, self.store, self.fetcher = name, store, fetcher

    def join(self, view: Mapping[str, Any], round: int, shards: Sequence[Mapping[str, Any]],
             specs: Sequence[TensorSpec], zstd: bool) -> bytearray:  # fmt: skip
        """The model the posted `shards` of `round` make, each fetched from its owner
        (several at once), checked chunk by chunk against its root on the ledger, then for
        its header bytes and values; ShardsUnavailable naming those that cannot be had or
        cannot be their part of the model."""
        layout = cut(specs, len(shards))
        out = bytearray(layout[-1].end)
        window = memoryview(out)
        timeout = float(view["settings"]["leader_timeout_s"])

        def fetch(index: int) -> None:
            part, posted = layout[index], shards[index]
            size, owner = int(posted["size"]), posted["owner"]
            if size != part.size:
                raise ExchangeError(f"shard {index} of round {round} by {owner} is {size} "
                                    f"bytes; that part of the model is {part.size}")  # fmt: skip
            if size == 0:
                return
            if owner == self.name:
                found = self.store.find("shard", round, posted["digest"])
                if found is None:
                    raise ExchangeError(f"this site no longer holds its shard {index}")
                out[part.start : part.end] = found.data
            else:
                fetch_from(index, owner, size, posted)
            problem = checked_pieces(window[part.start : part.end], part, specs)
            if isinstance(problem, str):
                raise ExchangeError(f"shard {index} of round {round} by {owner}: {problem}")

        def fetch_from(index: int, owner: str, size: int, posted: Mapping[str, Any]) -> None:
            part = layout[index]
            member = view["members"].get(owner)
            if member is None:
                raise ExchangeError(f"the owner {owner} of shard {index} is not a member")
            self.fetcher.fetch(
                member["endpoint"], "shard", round, posted["digest"], max_bytes=size, size=size,
                root=posted["root"], zstd=zstd, peer=owner, deadline_s=timeout,
                idle_s=min(MAX_IDLE_S, timeout / 4), target=window[part.start : part.end],
            )  # fmt: skip

        def checked(index: int) -> None:
            try:
                fetch(index)
            except (ValueError, TypeError, KeyError) as exc:  # a malformed shard record
                raise ExchangeError(f"shard {index} of round {round}: {exc}") from None

        with ThreadPoolExecutor(PARALLEL_PULLS) as pool:
            futures = [pool.submit(checked, index) for index in range(len(shards))]
        failed = {i: f.exception() for i, f in enumerate(futures) if f.exception() is not None}
        for error in failed.values():
            if not isinstance(error, ExchangeError):
                raise error
        if failed:
            raise ShardsUnavailable("; ".join(str(e) for e in failed.values()), list(failed))
        return out


def shards_mismatch(data: Buffer, specs: Sequence[TensorSpec],
                    shards: Sequence[Mapping[str, Any]]) -> str | None:  # fmt: skip
    """Why `data` is not the model that the posted `shards` (their sizes and chunk roots
    on the ledger) make, or None."""
    layout = cut(specs, len(shards))
    if len(data) != layout[-1].end:
        return f"it is {len(data)} bytes; the model is {layout[-1].end}"
    view = memoryview(data).cast("B")
    for index, (part, posted) in enumerate(zip(layout, shards, strict=True)):
        if posted["size"] != part.size or (
            chunk_root(view[part.start : part.end]) != posted["root"]
        ):
            return f"its part {index} is not the shard {posted['owner']} merged"
    return None


def differing_shards(data: Buffer, specs: Sequence[TensorSpec],
                     shards: Sequence[Mapping[str, Any]]) -> list[int]:  # fmt: skip
    """The posted `shards` whose chunk roots are not those of their part of `data` (an
    auditor's recomputation of the merge: the shards merged wrongly)."""
    layout = cut(specs, len(shards))
    view = memoryview(data).cast("B")
    if len(view) != layout[-1].end:
        return []
    return [index for index, (part, posted) in enumerate(zip(layout, shards, strict=True))
            if posted["size"] != part.size
            or chunk_root(view[part.start : part.end]) != posted["root"]]  # fmt: skip


def shard_total(specs: Sequence[TensorSpec]) -> int:
    """The encoded size of a model of tensors `specs`."""
    last = cut(specs, 1)[0]
    return last.end


def _slice_spec(specs: Sequence[TensorSpec], tensor: int, count: int) -> TensorSpec:
    spec = specs[tensor]
    return TensorSpec(spec.name, spec.dtype, (count,))


__all__ = [
    "MergedShard", "ShardAssembly", "ShardMerger", "ShardsUnavailable", "checked_pieces",
    "differing_shards", "shard_total", "shards_mismatch",
]  # fmt: skip
