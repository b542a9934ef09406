"""A round leader's work: pull every participant's snapshot, check it, merge, encode.

`Leader.run` returns the merged model's bytes and digest and who was used or left out (and
why); the peer publishes it and records it on the ledger. Nothing a participant sends can
make it fail: a snapshot that cannot be had, is the wrong size, or does not decode, fit or
stay finite is left out and named. Snapshots are merged in the ledger's ranking order, so
an auditor (`Leader.recompute`) that pulls the same ones gets the same bits (merges are
deterministic, see openswarm.merge.sums).

`mean` streams: snapshots arrive one after another, each checked chunk by chunk against the
root its site announced (openswarm.node.receive), then for names, shapes and dtypes, then
for NaN and infinity, and only then added to the running sum (openswarm.merge.running_mean),
which is written straight into the merged model's encoding. A snapshot that fails anywhere
is left out before it touches the sum, and the leader holds its own snapshot, the merge and
one incoming snapshot. The other methods need every input at once: they gather all
snapshots, then merge, or (`merge_memory="layer"`) keep them in temporary files and merge
layer by layer (openswarm.merge.layered).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from openswarm.codec import CodecError, check_finite, digest_encoded
from openswarm.codec.arrays import flat_storage, from_storage
from openswarm.codec.decode import EncodedFile
from openswarm.codec.encode import allocate_encoded
from openswarm.codec.finite import has_nonfinite
from openswarm.codec.tensors import TensorSpec
from openswarm.codec.transport import Transport
from openswarm.merge import MergeInputError, NonFiniteInput, merge
from openswarm.merge.layered import Loader, merge_layered
from openswarm.merge.running_mean import Float64Sum, RunningMean, weight_scale
from openswarm.merge.server_opt import merged_structure, step
from openswarm.node.checks import Params, Structure, mismatch, structure
from openswarm.node.exchange import Buffer, ExchangeClient, ExchangeError
from openswarm.node.memory import spilled
from openswarm.node.settings import SwarmSettings

log = logging.getLogger("openswarm.peer")

MAX_IDLE_S = 10.0  # a snapshot download with no byte for this long has stalled
Timed = Callable[[str], contextlib.AbstractContextManager[None]]


@dataclass(frozen=True)
class Merged:
    """What leading one round produced."""

    data: bytes | bytearray
    digest: str
    used: list[str]
    excluded: list[dict[str, str]]  # {"name", "reason"} of each participant left out


class Leader:
    """Gathers and merges the rounds this site leads (and recomputes the ones it audits)."""

    def __init__(self, name: str, settings: SwarmSettings, fetcher: ExchangeClient,
                 timed: Timed) -> None:  # fmt: skip
        self.name = name
        self.settings = settings
        self.fetcher = fetcher
        self.timed = timed
        self.transport = Transport()  # how models travel (the contract's compression)
        # where a leader keeps the snapshots it pulled, for its auditors: (round, digest, data)
        self.mirror: Callable[[int, str, Buffer], None] | None = None
        # a server optimizer's previous merged model, with its state, from its ledger record
        # ({round, digest, size, …}): held here, or fetched and checked
        self.prior: Callable[[Mapping[str, Any]], Params] | None = None

    def run(self, view: Mapping[str, Any], round: int, own_data: bytes,
            reference: Structure | None, cap: int) -> Merged:  # fmt: skip
        """Lead `round` with this site's snapshot `own_data`; `reference` is the swarm's
        current model (what every snapshot must look like), `cap` the largest download.
        In the contract's first round the leader's own model is handed out unmerged.
        MergeInputError if nothing could be merged."""
        own = self.transport.unpack(own_data, reference, copy=False)
        if view["latest_merged"] is None:  # the initial sync: everyone adopts the leader's
            try:
                check_finite(own)
            except CodecError as exc:
                raise MergeInputError(
                    f"this site's own model cannot start the swarm: {exc}"
                ) from None
            # (a server optimizer's state starts at zero: this model carries none, so that
            # the contract can check it is the leader's snapshot)
            return Merged(own_data, digest_encoded(own_data), [self.name], [])
        pulls = _Pulls(self, view, round, own_data, own, reference or structure(own), cap)
        names = list(view["current"]["ranking"])
        if self._streams():
            return self._optimized(pulls, self._stream(pulls, names))
        if self.settings.merge_memory == "layer":
            return self._layer_by_layer(pulls, names)
        with self.timed("transfer"):
            sets, weights, used, excluded = self._gather(pulls, names)
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
        own = self.transport.unpack(own_data, reference, copy=False)
        pulls = _Pulls(self, view, round, own_data, own, reference or structure(own), cap,
                       audit["leader"])  # fmt: skip
        if self._streams() or self.settings.merge_memory == "layer":
            found = self._stream(pulls, names) if self._streams() else (
                self._layer_by_layer(pulls, names)
            )  # fmt: skip
            if found.excluded:
                first = found.excluded[0]
                raise MergeInputError(f"snapshot of {first['name']}: {first['reason']}")
            return self._optimized(pulls, found)
        with self.timed("transfer"):
            sets, weights, used, excluded = self._gather(pulls, names)
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

    def _streams(self) -> bool:
        """Whether the contract's merge can take snapshots one at a time (`mean`, and the
        server optimizers, which step from the mean)."""
        return self.settings.server_optimizer or (
            self.settings.merge_method == "mean" and not self.settings.merge_options
        )

    def _optimized(self, pulls: _Pulls, mean: Merged) -> Merged:
        """With a server optimizer, the round's merged model: the previous one (the
        contract's latest merged model, with the optimizer's state) stepped along the
        round's `mean` (openswarm.merge.server_opt); otherwise `mean` itself."""
        if not self.settings.server_optimizer:
            return mean
        if self.prior is None:
            raise MergeInputError("no way to find the previous merged model")
        record = pulls.view["latest_merged"]
        previous = self.prior(record)
        method = self.settings.merge_method
        with self.timed("merge"):
            averaged = self.transport.unpack(mean.data, pulls.reference, copy=False)
            params = step(method, self.settings.merge_options, previous, averaged,
                          pulls.reference, first=bool(record.get("first")))  # fmt: skip
            specs = list(merged_structure(method, pulls.reference).values())
            problem = _nonfinite(params, specs)
            if problem is not None:  # finite inputs, but the step overflowed
                raise MergeInputError(f"the {method} step overflowed: {problem}")
        with self.timed("encode"):
            data = self.transport.pack(params)
        return Merged(data, digest_encoded(data), mean.used, mean.excluded)

    def _stream(self, pulls: _Pulls, names: list[str]) -> Merged:
        """The weighted mean of `names`' snapshots, pulled one after another in ranking
        order, each added once it has arrived whole and checked (chunks, structure,
        finiteness); one that fails is left out before it touches the sum. Lossless, the
        mean is written straight into its encoding. The weights' scale comes from all of
        the round's participants, so the leader and its auditors add the very same terms."""
        ready = pulls.view["current"]["ready"]
        weights = {name: float(ready[name]["weight"]) for name in names}
        scale = weight_scale([float(ready[n]["weight"]) for n in pulls.view["current"]["ranking"]])
        specs = list(pulls.reference.values())
        if self.transport.lossy_mode:
            buffer, outputs = None, None
        else:
            buffer, outputs = allocate_encoded(specs)
        running = RunningMean(specs, scale, outputs)
        used: list[str] = []
        excluded: list[dict[str, str]] = []
        for name in names:  # one at a time: adding one takes a fraction of its transfer
            with self.timed("transfer"):
                got = pulls.pull(name)
            with self.timed("merge"):
                if not isinstance(got, str):
                    got = _nonfinite(got, specs) or got
                if isinstance(got, str):
                    self._leave_out(excluded, name, pulls.round, got)
                    continue
                running.add([flat_storage(got[s.name], s.dtype) for s in specs], weights[name])
                used.append(name)
            del got  # before the next one arrives
        if not used:
            raise MergeInputError("no snapshot left to merge")
        with self.timed("merge"):
            overflowed = running.finish()
        if overflowed:
            self._redo_in_float64(pulls, used, weights, scale, running)
        with self.timed("encode"):
            if buffer is None:
                data: bytes | bytearray = self.transport.pack(
                    {s.name: from_storage(o, s.shape, s.dtype, as_torch=False) for s, o in
                     zip(specs, running.outputs, strict=True)}
                )  # fmt: skip
            else:
                data = buffer
            digest = digest_encoded(data)
        return Merged(data, digest, used, excluded)

    def _redo_in_float64(self, pulls: _Pulls, used: list[str], weights: Mapping[str, float],
                         scale: float, running: RunningMean) -> None:  # fmt: skip
        """The values whose float32 sum overflowed, summed again in float64 from the same
        snapshots pulled a second time, one at a time (as `mean` does with whole sets)."""
        overflowed = list(running.overflows)
        log.warning("%s: the mean of round %d overflowed in float32; summing %d tensor(s) "
                    "again in float64", self.name, pulls.round, len(overflowed))  # fmt: skip
        specs = list(pulls.reference.values())
        again = Float64Sum(specs, overflowed, scale)
        pulls.pull_again()
        for name in used:
            with self.timed("transfer"):
                got = pulls.pull(name)
            if isinstance(got, str):  # it was had a moment ago: its site is failing the round
                raise MergeInputError(f"snapshot of {name} could not be had again: {got}")
            with self.timed("merge"):
                again.add([flat_storage(got[s.name], s.dtype) for s in specs], weights[name])
            del got
        with self.timed("merge"):
            again.finish(running.outputs, running.overflows)

    def _layer_by_layer(self, pulls: _Pulls, names: list[str]) -> Merged:
        """The contract's merge of `names`' snapshots with each kept in a temporary file as
        it arrives (checked chunk by chunk, then for structure and finiteness, one layer
        at a time) and merged layer by layer (openswarm.merge.layered): the same bits as
        holding them all, in about K times the largest layer."""
        try:
            return self._layered(pulls, names)
        except (OSError, CodecError) as exc:  # the spill folder, or a file read back
            raise MergeInputError(f"merging layer by layer failed: {exc}") from None

    def _layered(self, pulls: _Pulls, names: list[str]) -> Merged:
        spill = self.settings.spill_dir
        with tempfile.TemporaryDirectory(prefix="openswarm-merge-", dir=spill) as folder:
            files: list[EncodedFile] = []
            try:
                # two downloads at a time: each holds gRPC's buffers of it, up to megabytes
                with self.timed("transfer"), ThreadPoolExecutor(2) as pool:
                    pulled = list(pool.map(
                        lambda name: pulls.pull_to_file(name, Path(folder), files), names
                    ))  # fmt: skip
                loaders, weights, used, excluded = self._sort_out(pulls, names, pulled)
                if not used:
                    raise MergeInputError("no snapshot left to merge")
                with self.timed("merge"):
                    params = merge_layered(list(pulls.reference.values()), loaders, weights,
                                           self.settings.merge_method,
                                           dict(self.settings.merge_options))  # fmt: skip
            finally:
                for encoded in files:
                    encoded.close()
        with self.timed("encode"):
            data = self.transport.pack(params)
            digest = digest_encoded(data)
        return Merged(data, digest, used, excluded)

    def _leave_out(self, excluded: list[dict[str, str]], name: str, round: int,
                   reason: str) -> None:  # fmt: skip
        log.warning("%s: leaving %s out of round %d: %s", self.name, name, round, reason)
        excluded.append({"name": name, "reason": reason[:500]})

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
                self._leave_out(excluded, name, round,
                                f"tensor {exc.tensor!r} contains NaN or infinity")  # fmt: skip
                if not sets:
                    raise MergeInputError("no snapshot left to merge") from exc
                if not any(weights):
                    weights[:] = [1.0] * len(sets)

    def _merge(self, sets: list[Params], weights: list[float]) -> Params:
        """Merge the whole sets with the contract's method."""
        return merge(sets, weights, method=self.settings.merge_method,
                     **dict(self.settings.merge_options))  # fmt: skip

    def _gather(
        self, pulls: _Pulls, names: list[str]
    ) -> tuple[list[Params], list[float], list[str], list[dict[str, str]]]:
        """Pull and check the snapshots of `names` (participants, in this order), all at
        once; refuse the ones that don't fit."""
        with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
            pulled = list(pool.map(pulls.pull, names))
        return self._sort_out(pulls, names, pulled)

    def _sort_out(self, pulls: _Pulls, names: list[str], pulled: list[Any],
                  ) -> tuple[list[Any], list[float], list[str], list[dict[str, str]]]:  # fmt: skip
        """What was pulled for `names` (a reason, for one that could not be had): the kept
        ones, their weights (all 1 if none has any), their names, and who was left out."""
        ready = pulls.view["current"]["ready"]
        kept, weights, used, excluded = [], [], [], []
        for name, got in zip(names, pulled, strict=True):
            if isinstance(got, str):
                self._leave_out(excluded, name, pulls.round, got)
                continue
            kept.append(got)
            weights.append(float(ready[name]["weight"]))
            used.append(name)
        if not any(weights):
            weights = [1.0] * len(kept)
        return kept, weights, used, excluded


class _Pulls:
    """Pulling one round's snapshots and checking each fits. An auditor tries the round's
    leader (`mirror_from`) for a snapshot its owner does not hand over; a leader of an
    audited round keeps what it pulled for them (`Leader.mirror`)."""

    def __init__(self, leader: Leader, view: Mapping[str, Any], round: int, own_data: bytes,
                 own: Params, reference: Structure, cap: int,
                 mirror_from: str | None = None) -> None:  # fmt: skip
        self.leader, self.view, self.round = leader, view, round
        self.own_data, self.own, self.reference, self.cap = own_data, own, reference, cap
        self.mirror_from = mirror_from
        # Sites of one model encode to the same size, so the size on the ledger must be ours
        # (a cap either way); the whole gather ends well inside the leader timeout.
        self.expected = len(own_data) if mismatch(reference, own) is None else None
        self.timeout = float(view["settings"]["leader_timeout_s"])
        self.started = time.monotonic()
        self.deadline = self.started + self.timeout / 2  # the gather ends well inside it
        self.again = False  # pulling a second time (nothing is mirrored again)

    def pull_again(self) -> None:
        """For a second pass over the same snapshots: until three quarters of the leader
        timeout, so the merge still ends before the participants vote the leader out."""
        self.again = True
        self.deadline = self.started + self.timeout * 3 / 4

    def pull(self, name: str) -> Params | str:
        """`name`'s snapshot, checked and decoded (views of the bytes that came where the
        transport allows), or why it cannot be had."""
        entry = self.view["current"]["ready"][name]
        member = self.view["members"].get(name)
        transport = self.leader.transport
        try:
            if name == self.leader.name:
                params = self.own
            elif member is None:
                return "not a member"
            elif (refusal := self._size_refusal(entry)) is not None:
                return refusal
            else:
                data = self._fetch(name, member, entry)
                params = transport.unpack(data, self.reference, copy=False)
        except (ExchangeError, CodecError) as exc:
            return str(exc)
        return mismatch(self.reference, params) or params

    def pull_to_file(self, name: str, folder: Path, files: list[EncodedFile]) -> Loader | str:
        """`name`'s snapshot kept in a file of `folder` (opened: added to `files`), checked
        to fit and to be finite; the loader of its tensors, or why it cannot be had."""
        if name == self.leader.name:
            specs = list(self.reference.values())
            own = self.own
            return _nonfinite(own, specs) or (
                lambda t: flat_storage(own[specs[t].name], specs[t].dtype)
            )
        entry = self.view["current"]["ready"][name]
        member = self.view["members"].get(name)
        if member is None:
            return "not a member"
        refusal = self._size_refusal(entry)
        if refusal is not None:
            return refusal
        path = folder / f"{name}.snapshot"
        try:
            with open(path, "w+b") as handle:
                self._fetch(name, member, entry, handle)
            encoded = EncodedFile(path)
            files.append(encoded)
            load = self.leader.transport.tensor_loader(encoded, self.reference)
            for t, spec in enumerate(self.reference.values()):
                if has_nonfinite(load(t), spec.dtype):
                    return f"tensor {spec.name!r} contains NaN or infinity"
            if self._mirrors():  # the auditors may ask for it: served from the file
                with open(path, "rb") as handle:
                    mapped = memoryview(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
                self._mirror(name, entry, mapped)
        except (ExchangeError, CodecError, OSError) as exc:
            return str(exc)
        return load

    def _size_refusal(self, entry: Mapping[str, Any]) -> str | None:
        if entry["size"] != (self.expected or entry["size"]) or entry["size"] > self.cap:
            return (f"announced a snapshot of {entry['size']} bytes, but the model's "
                    f"names, shapes and dtypes encode to {len(self.own_data)}")  # fmt: skip
        return None

    def _mirror(self, name: str, entry: Mapping[str, Any], data: Buffer) -> None:
        assert self.leader.mirror is not None
        self.leader.mirror(self.round, mirror_key(name, entry), data)

    def _mirrors(self) -> bool:
        """Whether this is the leader of an audited round (it keeps what it pulled)."""
        return (self.leader.mirror is not None and self.mirror_from is None and not self.again
                and bool(self.view["settings"].get("audit")))  # fmt: skip

    def _fetch(self, name: str, member: Mapping[str, Any], entry: Mapping[str, Any],
               into: BinaryIO | None = None) -> Buffer:  # fmt: skip
        size = int(entry["size"])
        options = dict(
            max_bytes=size,
            size=size,
            root=entry.get("root"),
            zstd=self.leader.transport.zstd,
            idle_s=min(MAX_IDLE_S, self.timeout / 4),
            into=into,
        )
        sources = [(name, member["endpoint"], "local", None)]
        holder = self.view["members"].get(self.mirror_from or "")
        if self.mirror_from not in (None, name, self.leader.name) and holder is not None:
            sources.append(
                (self.mirror_from, holder["endpoint"], "mirror", mirror_key(name, entry))
            )
        problems = []
        for peer, endpoint, kind, key in sources:
            try:
                data = self.leader.fetcher.fetch(
                    endpoint,
                    kind,
                    self.round,
                    entry["digest"],
                    key=key,
                    peer=peer,
                    deadline_s=self.deadline - time.monotonic(),
                    **options,
                )
            except ExchangeError as exc:
                problems.append(str(exc))
                if into is not None:  # start the file over for the next source
                    into.seek(0)
                    into.truncate()
                continue
            if into is None and self._mirrors():  # kept on disk, not in memory, until served
                try:
                    self._mirror(name, entry, spilled(data, self.leader.settings.spill_dir))
                except OSError as exc:  # the auditors then ask the site itself
                    log.warning("%s: cannot keep %s's snapshot for the auditors: %s",
                                self.leader.name, name, exc)  # fmt: skip
            return data
        raise ExchangeError("; ".join(problems))


def mirror_key(name: str, entry: Mapping[str, Any]) -> str:
    """What a leader serves `name`'s snapshot under, as a mirror for its auditors: its ready
    entry's root (or digest) and the site's name, so no site's announcement can take
    another's place there."""
    pinned = str(entry.get("root") or entry["digest"])
    return hashlib.sha256(f"openswarm-mirror\0{name}\0{pinned}".encode()).hexdigest()


def _nonfinite(params: Params, specs: list[TensorSpec]) -> str | None:
    """Why `params` cannot be merged if a float tensor holds NaN or infinity."""
    for spec in specs:
        if has_nonfinite(flat_storage(params[spec.name], spec.dtype), spec.dtype):
            return f"tensor {spec.name!r} contains NaN or infinity"
    return None
