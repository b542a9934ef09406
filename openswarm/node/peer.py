"""The round protocol of one peer, as the ledger's training contract drives it.

A round: every participant publishes its snapshot and says `ready`; once `min_peers` are
ready (and a bounded window for the rest has passed) a participant seals the round; the
contract's leader pulls every snapshot, checks each against the digest on the ledger, merges
and publishes the result; everyone fetches it, checks its digest and loads it. A leader that
stays silent past `leader_timeout_s` is replaced by the next in the contract's ranking.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from openswarm.codec import CodecError, check_finite, decode, digest_encoded, encode
from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.merge import MergeInputError, mean, merge
from openswarm.node.exchange import ExchangeClient, ExchangeError, ExchangeServer
from openswarm.node.settings import NetworkConfig, SwarmSettings
from openswarm.pki import Identity, PkiError

Params = dict[str, Any]
log = logging.getLogger("openswarm.peer")

_WAIT_LOG_EVERY_S = 10.0
_GONE_AFTER_FAILED_PINGS = 3
_FINAL_HANDOVER_S = 120.0
_RECENT_ROUNDS = 8  # rounds of history a peer polls (a round it waits on is always recent)


class SwarmError(RuntimeError):
    """The swarm cannot go on for this peer; the message says why and what to do."""


class MergedModelLost(SwarmError):
    """Every site holding a merged model is gone, so it cannot be fetched."""


@dataclass(frozen=True)
class RoundResult:
    """What one round gave this peer: the merged parameters, or None if aborted."""

    round: int
    params: Params | None
    digest: str | None
    leader: str | None
    participants: tuple[str, ...]
    sync_interval: int | None = None  # adaptive sync: batches until the next round
    timings: dict[str, float] = field(default_factory=dict)  # seconds by phase, see sync()


@dataclass
class _Local:
    round: int
    data: bytes
    digest: str


class SwarmPeer:
    """One site's presence in the swarm: registration, snapshot server and rounds."""

    def __init__(self, settings: SwarmSettings, network: NetworkConfig) -> None:
        self.settings = settings
        try:
            self.identity = Identity.load(network.identity)
        except PkiError as exc:
            raise SwarmError(f"identity folder {network.identity}: {exc}") from exc
        if self.identity.role != "peer":
            raise SwarmError(
                f"identity {self.identity.name!r} has role {self.identity.role!r}; a training "
                "site needs one issued with --role peer"
            )
        self.name = self.identity.name
        self.contract = settings.contract
        self.ledger = LedgerClient(list(network.ledger), self.identity)
        self.server = ExchangeServer(self.identity, network.listen)
        # What other sites dial: the advertised host (its certificate must name it, see
        # `openswarm pki issue --host`), else the listening one.
        self.endpoint = f"{network.advertise or self.server.host}:{self.server.port}"
        self.fetcher = ExchangeClient(self.identity)
        self.finished = False
        self.rounds_joined = 0
        self.current_digest: str | None = None
        self._led: set[int] = set()
        self._last_wait_log = 0.0
        self._local: _Local | None = None
        self._reference: Params | None = None  # structure of the swarm's current model
        self._own_structure: Params | None = None  # what this site's model can load
        self._latest: RoundResult | None = None
        self._timings: dict[str, float] = {}
        self._merge_out: Params = {}
        self._merge_shape: list[Any] = []
        self._failed_pings: dict[str, int] = {}

    # --- lifecycle ------------------------------------------------------------------------
    def register(self) -> None:
        payload = {
            "endpoint": self.endpoint,
            "weight": self.settings.weight,
            **self.settings.contract_settings(),
        }
        outcome = self._submit("register", 0, payload)
        if not outcome.applied:
            raise SwarmError(f"the ledger refused to register {self.name}: {outcome.reason}")
        log.info("%s registered with %s at %s", self.name, self.contract, self.endpoint)

    def close(self) -> None:
        self.server.stop()
        self.fetcher.close()
        self.ledger.close()

    # --- ledger access --------------------------------------------------------------------
    def _submit(self, tx_type: str, round: int, payload: Mapping[str, Any] | None = None):
        try:
            return self.ledger.submit(tx_type, contract=self.contract, round=round,
                                      payload=payload)  # fmt: skip
        except LedgerError as exc:
            raise SwarmError(f"ledger unavailable while sending {tx_type!r}: {exc}") from exc

    def view(self) -> dict[str, Any]:
        """The contract's state as the ledger holds it now."""
        try:
            state = self.ledger.state(self.contract, recent=_RECENT_ROUNDS)["state"]
        except LedgerError as exc:
            raise SwarmError(f"ledger unavailable: {exc}") from exc
        if state is None:
            raise SwarmError(f"training contract {self.contract!r} does not exist; register")
        return state

    # --- joining --------------------------------------------------------------------------
    def latest_merged(self) -> RoundResult | None:
        """The latest merged model, fetched and checked (for late joiners and restarts)."""
        latest = self.view()["latest_merged"]
        if latest is None:
            return None
        if self._latest is not None and self._latest.digest == latest["digest"]:
            return self._latest
        try:
            params = self._fetch_merged(latest["round"], latest["digest"], [latest["leader"]])
        except MergedModelLost as exc:
            log.warning("%s: %s; starting from this site's own parameters", self.name, exc)
            return None
        self._latest = RoundResult(latest["round"], params, latest["digest"], latest["leader"], ())
        return self._latest

    # --- one round ------------------------------------------------------------------------
    def sync(
        self, params: Mapping[str, Any], *, weight: float | None = None, retry: bool = True
    ) -> RoundResult:
        """Take part in the next round with `params`; returns the merged result (params None
        when the round ended without one for this peer: keep training the local model).

        In the contract's first round the leader hands out its own parameters instead of
        merging, so that every site starts from the same model.
        """
        started = time.perf_counter()
        self._timings = {}
        with self._timed("encode"):
            data = encode(params)
            digest = digest_encoded(data)
        payload = {"digest": digest, "size": len(data),
                   "weight": self.settings.weight if weight is None else weight}  # fmt: skip
        while True:
            round = self.view()["round"]
            self.server.store.publish("local", round, digest, data)
            local = _Local(round, data, digest)
            self._local = local
            if self._own_structure is None:
                self._own_structure = _structure(decode(data))
            outcome = self._submit("ready", round, payload)
            if outcome.applied:
                break
            log.info("%s: ready for round %d refused (%s)", self.name, round, outcome.reason)
            self._wait_round_closed(round)
            if not retry:
                return RoundResult(round, None, None, None, ())
        result = self._follow(local) or RoundResult(local.round, None, None, None, ())
        timings = dict(self._timings)
        timings["total"] = time.perf_counter() - started
        timings["ledger"] = timings["total"] - sum(
            v for k, v in self._timings.items() if k != "total"
        )
        result.timings.update(timings)
        return result

    @contextlib.contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        """Add the block's duration to this round's `phase` (encode, transfer, merge)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._timings[phase] = self._timings.get(phase, 0.0) + time.perf_counter() - start

    def _wait_round_closed(self, round: int) -> None:
        while self.view()["round"] <= round:
            time.sleep(self.settings.poll_s)

    def _follow(self, local: _Local) -> RoundResult | None:
        """Drive round `local.round` to its end: seal, lead, time out, fetch the result."""
        r = local.round
        window_from: float | None = None
        while True:
            view = self.view()
            if view["round"] > r:
                return self._closed(view, r, local)
            current = view["current"]
            if not current["sealed"]:
                if self.finished:
                    # Only sites still training seal rounds; once none is left, it is over.
                    if not self._alive_unfinished(view):
                        return None
                    time.sleep(self.settings.poll_s)
                    continue
                ready = sorted(current["ready"])
                waiting = self._expected(view, ready)
                if len(ready) >= self.settings.min_peers:
                    window_from = window_from or time.monotonic()
                    waited = time.monotonic() - window_from
                    if not waiting or waited >= self.settings.extra_window_s:
                        self._submit("seal", r)
                else:
                    self._log_waiting(r, ready, waiting)
            elif current["leader"] == self.name:
                if r not in self._led:
                    self._led.add(r)
                    self._lead(view, local)
            elif self.name in current["participants"]:
                waited = time.time() - float(current["leader_since"])
                if waited >= view["settings"]["leader_timeout_s"]:
                    log.warning("%s: leader %s of round %d silent for %.0f s; moving on",
                                self.name, current["leader"], r, waited)  # fmt: skip
                    self._submit("leader_timeout", r, {"leader": current["leader"]})
            else:
                # sealed without us: wait for its end, then join the next round with the
                # same (unmerged) parameters
                self._wait_round_closed(r)
                return None
            time.sleep(self.settings.poll_s)

    def _expected(self, view: dict[str, Any], ready: list[str]) -> list[str]:
        """Members that may still join this round (active ones that still train or give)."""
        return sorted(
            name
            for name, member in view["members"].items()
            if member["active"] and name not in ready
            and (not member["finished"] or member.get("contribution") != "inactive")
        )  # fmt: skip

    def _alive_unfinished(self, view: dict[str, Any]) -> list[str]:
        """Other members still training whose snapshot server still answers."""
        names = [n for n, m in view["members"].items()
                 if m["active"] and not m["finished"] and n != self.name]  # fmt: skip
        return [n for n in names if not self._gone(view["members"][n]["endpoint"], n)]

    def _gone(self, endpoint: str, name: str) -> bool:
        """A member whose snapshot server refuses connections a few times running is gone."""
        host, _, port = endpoint.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=1.0).close()
            self._failed_pings[name] = 0
        except OSError:
            self._failed_pings[name] = self._failed_pings.get(name, 0) + 1
        return self._failed_pings[name] >= _GONE_AFTER_FAILED_PINGS

    def _log_waiting(self, r: int, ready: list[str], waiting: list[str]) -> None:
        now = time.monotonic()
        if now - self._last_wait_log >= _WAIT_LOG_EVERY_S:
            self._last_wait_log = now
            log.info("%s: round %d waits for min_peers=%d; ready: %s; waiting for: %s",
                     self.name, r, self.settings.min_peers, ", ".join(ready) or "-",
                     ", ".join(waiting) or "new peers")  # fmt: skip

    def _closed(self, view: dict[str, Any], r: int, local: _Local) -> RoundResult | None:
        del local
        record = next((h for h in view["history"] if h["round"] == r), None)
        if record is None:  # long ago (this process was stalled): read the full history
            full = self.ledger.state(self.contract)["state"] or {}
            record = next((h for h in full.get("history", []) if h["round"] == r), None)
        if record is None or record["status"] != "merged":
            log.warning("%s: round %d ended without a merged model", self.name, r)
            return None
        if self.name not in record["participants"]:
            return None
        digest = record["digest"]
        if record["leader"] == self.name:
            data = self.server.store.find("merged", r, digest)
            params = decode(data.data) if data else self._fetch_merged(r, digest, [])
        else:
            holders = [record["leader"]]
            latest = view.get("latest_merged") or {}
            if latest.get("round") == r:
                holders += [h for h in latest.get("holders", []) if h != record["leader"]]
            try:
                with self._timed("transfer"):
                    params = self._fetch_merged(r, digest, holders)
            except MergedModelLost as exc:
                # Its leader died before anyone fetched it: train on; the next round merges.
                log.warning("%s: %s; keeping this site's parameters", self.name, exc)
                return None
            with contextlib.suppress(SwarmError):  # only a convenience for late joiners
                self._submit("loaded", r, {"digest": digest})
        problem = _mismatch(self._own_structure or params, params)
        if problem is None:
            try:
                check_finite(params)
            except CodecError as exc:
                problem = str(exc)
        if problem is not None:
            log.error("%s: merged model of round %d from %s refused: %s", self.name, r,
                      record["leader"], problem)  # fmt: skip
            return None
        self._reference = _structure(params)
        self.rounds_joined += 1
        self.current_digest = digest
        return RoundResult(
            r, params, digest, record["leader"], tuple(record["participants"]),
            record.get("sync_interval"),
        )  # fmt: skip

    def _fetch_merged(self, r: int, digest: str, sources: list[str]) -> Params:
        """Fetch the merged model of round r from whichever source has it; MergedModelLost
        if none could hand it over within `leader_timeout_s`."""
        deadline = time.monotonic() + self.settings.leader_timeout_s
        problems: list[str] = []
        while time.monotonic() < deadline:
            view = self.view()
            latest = view.get("latest_merged") or {}
            names = list(dict.fromkeys([*sources, *latest.get("holders", [])]))
            for name in names:
                if name == self.name:
                    found = self.server.store.find("merged", r, digest)
                    if found:
                        return decode(found.data)
                    continue
                member = view["members"].get(name)
                if member is None:
                    continue
                try:
                    data = self.fetcher.fetch(member["endpoint"], "merged", r, digest)
                except ExchangeError as exc:
                    problems.append(str(exc))
                    continue
                self.server.store.publish("merged", r, digest, data)
                return decode(data)
            time.sleep(0.5)
        raise MergedModelLost(
            f"no peer could hand over the merged model of round {r}: {'; '.join(problems[-3:])}"
        )

    # --- leader work ----------------------------------------------------------------------
    def _lead(self, view: dict[str, Any], local: _Local) -> None:
        r = local.round
        own = decode(local.data)
        if view["latest_merged"] is None:  # the initial sync: everyone adopts the leader's
            merged_params, excluded, used = own, [], [self.name]
        else:
            with self._timed("transfer"):
                sets, weights, used, excluded = self._gather(view, local, own)
            try:
                with self._timed("merge"):
                    merged_params = self._merge(sets, weights)
            except MergeInputError as exc:
                log.error("%s: merge of round %d failed: %s", self.name, r, exc)
                return
        with self._timed("encode"):
            data = encode(merged_params)
            digest = digest_encoded(data)
        self.server.store.publish("merged", r, digest, data)
        payload: dict[str, Any] = {"digest": digest, "size": len(data)}
        if excluded:
            payload["excluded"] = excluded
        outcome = self._submit("merged", r, payload)
        if outcome.applied:
            log.info("%s led round %d: merged %s%s", self.name, r, ", ".join(used),
                     f"; left out {excluded}" if excluded else "")  # fmt: skip
        else:
            log.warning("%s: merged of round %d refused: %s", self.name, r, outcome.reason)

    def _merge(self, sets: list[Params], weights: list[float]) -> Params:
        """Merge with the contract's method; `mean` reuses its output arrays across rounds
        (they are encoded and published right after, so nothing else holds them)."""
        if self.settings.merge_method == "mean" and not self.settings.merge_options:
            shape = [(n, v.shape, v.dtype) for n, v in sets[0].items()]
            if self._merge_shape != shape:
                self._merge_out = {n: np.empty(v.shape, v.dtype) for n, v in sets[0].items()}
                self._merge_shape = shape
            return mean(sets, weights, out=self._merge_out)
        return merge(sets, weights, method=self.settings.merge_method,
                     **dict(self.settings.merge_options))  # fmt: skip

    def _gather(
        self, view: dict[str, Any], local: _Local, own: Params
    ) -> tuple[list[Params], list[float], list[str], list[dict[str, str]]]:
        """Pull and check every participant's snapshot; refuse the ones that don't fit."""
        current = view["current"]
        names = list(current["participants"])
        excluded: list[dict[str, str]] = []

        # What every snapshot must look like: the swarm's current model, which all
        # participants agree on (the leader's own snapshot is checked like any other).
        reference = self._reference or own

        def pull(name: str) -> Params | str:
            entry = current["ready"][name]
            member = view["members"].get(name)
            try:
                if name == self.name:
                    params = own
                elif member is None:
                    return "not a member"
                else:
                    data = self.fetcher.fetch(member["endpoint"], "local", local.round,
                                              entry["digest"])  # fmt: skip
                    params = decode(data)
                check_finite(params)
            except (ExchangeError, CodecError) as exc:
                return str(exc)
            return _mismatch(reference, params) or params

        with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
            pulled = dict(zip(names, pool.map(pull, names), strict=True))
        sets, weights, used = [], [], []
        for name in names:
            got = pulled[name]
            if isinstance(got, str):
                log.warning("%s: leaving %s out of round %d: %s", self.name, name,
                            local.round, got)  # fmt: skip
                excluded.append({"name": name, "reason": got[:500]})
                continue
            sets.append(got)
            weights.append(float(current["ready"][name]["weight"]))
            used.append(name)
        if not any(weights):
            weights = [1.0] * len(sets)
        return sets, weights, used, excluded

    # --- finishing ------------------------------------------------------------------------
    def finish(self, contribution: Callable[[], Mapping[str, Any] | None]) -> RoundResult | None:
        """Say this peer is done, keep contributing `contribution()` (None: nothing) to rounds
        until every site still alive is done, and return the final merged model, which is
        the same on every peer."""
        if not self.finished:
            outcome = self._submit("finished", 0, {"contribution": self.settings.contribution})
            if not outcome.applied and "already finished" not in (outcome.reason or ""):
                raise SwarmError(f"the ledger refused 'finished': {outcome.reason}")
            self.finished = True
        while True:
            view = self.view()
            current = view["current"]
            if current["sealed"]:
                mine = self._local
                if (
                    mine is not None
                    and mine.round == view["round"]
                    and (self.name in current["participants"])
                ):
                    self._follow(mine)  # lead or time out a leader, as any participant
                else:
                    self._wait_round_closed(view["round"])
                continue
            if not self._alive_unfinished(view):
                return self._final(view)
            offered = contribution()
            if offered is not None and self.name not in current["ready"]:
                self.sync(offered, retry=False)
            else:
                time.sleep(self.settings.poll_s * 4)

    def _final(self, view: dict[str, Any]) -> RoundResult | None:
        """Fetch the final model, then keep serving it until every live site holds it."""
        latest = view["latest_merged"]
        if latest is None:
            return None
        r, digest = latest["round"], latest["digest"]
        params = self._fetch_merged(r, digest, [latest["leader"]])
        if self.name not in latest["holders"]:
            with contextlib.suppress(SwarmError):
                self._submit("loaded", r, {"digest": digest})
        deadline = time.monotonic() + _FINAL_HANDOVER_S
        while time.monotonic() < deadline:
            view = self.view()
            holders = set((view["latest_merged"] or {}).get("holders", []))
            missing = [
                name
                for name, member in view["members"].items()
                if member["active"] and name not in holders
                and not self._gone(member["endpoint"], name)
            ]  # fmt: skip
            if not missing:
                break
            time.sleep(self.settings.poll_s * 4)
        self.current_digest = digest
        return RoundResult(r, params, digest, latest["leader"], ())


def _structure(params: Params) -> Params:
    """Zero-size stand-ins with the names, shapes and dtypes of `params`."""
    return {
        name: np.lib.stride_tricks.as_strided(
            np.zeros(1, dtype=value.dtype), shape=np.shape(value), strides=(0,) * np.ndim(value)
        )
        for name, value in params.items()
    }


def _mismatch(reference: Params, params: Params) -> str | None:
    """Why `params` cannot be merged with `reference`, or None if it can."""
    missing = [n for n in reference if n not in params]
    extra = [n for n in params if n not in reference]
    if missing or extra:
        return f"tensor names differ (missing {missing[:3]}, unexpected {extra[:3]})"
    for name, ref in reference.items():
        got = params[name]
        if tuple(np.shape(got)) != tuple(np.shape(ref)):
            return f"tensor {name!r} has shape {tuple(np.shape(got))}, expected {np.shape(ref)}"
        if str(got.dtype) != str(ref.dtype):
            return f"tensor {name!r} has dtype {got.dtype}, expected {ref.dtype}"
    return None
