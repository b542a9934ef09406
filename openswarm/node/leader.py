"""A round leader's work: pull every participant's snapshot, check it, merge, encode.

`Leader.run` returns the merged model's bytes and digest and who was used or left out (and
why); the peer publishes it and records it on the ledger. Nothing a participant sends can
make it fail: a snapshot that cannot be had, is the wrong size, or does not decode, fit or
stay finite is left out and named. Each check runs once: names, shapes and dtypes as a
snapshot arrives, finiteness inside the merge's own pass over the data (a snapshot it
finds NaN or infinity in is left out and the rest merged again). Snapshots are merged in
the ledger's ranking order, so an auditor (`Leader.recompute`) that pulls the same ones gets
the same bits (merges are deterministic, see openswarm.merge.sums).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from openswarm.codec import CodecError, check_finite, digest_encoded
from openswarm.codec.transport import Transport
from openswarm.merge import MergeInputError, NonFiniteInput, mean, merge
from openswarm.node.checks import Params, Structure, mismatch, structure
from openswarm.node.exchange import ExchangeClient, ExchangeError
from openswarm.node.settings import SwarmSettings

log = logging.getLogger("openswarm.peer")

MAX_IDLE_S = 10.0  # a snapshot download with no byte for this long has stalled
Timed = Callable[[str], contextlib.AbstractContextManager[None]]


@dataclass(frozen=True)
class Merged:
    """What leading one round produced."""

    data: bytes
    digest: str
    used: list[str]
    excluded: list[dict[str, str]]  # {"name", "reason"} of each participant left out


class Leader:
    """Gathers and merges the rounds this site leads; keeps `mean`'s output buffers."""

    def __init__(self, name: str, settings: SwarmSettings, fetcher: ExchangeClient,
                 timed: Timed) -> None:  # fmt: skip
        self.name = name
        self.settings = settings
        self.fetcher = fetcher
        self.timed = timed
        self._out: Params = {}
        self._out_shape: list[Any] = []
        self.transport = Transport()  # how models travel (the contract's compression)
        # where a leader keeps the snapshots it pulled, for its auditors: (round, digest, data)
        self.mirror: Callable[[int, str, bytes], None] | None = None

    def run(self, view: Mapping[str, Any], round: int, own_data: bytes,
            reference: Structure | None, cap: int) -> Merged:  # fmt: skip
        """Lead `round` with this site's snapshot `own_data`; `reference` is the swarm's
        current model (what every snapshot must look like), `cap` the largest download.
        In the contract's first round the leader's own model is handed out unmerged.
        MergeInputError if nothing could be merged."""
        own = self.transport.unpack(own_data, reference)
        if view["latest_merged"] is None:  # the initial sync: everyone adopts the leader's
            try:
                check_finite(own)
            except CodecError as exc:
                raise MergeInputError(
                    f"this site's own model cannot start the swarm: {exc}"
                ) from None
            return Merged(own_data, digest_encoded(own_data), [self.name], [])
        with self.timed("transfer"):
            model = reference or structure(own)
            names = list(view["current"]["ranking"])
            sets, weights, used, excluded = self._gather(view, round, names, own_data, own,
                                                         model, cap)  # fmt: skip
        with self.timed("merge"):
            merged_params = self._merge_finite(round, sets, weights, used, excluded)
        with self.timed("encode"):
            data = self.transport.pack(merged_params)
            digest = digest_encoded(data)
        return Merged(data, digest, used, excluded)

    def recompute(self, view: Mapping[str, Any], round: int, own_data: bytes,
                  reference: Structure | None, cap: int) -> Merged:  # fmt: skip
        """As an auditor of `round`: the merge awaiting audit recomputed from the same
        snapshots (every participant but those its leader left out) in the same order.
        MergeInputError, naming why, if one of them cannot be had, does not fit, or holds
        NaN or infinity: then the leader's merge cannot be what it claims."""
        audit = view["current"]["audit"]
        left_out = {entry["name"] for entry in audit["excluded"]}
        names = [n for n in view["current"]["ranking"] if n not in left_out]
        own = self.transport.unpack(own_data, reference)
        with self.timed("transfer"):
            model = reference or structure(own)
            sets, weights, used, excluded = self._gather(view, round, names, own_data, own,
                                                         model, cap, audit["leader"])  # fmt: skip
        if excluded:
            raise MergeInputError(f"snapshot of {excluded[0]['name']}: {excluded[0]['reason']}")
        with self.timed("merge"):
            try:
                params = self._merge(sets, weights)
            except NonFiniteInput as exc:
                raise MergeInputError(f"snapshot of {used[exc.peer]}: tensor {exc.tensor!r} "
                                      "contains NaN or infinity") from None  # fmt: skip
        with self.timed("encode"):
            data = self.transport.pack(params)
        return Merged(data, digest_encoded(data), used, [])

    def _merge_finite(self, round: int, sets: list[Params], weights: list[float],
                      used: list[str], excluded: list[dict[str, str]]) -> Params:  # fmt: skip
        """Merge; a snapshot the merge finds NaN or infinity in is moved from `used` to
        `excluded` and the others merged again."""
        while True:
            try:
                return self._merge(sets, weights)
            except NonFiniteInput as exc:
                name = used.pop(exc.peer)
                del sets[exc.peer], weights[exc.peer]
                reason = f"tensor {exc.tensor!r} contains NaN or infinity"
                log.warning("%s: leaving %s out of round %d: %s", self.name, name, round, reason)
                excluded.append({"name": name, "reason": reason})
                if not sets:
                    raise MergeInputError("no snapshot left to merge") from exc
                if not any(weights):
                    weights[:] = [1.0] * len(sets)

    def _merge(self, sets: list[Params], weights: list[float]) -> Params:
        """Merge with the contract's method; `mean` reuses its output arrays across rounds
        (they are encoded and published right after, so nothing else holds them)."""
        if self.settings.merge_method == "mean" and not self.settings.merge_options:
            shape = [(n, v.shape, v.dtype) for n, v in sets[0].items()]
            if self._out_shape != shape:
                self._out = {n: np.empty(v.shape, v.dtype) for n, v in sets[0].items()}
                self._out_shape = shape
            return mean(sets, weights, out=self._out)
        return merge(sets, weights, method=self.settings.merge_method,
                     **dict(self.settings.merge_options))  # fmt: skip

    def _gather(
        self, view: Mapping[str, Any], round: int, names: list[str], own_data: bytes,
        own: Params, reference: Structure, cap: int, mirror_from: str | None = None,
    ) -> tuple[list[Params], list[float], list[str], list[dict[str, str]]]:  # fmt: skip
        """Pull and check the snapshots of `names` (participants, in this order); refuse
        the ones that don't fit. An auditor tries the round's leader (`mirror_from`) for a
        snapshot its owner does not hand over; a leader of an audited round keeps what it
        pulled for them (`mirror`)."""
        current = view["current"]
        # Sites of one model encode to the same size, so the size on the ledger must be ours
        # (a cap either way); the whole gather ends well inside the leader timeout.
        expected = len(own_data) if mismatch(reference, own) is None else None
        timeout = float(view["settings"]["leader_timeout_s"])
        deadline = time.monotonic() + timeout / 2

        def pull(name: str) -> Params | str:
            entry = current["ready"][name]
            member = view["members"].get(name)
            try:
                if name == self.name:
                    params = own
                elif member is None:
                    return "not a member"
                elif entry["size"] != (expected or entry["size"]) or entry["size"] > cap:
                    return (f"announced a snapshot of {entry['size']} bytes, but the model's "
                            f"names, shapes and dtypes encode to {len(own_data)}")  # fmt: skip
                else:
                    data = fetch(name, member, entry)
                    params = self.transport.unpack(data, reference)
            except (ExchangeError, CodecError) as exc:
                return str(exc)
            return mismatch(reference, params) or params

        def fetch(name: str, member: Mapping[str, Any], entry: Mapping[str, Any]) -> bytes:
            size = int(entry["size"])
            options = dict(
                max_bytes=self.transport.wire_cap(size),
                idle_s=min(MAX_IDLE_S, timeout / 4),
                unwire=lambda data: self.transport.unwire(data, size),
            )
            sources = [(name, member["endpoint"], "local")]
            holder = view["members"].get(mirror_from or "")
            if mirror_from not in (None, name, self.name) and holder is not None:
                sources.append((mirror_from, holder["endpoint"], "mirror"))
            problems = []
            for peer, endpoint, kind in sources:
                try:
                    data = self.fetcher.fetch(
                        endpoint,
                        kind,
                        round,
                        entry["digest"],
                        peer=peer,
                        deadline_s=deadline - time.monotonic(),
                        **options,
                    )
                except ExchangeError as exc:
                    problems.append(str(exc))
                    continue
                if (
                    self.mirror is not None
                    and mirror_from is None
                    and view["settings"].get("audit")
                ):  # a leader of an audited round
                    self.mirror(round, entry["digest"], data)
                return data
            raise ExchangeError("; ".join(problems))

        with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
            pulled = dict(zip(names, pool.map(pull, names), strict=True))
        sets, weights, used, excluded = [], [], [], []
        for name in names:
            got = pulled[name]
            if isinstance(got, str):
                log.warning("%s: leaving %s out of round %d: %s", self.name, name, round, got)
                excluded.append({"name": name, "reason": got[:500]})
                continue
            sets.append(got)
            weights.append(float(current["ready"][name]["weight"]))
            used.append(name)
        if not any(weights):
            weights = [1.0] * len(sets)
        return sets, weights, used, excluded
