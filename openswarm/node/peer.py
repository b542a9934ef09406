"""The round protocol of one peer, as the ledger's training contract drives it.

A round: every participant publishes its snapshot and says `ready`; once `min_peers` are
ready (and a bounded window for the rest has passed) a participant seals the round; the
contract's leader pulls every snapshot, checks each against the digest on the ledger, merges
and publishes the result; everyone fetches it, checks its digest and loads it. A leader that
stays silent past `leader_timeout_s` is replaced by the next in the contract's ranking.

Nothing another site sends is trusted: snapshots are fetched with the size the ledger
recorded as a cap, an idle timeout and a deadline inside the leader timeout, then decoded
defensively and checked; a merged model that cannot be had or is malformed is reported to
the contract, which falls back to the merge before it (see `TrainingContract`). Presence is
a signed heartbeat on the ledger, never a network probe; only the round's leader may fetch
a site's local snapshot, and only active members a merged one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from openswarm.codec import CodecError, check_finite, digest_encoded
from openswarm.codec.chunks import leaves as chunk_leaves
from openswarm.codec.chunks import root_of
from openswarm.codec.shards import chunk_span, cut
from openswarm.codec.transport import Transport
from openswarm.ledger.client import LedgerClient, LedgerError, Outcome
from openswarm.ledger.tx import make_transaction
from openswarm.merge import MergeInputError
from openswarm.merge.server_opt import is_state, merged_structure, model_part
from openswarm.node.checks import Structure, mismatch, structure
from openswarm.node.decide import IDLE_S, Me, RoundView, next_step, posted_as
from openswarm.node.exchange import CHUNK_BYTES, ExchangeClient, ExchangeError, ExchangeServer
from openswarm.node.leader import MAX_IDLE_S, Leader, Merged
from openswarm.node.masked_rounds import Facilities, MaskedRounds, masked_chunks
from openswarm.node.memory import release_freed_memory
from openswarm.node.settings import NetworkConfig, SwarmSettings
from openswarm.node.shard_merge import (
    ShardAssembly,
    ShardMerger,
    ShardsUnavailable,
    differing_shards,
    shards_mismatch,
)
from openswarm.node.vouch import LedgerVouch
from openswarm.node.watch import ContractWatch, WatchError
from openswarm.pki import CertIdentity, Identity, PkiError
from openswarm.protocol import ROUND_PHASES, MergedModelLost, SwarmError

__all__ = ["MergedModelLost", "RoundResult", "SwarmError", "SwarmPeer"]

Params = dict[str, Any]
log = logging.getLogger("openswarm.peer")

_WAIT_LOG_EVERY_S = 10.0
_FINAL_HANDOVER_S = 120.0
_FINAL_ATTEMPTS = 3  # merged models tried (each voided in turn) before giving up at the end
_SIZE_SLACK = 4  # no model from another site may encode to more than this times ours
_AUTHORIZE_WAIT_S = 3.0  # how long a fetch request may wait for a lagging ledger replica
_NOT_YET = "cannot be declared unavailable for another"  # the contract's "too early"
_NOT_YET_RETRY_S = 0.5
_SEE_OWN_TX_S = 5.0  # how long to wait for the pushed state to show an applied transaction
_DEALT_TOO_FEW = "must deal a share to every active member"  # the contract's refusal


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

    def __init__(
        self,
        settings: SwarmSettings,
        network: NetworkConfig,
        *,
        ledger: LedgerClient | None = None,
        fetcher: ExchangeClient | None = None,
    ) -> None:
        """`ledger` and `fetcher`, the clients this peer talks through, default to ones for
        `network` and its identity; tests inject others (a failing or slow one)."""
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
        self.network = network
        self.ledger = ledger or LedgerClient(list(network.ledger), self.identity)
        # The contract's state, pushed by the ledger as it changes (started by register()).
        self._watch: ContractWatch | None = None
        self._watch_lock = threading.Lock()
        # With several site CAs, the ledger says whose CA may vouch for a caller.
        self.server = ExchangeServer(self.identity, network.listen, authorize=self._authorize,
                                     vouch=LedgerVouch(self.ledger))  # fmt: skip
        # What other sites dial: the advertised host (its certificate must name it, see
        # `openswarm pki issue --host`), else the listening one.
        self.endpoint = f"{network.advertise or self.server.host}:{self.server.port}"
        self.fetcher = fetcher or ExchangeClient(self.identity)
        self._leader = Leader(self.name, settings, self.fetcher, self._timed)
        self._leader.prior = self._previous_merged
        self._shard_merger = ShardMerger(self.name, settings, self.fetcher, self._timed)
        self._shard_assembly = ShardAssembly(self.name, self.server.store, self.fetcher)
        self._sharded: set[tuple[int, int, tuple[str, ...]]] = set()  # see decide.Me
        # round -> the shards (decide.posted_as) and the digest they assembled to, or why
        # they did not (None, None: some could not be had); what was tried (see decide.Me),
        # and the shards not had
        self._assembled: dict[int, tuple[tuple[str, ...], str | None, str | None]] = {}
        self._assembly_tried: set[tuple[int, tuple[str, ...]]] = set()
        self._unfetched: set[tuple[int, int, str]] = set()
        self.finished = False
        self.rounds_joined = 0
        self.current_digest: str | None = None
        self._last_round: int | None = None  # the round of the last merged model this site had
        self._out_of_touch = False  # a ledger call failed since then (cut off, ledger down)
        self._led: set[int] = set()
        self._audited: set[tuple[int, str, str]] = set()  # (round, leader, digest) recomputed
        self._last_wait_log = 0.0
        self._local: _Local | None = None
        self._reference: Structure | None = None  # the swarm's current model
        self._own_structure: Structure | None = None  # what this site's model can load
        self._own_size: int | None = None  # its encoded size: no model from others is larger
        self._latest: RoundResult | None = None
        self._timings: dict[str, float] = {}
        self._last_submit = time.monotonic()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._absent: set[str] = set()  # members logged as silent on the ledger
        self._declares_weight = True  # the contract's weight_policy is "declared"
        self.transport = Transport()  # how models travel: the contract's compression
        self._leader.mirror = lambda r, digest, data: self.server.store.publish(
            "mirror", r, digest, data
        )
        self._masked = MaskedRounds(
            Facilities(self.name, self._submit, self._state, self.server.store, self.fetcher,
                       self._previous_merged, lambda: self.transport),
            self.contract,
        )  # fmt: skip
        self._masked_rounds: set[int] = set()  # rounds it masked its update in (decide.Me)
        self._revealed: set[int] = set()  # rounds it revealed its shares in (decide.Me)

    # --- lifecycle ------------------------------------------------------------------------
    def register(self) -> None:
        """Join the training contract (created first where this site may and must), then
        keep a heartbeat on the ledger until `close()`."""
        state = self._ledger_call(lambda: self.ledger.state(self.contract, recent=0))["state"]
        if state is None:
            self._create_contract()
            state = self._ledger_call(lambda: self.ledger.state(self.contract, recent=0))["state"]
        self._declares_weight = state is None or state["settings"]["weight_policy"] == "declared"
        compression = "none" if state is None else state["settings"]["compression"]
        self._use_transport(Transport.parse(compression))
        payload = {"endpoint": self.endpoint, **self.settings.contract_settings()}
        if self._declares_weight:
            payload["weight"] = self.settings.weight
        elif self.settings.weight != 1:
            log.warning("%s: contract %s has weight_policy %s: this site's weight %g is not "
                        "used", self.name, self.contract, state["settings"]["weight_policy"],
                        self.settings.weight)  # fmt: skip
        if not self.settings.lead:
            payload["lead"] = False
        if not self.settings.audits:
            payload["audits"] = False
        if state is not None and state["settings"].get("secure_aggregation"):
            payload["share_key"] = self._masked.share_key  # what shares are sealed to
        outcome = self._submit("register", 0, payload)
        if not outcome.applied:
            raise SwarmError(
                f"the ledger refused to register {self.name} with {self.contract}: "
                f"{outcome.reason}. A contract's settings are fixed when an admin creates it: "
                "use the same settings here, or a contract created with yours"
            )
        self._see_applied(outcome)
        log.info("%s registered with %s at %s", self.name, self.contract, self.endpoint)
        if self._heartbeat is None:
            self._heartbeat = threading.Thread(
                target=self._beat, name=f"{self.name}-heartbeat", daemon=True
            )
            self._heartbeat.start()

    def _use_transport(self, transport: Transport) -> None:
        """Send and receive models as the contract's compression says."""
        self.transport = transport
        self._leader.transport = transport
        self.server.compress = transport.wire if transport.zstd else None

    def _create_contract(self) -> None:
        admin_dir = self.network.admin_identity
        if admin_dir is None:
            raise SwarmError(
                f"training contract {self.contract!r} does not exist on the ledger. Contracts "
                "are created by the swarm's admins, with their settings: in the genesis "
                f"('openswarm ledger genesis --contract {self.contract} …') or by an admin's "
                "contract_create transaction"
            )
        try:
            admin = Identity.load(admin_dir)
        except PkiError as exc:
            raise SwarmError(f"admin identity folder {admin_dir}: {exc}") from exc
        with LedgerClient(list(self.network.ledger), admin) as client:
            # who counts as live for timeout votes: this site's presence timeout
            payload = {**self.settings.contract_settings(),
                       "presence_timeout_s": self.settings.presence_timeout_s}  # fmt: skip
            tx = make_transaction(admin, "contract_create", contract=self.contract,
                                  payload=payload)  # fmt: skip
            outcome = self._ledger_call(lambda: client.submit_tx(tx))
        events = (outcome.result or {}).get("events", []) if outcome.applied else []
        if any(e.get("kind") == "proposed" for e in events):
            raise SwarmError(
                f"training contract {self.contract!r} awaits approval by more admins (this "
                "swarm's admin_quorum): have them send the same contract_create "
                f"('openswarm ledger contract-create {self.contract} …'), then start again"
            )
        if outcome.applied:
            log.info("%s created training contract %s", self.name, self.contract)
        elif "already exists" not in (outcome.reason or ""):  # another site was first
            raise SwarmError(f"cannot create training contract {self.contract}: {outcome.reason}")

    def close(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=10)
        self.server.stop()
        self.fetcher.close()
        if self._watch is not None:
            self._watch.close()
        self.ledger.close()

    # --- ledger access --------------------------------------------------------------------
    def _ledger_call(self, call: Callable[[], Any], what: str = "asking the ledger") -> Any:
        """`call()`, riding out transient ledger failures (no quorum, replicas restarting,
        rate limits) for up to `ledger_retry_s`; SwarmError once that has passed."""
        deadline = time.monotonic() + self.settings.ledger_retry_s
        pause = 0.1
        while True:
            started = time.monotonic()
            try:
                answer = call()
                self._note_slow_call(started)
                return answer
            except LedgerError as exc:
                if not exc.transient or time.monotonic() + pause > deadline:
                    raise SwarmError(f"ledger unavailable while {what}: {exc}") from exc
                if "RESOURCE_EXHAUSTED" in str(exc):  # busy or rate-limited: it is there
                    log.info("%s: ledger busy while %s (%s); retrying", self.name, what, exc)
                else:
                    self._out_of_touch = True
                    log.warning("%s: ledger unavailable while %s (%s); retrying", self.name,
                                what, exc)  # fmt: skip
            # jittered, so that sites refused together do not all come back together
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 2.0)

    def _submit(
        self, tx_type: str, round: int, payload: Mapping[str, Any] | None = None
    ) -> Outcome:
        # Signed once: a resubmission is the same transaction, so it applies at most once.
        tx = make_transaction(self.identity, tx_type, contract=self.contract, round=round,
                              payload=payload)  # fmt: skip
        self._last_submit = time.monotonic()
        return self._ledger_call(lambda: self.ledger.submit_tx(tx), f"sending {tx_type!r}")

    def report_metrics(
        self,
        round: int,
        loss: float,
        metric: float | None,
        epoch: int,
        total_epochs: int | None,
        *,
        phases: Mapping[str, float] | None = None,
        traffic: Mapping[str, int] | None = None,
        privacy: Mapping[str, Any] | None = None,
    ) -> None:
        """Record this site's validation loss (and metric) after `round` on the ledger: the
        progress every site sees, and what adaptive sync decides from; with where the
        round's time went (`phases`, seconds by ROUND_PHASES) and the bytes of models it
        sent and received since its previous report (`traffic`)."""
        payload: dict[str, Any] = {
            "loss": float(loss),
            "metric": None if metric is None or not math.isfinite(metric) else float(metric),
            "epoch": epoch,
            "total_epochs": total_epochs,
        }
        if phases:
            payload["phases"] = {k: float(v) for k, v in phases.items() if k in ROUND_PHASES}
        if traffic is not None:
            payload["traffic"] = {"sent": int(traffic["sent"]),
                                  "received": int(traffic["received"])}  # fmt: skip
        if privacy is not None:  # this site's ε so far (openswarm.privacy)
            payload["privacy"] = dict(privacy)
        self._submit("metrics", round, payload)

    def traffic(self) -> dict[str, int]:
        """Bytes of models this site has sent to others and received from them so far."""
        received = getattr(self.fetcher, "received", None)  # an injected fetcher may not count
        return {"sent": self.server.sent.total,
                "received": 0 if received is None else received.total}  # fmt: skip

    def _beat(self) -> None:
        """Say 'still here' on the ledger whenever nothing else did for `heartbeat_s`."""
        every = self.settings.heartbeat_s
        with LedgerClient(list(self.network.ledger), self.identity) as client:
            while not self._stop.wait(max(0.0, self._last_submit + every - time.monotonic())):
                if time.monotonic() - self._last_submit < every:
                    continue
                self._last_submit = started = time.monotonic()
                try:
                    client.submit("heartbeat", contract=self.contract)
                    self._note_slow_call(started)
                except LedgerError as exc:
                    self._out_of_touch = self._out_of_touch or exc.transient
                    log.debug("%s: heartbeat not sent: %s", self.name, exc)

    def watch(self) -> ContractWatch:
        """The stream of this contract's state from the ledger (opened on first use)."""
        with self._watch_lock:
            if self._watch is None:
                self._watch = ContractWatch(
                    list(self.network.ledger), self.identity, self.contract,
                    retry_s=self.settings.ledger_retry_s,
                )  # fmt: skip
            return self._watch

    def _state(self, newer_than: int = -1, timeout: float = 0.0) -> tuple[int, dict[str, Any]]:
        """(height of its last change, the contract's state): the latest the ledger pushed,
        or the first one changed after `newer_than` within `timeout` seconds."""
        try:
            height, state = self.watch().wait_newer(newer_than, timeout)
        except WatchError as exc:
            raise SwarmError(f"ledger unavailable while following {self.contract}: {exc}") from exc
        if state is None:
            raise SwarmError(f"training contract {self.contract!r} does not exist; register")
        return height, state

    def view(self) -> dict[str, Any]:
        """The contract's state as the ledger last pushed it (its last few rounds)."""
        return self._state()[1]

    def _see_applied(self, outcome: Outcome) -> None:
        """Wait until the pushed state shows this peer's applied transaction."""
        if outcome.applied:
            with contextlib.suppress(WatchError):
                self.watch().wait_applied(outcome.height, _SEE_OWN_TX_S)

    def _authorize(self, caller: CertIdentity, kind: str, round: int,
                   chunks: tuple[int, int] | None = None) -> str | None:  # fmt: skip
        """Who may fetch what from this site: a local snapshot only the leader of the
        round it belongs to and its auditors, or (only the chunks of the shards it owns) a
        shard owner; a merged model and shards only active members (as the ledger says).

        Judged on the state the ledger pushed, so fetch requests, refused ones too, cost no
        ledger call; a refusal waits a moment for a newer state while the one held may
        simply not show the round's seal or its leader's handover yet."""
        deadline = time.monotonic() + _AUTHORIZE_WAIT_S
        try:
            height, state = self.watch().latest()
            while True:
                refusal = _fetch_refusal(state, caller.name, kind, round, self.contract)
                if refusal is not None and chunks is not None:
                    refusal = self._owner_refusal(state, caller.name, kind, round, chunks)
                left = deadline - time.monotonic()
                if refusal is None or left <= 0 or not _just_behind(state, round, caller.name):
                    return refusal
                height, state = self.watch().wait_newer(height, left)
        except WatchError as exc:
            return f"cannot check with the ledger right now: {exc}"

    # --- joining --------------------------------------------------------------------------
    def expect(self, params: Mapping[str, Any]) -> None:
        """Learn what this site's model looks like (names, shapes, dtypes, encoded size), so
        that models from other sites are checked, and their downloads capped, against it."""
        if self._own_structure is None:
            self._learn(params, self.transport.pack(params))

    def _learn(self, params: Mapping[str, Any], data: bytes) -> None:
        """Take this site's model, `params` (packed for the wire: `data`), as what others'
        must look like."""
        self._own_structure = structure(params)
        self._own_size = len(data)

    def latest_merged(self, params: Mapping[str, Any] | None = None) -> RoundResult | None:
        """The latest merged model, fetched and checked (for late joiners and restarts);
        `params`, this site's own, tell what it must look like."""
        if params is not None:
            self.expect(params)
        latest = self.view()["latest_merged"]
        if latest is None:
            return None
        if self._latest is not None and self._latest.digest == latest["digest"]:
            return self._latest
        try:
            params = self._fetch_merged(latest, [latest["leader"]])
        except SwarmError as exc:
            log.warning("%s: %s; starting from this site's own parameters", self.name, exc)
            return None
        self._latest = RoundResult(latest["round"], params, latest["digest"], latest["leader"], ())
        self._last_round = max(self._last_round or 0, latest["round"])
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
        # back after losing touch for two merges or more (or never had the swarm's model
        # though it has one): catch up first
        last = self._last_round
        caught_up = self._catch_up(after=0 if last is None else last + 1, missed=True)
        if caught_up is not None:
            return caught_up
        with self._timed("encode"):
            data = self.transport.pack(params)
            digest = digest_encoded(data)
            leaves = chunk_leaves(data)
        payload: dict[str, Any] = {"digest": digest, "size": len(data), "root": root_of(leaves)}
        if self._declares_weight:
            payload["weight"] = self.settings.weight if weight is None else weight
        while True:
            round = self.view()["round"]
            secure = self._masked.ready_part(self.view(), round)
            self.server.store.forget("local", round)  # (an earlier try's, if any)
            if secure is None:  # a masked round hands out no plaintext snapshot, ever
                self.server.store.publish("local", round, digest, data, leaves)
            local = _Local(round, data, digest)
            self._local = local
            if self._own_structure is None:
                self._learn(params, data)
            outcome = self._submit(
                "ready", round, payload if secure is None else {**payload, "secagg": secure}
            )
            if outcome.applied:
                self._see_applied(outcome)
                break
            log.info("%s: ready for round %d refused (%s)", self.name, round, outcome.reason)
            if _DEALT_TOO_FEW in (outcome.reason or ""):  # a member joined meanwhile: deal
                continue  # to it too, in the same round
            self._wait_round_closed(round)
            self._note_jump(round)
            if not retry:
                return RoundResult(round, None, None, None, ())
            caught_up = self._catch_up(after=round, missed=True)
            if caught_up is not None:
                return caught_up
        del data  # `local` holds it, until the round is over
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
        height, state = self._state()
        while state["round"] <= round:
            height, state = self._state(height, IDLE_S)

    def _follow(self, local: _Local) -> RoundResult | None:
        """Drive round `local.round` to its end: seal, lead, time out, fetch the result.
        Each pushed state (or a deadline passing) is judged by `next_step`."""
        r = local.round
        quorum_since: float | None = None
        sent: dict[str, float] = {}
        height, state = self._state()
        while True:
            view = RoundView.from_state(state)
            now = time.time()
            me = Me(self.name, r, self.settings.min_peers, self.settings.extra_window_s,
                    self.settings.presence_timeout_s, self.finished, frozenset(self._led),
                    frozenset(self._audited), quorum_since, sent, frozenset(self._sharded),
                    frozenset(self._assembly_tried), frozenset(self._unfetched),
                    frozenset(self._masked_rounds), frozenset(self._revealed))  # fmt: skip
            step = next_step(view, me, now)
            self._note_absent(step.absent, view, now)
            if step.quorum and quorum_since is None:
                quorum_since = now
            if step.kind == "closed":
                self._note_jump(r)
                return self._closed(state, r, local)
            if step.kind == "over":
                return None
            if step.kind == "left_out":
                # sealed without us: wait for its end, then join the next round with the
                # same (unmerged) parameters, unless this site has missed more merges
                self._wait_round_closed(r)
                self._note_jump(r)
                return self._catch_up(after=r, missed=True)
            if step.kind == "lead":
                self._led.add(r)
                self._lead(state, local)
            elif step.kind == "audit":
                assert view.audit is not None  # next_step audits only a pending audit
                self._audited.add((r, view.audit["leader"], view.audit["digest"]))
                self._audit(state, local)
            elif step.kind == "shard":
                assert step.index is not None
                self._sharded.add((r, step.index, view.shard_excluded))
                self._merge_shard(state, local, step.index)
            elif step.kind == "vote_shard":
                log.warning("%s: owner %s of shard %s of round %d silent, or its shard not to "
                            "be had; voting it out",
                            self.name, step.leader, step.index, r)  # fmt: skip
                sent[f"vote_shard:{step.index}:{step.leader}"] = now
                payload = {"index": step.index, "owner": step.leader}
                self._see_applied(self._submit("shard_timeout", r, payload))
            elif step.kind == "assemble":
                shards = state["current"]["shards"]
                self._assembly_tried.add((r, tuple(map(posted_as, shards))))
                self._led.discard(r)  # a leader proposes again what the new shards make
                self._assembled[r] = (tuple(map(posted_as, shards)), *self._assemble(state, r))
            elif step.kind == "mask":
                self._masked_rounds.add(r)
                reference = self._model_structure()
                if reference is not None:
                    self._masked.mask(state, r, local.data, reference)
            elif step.kind == "unmask":
                self._revealed.add(r)
                self._masked.reveal(state, r)
            elif step.kind == "survivors":
                sent["survivors"] = now
                names = sorted(state["current"]["secagg"]["masked"])
                self._see_applied(self._submit("survivors", r, {"names": names}))
            elif step.kind == "secagg_abort":
                log.warning("%s: round %d has too few shares to unmask; ending it", self.name, r)
                sent["secagg_abort"] = now
                self._see_applied(self._submit("secagg_abort", r))
            elif step.kind == "seal":
                sent["seal"] = now
                self._see_applied(self._submit("seal", r))
            elif step.kind == "vote_timeout":
                log.warning("%s: leader %s of round %d silent for %.0f s; voting it out",
                            self.name, step.leader, r, now - view.leader_since)  # fmt: skip
                sent["vote_timeout"] = now
                self._see_applied(self._submit("leader_timeout", r, {"leader": step.leader}))
            else:  # wait for a new state, or the step's deadline
                if not step.quorum and not self.finished:
                    self._log_waiting(r, list(step.ready), list(step.waiting))
                height, state = self._state(height, (step.until or now + IDLE_S) - now)
                continue
            height, state = self._state()

    def _alive_unfinished(self, view: dict[str, Any]) -> list[str]:
        """Other members still training and present on the ledger."""
        typed, now = RoundView.from_state(view), time.time()
        return [n for n, m in typed.members.items()
                if m.active and not m.finished and n != self.name
                and m.present(now, self.settings.presence_timeout_s)]  # fmt: skip

    def _note_absent(self, absent: tuple[str, ...], view: RoundView, now: float) -> None:
        """Log each member once when it falls silent on the ledger (again after it returns)."""
        for name in absent:
            if name not in self._absent:
                silent = now - view.members[name].last_seen
                log.warning("%s: %s has been silent on the ledger for %.0f s; not waiting for "
                            "it", self.name, name, silent)  # fmt: skip
        self._absent = set(absent)

    def _log_waiting(self, r: int, ready: list[str], waiting: list[str]) -> None:
        now = time.monotonic()
        if now - self._last_wait_log >= _WAIT_LOG_EVERY_S:
            self._last_wait_log = now
            log.info("%s: round %d waits for min_peers=%d; ready: %s; waiting for: %s",
                     self.name, r, self.settings.min_peers, ", ".join(ready) or "-",
                     ", ".join(waiting) or "new peers")  # fmt: skip

    def _closed(self, view: dict[str, Any], r: int, local: _Local) -> RoundResult | None:
        # Nobody fetches a local snapshot once its round is over: let its memory go before
        # the merged model comes.
        self.server.store.forget("local", r)
        self.server.store.forget("masked", r)
        local.data = b""
        assembled_from, mine, problem = self._assembled.pop(r, ((), None, None))
        self._forget_shards(r)
        record = next((h for h in view["history"] if h["round"] == r), None)
        if record is None:  # long ago (this process was stalled): read the full history
            full = self._ledger_call(lambda: self.ledger.state(self.contract))["state"] or {}
            record = next((h for h in full.get("history", []) if h["round"] == r), None)
        if record is None or record["status"] != "merged":
            log.warning("%s: round %d ended without a merged model", self.name, r)
            return self._catch_up(after=r, missed=True)
        if self.name not in record["participants"]:  # merged without this site
            return self._catch_up(after=r, missed=True)
        caught_up = self._catch_up(after=r)  # this round's model is history already
        if caught_up is not None:
            return caught_up
        digest = record["digest"]
        if record.get("shards") and assembled_from != tuple(map(posted_as, record["shards"])):
            mine, problem = None, None  # assembled from other shards: fetched and checked
        if record.get("shards") and (mine or problem) and mine != digest:
            why = problem or f"its shards assemble to {mine[:12]}…, not to {digest[:12]}…"
            log.error("%s: merged model of round %d refused: %s", self.name, r, why)
            self._report_refused(r, digest, why)
            return None
        if record["leader"] == self.name:
            try:
                params = self._held_merged(r, digest)
            except SwarmError:
                return None
            if params is None:
                return None
        else:
            latest = view.get("latest_merged") or {}
            holders = [record["leader"]]
            if latest.get("round") == r:
                holders += [h for h in latest.get("holders", []) if h != record["leader"]]
            try:
                with self._timed("transfer"):
                    params = self._fetch_merged(record, holders)
            except SwarmError as exc:
                # Its leader died or sent something malformed: train on with this site's
                # parameters (the contract falls back to the merge before; the next merges),
                # unless a later merge has come meanwhile.
                caught_up = self._catch_up(after=r)
                if caught_up is None:
                    log.warning("%s: %s; keeping this site's parameters", self.name, exc)
                return caught_up
            if record.get("shards") and mine is None and not self._is_the_shards(record):
                return None
        if record.get("secagg") and record["leader"] != self.name:
            beyond = self._beyond_bound(view, params)
            if beyond:  # nobody could audit the unmasked sum: this much is checked
                why = (f"it moves {beyond} coordinate(s) further from the previous merged model "
                       "than the secure aggregation bound allows")  # fmt: skip
                log.error("%s: merged model of round %d refused: %s", self.name, r, why)
                self._report_refused(r, digest, why)
                return None
        if record["leader"] != self.name:
            with contextlib.suppress(SwarmError):  # lets others fetch it from here too
                self._submit("loaded", r, {"digest": digest})
        self._reference = structure(params)
        release_freed_memory()  # what the round's transfers left in the heap
        self.rounds_joined += 1
        self.current_digest = digest
        self._last_round = r
        self._out_of_touch = False
        return RoundResult(
            r, params, digest, record["leader"], tuple(record["participants"]),
            record.get("sync_interval"),
        )  # fmt: skip

    def _beyond_bound(self, view: Mapping[str, Any], params: Params) -> int:
        """In how many coordinates a masked round's merged model `params` lies further than
        the contract's bound from the merged model this site had before (the mean of
        clipped updates cannot); 0 when that one is not held here any more."""
        if self._last_round is None or self.current_digest is None:
            return 0
        found = self.server.store.find("merged", self._last_round, self.current_digest)
        if found is None:
            return 0
        try:
            previous = self.transport.unpack(found.data, self._merged_structure(), copy=False)
        except CodecError:
            return 0
        bound = float(view["settings"]["secure_aggregation"]["bound"]) * (1 + 1e-6)
        beyond = 0
        for name, value in params.items():
            if name in previous:
                merged = np.asarray(value, np.float64)
                step = merged - np.asarray(previous[name], np.float64)
                # plus the rounding to the model's dtype: bfloat16's at most, or half a unit
                whole = 0.5 if np.issubdtype(np.asarray(value).dtype, np.integer) else 0.0
                slack = np.abs(merged) * 2.0**-7 + whole + 1e-9
                beyond += int(np.count_nonzero(np.abs(step) > bound + slack))
        return beyond

    def _note_slow_call(self, started: float) -> None:
        """A ledger call that took half a heartbeat or more to answer: the link stalled
        (cut off for a while, then back), and the swarm may have moved on meanwhile."""
        if time.monotonic() - started >= self.settings.heartbeat_s / 2:
            self._out_of_touch = True

    def _note_jump(self, waited_in: int) -> None:
        """A site that waited in round `waited_in` and finds the swarm two rounds or more
        further on lost touch meanwhile (its link, or its process, stalled): the ledger's
        pushes did not reach it, whether or not a call of it failed."""
        if self.view()["round"] >= waited_in + 2:
            self._out_of_touch = True

    def _catch_up(self, after: int, *, missed: bool = False) -> RoundResult | None:
        """The latest merged model, for a site to rejoin from instead of offering stale
        parameters or fetching a model the swarm has moved past; None if it should not.

        Without `missed`: if the swarm merged a round after round `after`. With `missed`
        (this site was left out, or refused): if it never had a merged model, or if it lost
        touch with the ledger and the swarm merged two rounds or more since the last merge
        it had. A slow site that never lost touch goes on offering its own training."""
        latest = self.view()["latest_merged"]
        if latest is None or latest["digest"] == self.current_digest:
            return None
        if not missed:
            if latest["round"] <= after:
                return None
        elif self._last_round is not None and (
            not self._out_of_touch or latest["round"] <= min(after, self._last_round + 1)
        ):
            return None
        started = time.perf_counter()
        found = self.latest_merged()
        if found is None:
            return None
        fetched = time.perf_counter() - started
        log.info("%s: the swarm merged round %d while this site was away; rejoining from that "
                 "model (%s…)", self.name, found.round, found.digest[:12])  # fmt: skip
        self.current_digest = found.digest
        self._reference = structure(found.params)
        self._last_round = found.round
        self._out_of_touch = False
        record = next((h for h in self.view()["history"] if h["round"] == found.round), {})
        timings = {"encode": 0.0, "transfer": fetched, "ledger": 0.0, "total": fetched}
        return RoundResult(found.round, found.params, found.digest, found.leader, (),
                           record.get("sync_interval"), timings)  # fmt: skip

    def _fetch_merged(self, merged: Mapping[str, Any], sources: list[str]) -> Params:
        """Fetch the merged model `merged` ({round, digest, size, merged_at?}) from whichever
        source has it, checked and decoded. MergedModelLost if none could hand it over
        within `leader_timeout_s` (reported to the contract, which then falls back to the
        merge before it); SwarmError if it is malformed (reported as refused)."""
        r, digest, size = merged["round"], merged["digest"], int(merged["size"])
        cap = self._capped(size, merged=True)
        timeout = self.settings.leader_timeout_s
        deadline = time.monotonic() + timeout
        problems: list[str] = []
        height, view = self._state()
        while time.monotonic() < deadline:
            latest = view.get("latest_merged") or {}
            if latest.get("round") == r and latest.get("digest") == digest:
                sources = [*sources, *latest.get("holders", [])]
            held = self._held_merged(r, digest)
            if held is not None:
                return held
            for name in dict.fromkeys(sources):
                if name == self.name:
                    continue
                member = view["members"].get(name)
                left = deadline - time.monotonic()
                if member is None or left <= 0:
                    continue
                try:
                    data = self.fetcher.fetch(member["endpoint"], "merged", r, digest,
                                              max_bytes=cap, size=size, deadline_s=left,
                                              peer=name, zstd=self.transport.zstd,
                                              idle_s=min(MAX_IDLE_S, timeout / 4))  # fmt: skip
                except ExchangeError as exc:
                    problems.append(str(exc))
                    continue
                params = self._decode_merged(r, digest, data)
                self.server.store.publish("merged", r, digest, data)
                return params
            # a new holder (or a voided merge) shows in a new state; try again at least twice
            # a second meanwhile
            height, view = self._state(height, min(0.5, max(0.0, deadline - time.monotonic())))
        self._report_unavailable(merged)
        raise MergedModelLost(
            f"no peer could hand over the merged model of round {r}: {'; '.join(problems[-3:])}"
        )

    def _held_merged(self, r: int, digest: str) -> Params | None:
        """The merged model `digest` of round `r` if this site holds it: merged here (the
        merge checked its finiteness) or fetched and checked before; its structure is
        checked again (cheap), as what a leader publishes need not be what it merged."""
        found = self.server.store.find("merged", r, digest)
        return None if found is None else self._decode_merged(r, digest, found.data, False)

    def _decode_merged(self, r: int, digest: str, data: bytes, finite: bool = True) -> Params:
        """Decode a merged model and check it fits this site's model (with a server
        optimizer's state, when the contract has one) and (if `finite`) is finite; a bad one
        is reported to the contract as refused (SwarmError). Returns the model's tensors."""
        expected = self._merged_structure()
        try:
            params = self.transport.unpack(data, expected)
            problem = None if expected is None else mismatch(expected, params)
            if (
                problem is not None
                and self.settings.server_optimizer
                and not any(map(is_state, params))
            ):  # the initial sync carries no optimizer state (it counts as zero)
                problem = mismatch(self._own_structure or {}, params)
            if problem is None and finite:
                check_finite(params)
        except CodecError as exc:
            problem = f"malformed: {exc}"
        if problem is None:
            return model_part(params)
        log.error("%s: merged model of round %d refused: %s", self.name, r, problem)
        self._report_refused(r, digest, problem)
        raise SwarmError(f"the merged model of round {r} is refused: {problem}")

    def _merged_structure(self) -> Structure | None:
        """What a merged model must look like here: this site's model, and a server
        optimizer's state when the contract has one."""
        if self._own_structure is None:
            return None
        return merged_structure(self.settings.merge_method, self._own_structure)

    def _previous_merged(self, record: Mapping[str, Any]) -> Params:
        """The merged model `record` ({round, digest, size, leader}) names, whole (with a
        server optimizer's state): held here, or fetched from its holders and checked.
        MergeInputError if it cannot be had."""
        r, digest = int(record["round"]), str(record["digest"])
        if self.server.store.find("merged", r, digest) is None:
            try:
                self._fetch_merged(record, [record["leader"]])
            except SwarmError as exc:
                raise MergeInputError(
                    f"the previous merged model (round {r}) cannot be had: {exc}"
                ) from None
        found = self.server.store.find("merged", r, digest)
        if found is None:
            raise MergeInputError(f"the previous merged model (round {r}) is not held here")
        try:
            return self.transport.unpack(found.data, self._merged_structure(), copy=False)
        except CodecError as exc:
            raise MergeInputError(f"the previous merged model (round {r}): {exc}") from None

    @property
    def carries_state(self) -> bool:
        """Whether merged models carry more than the model (a server optimizer's state),
        so that their digest is not that of the model a site loads."""
        return self.settings.server_optimizer

    def _model_structure(self) -> Structure | None:
        """What a model must look like here: the swarm's current one, else this site's."""
        return self._reference or self._own_structure

    def _capped(self, size: int, *, merged: bool = False) -> int:
        """A download cap: the size the ledger recorded, at most a few times this site's
        (for a `merged` model, times what a server optimizer's state adds to it)."""
        if self._own_size is None:
            return size
        growth = 1.0
        if merged and self._own_structure is not None and self.settings.server_optimizer:
            own = sum(s.size * s.dtype.itemsize for s in self._own_structure.values())
            full = self._merged_structure() or {}
            with_state = sum(s.size * s.dtype.itemsize for s in full.values())
            growth = with_state / max(own, 1)
        return min(size, math.ceil(_SIZE_SLACK * growth * self._own_size) + CHUNK_BYTES)

    def _report_refused(self, r: int, digest: str, reason: str) -> None:
        """Tell the contract this site refuses merged model `digest` of round `r`."""
        outcome = self._submit("merge_refused", r, {"digest": digest, "reason": reason[:500]})
        if not outcome.applied:
            log.info("%s: refusal of round %d's merge not recorded: %s", self.name, r,
                     outcome.reason)  # fmt: skip

    def _report_unavailable(self, merged: Mapping[str, Any]) -> None:
        """Tell the contract nobody could hand over this merged model, once the contract
        allows (leader_timeout_s after the merge, by the merge's own timestamp)."""
        merged_at = merged.get("merged_at")
        if merged_at is None:  # the latest_merged record: find the round's history entry
            full = self._ledger_call(lambda: self.ledger.state(self.contract))["state"] or {}
            entry = next((h for h in full.get("history", []) if h["round"] == merged["round"]),
                         {})  # fmt: skip
            merged_at = entry.get("merged_at")
        if merged_at is not None:  # never longer than one timeout: a post-dated merge waits not
            wait = float(merged_at) + self.settings.leader_timeout_s - time.time()
            time.sleep(min(max(0.0, wait), self.settings.leader_timeout_s))
        # The contract judges the wait in ledger time, which may trail this site's clock by
        # a tick or two: while it says "not yet", ask again shortly (for one timeout at most).
        deadline = time.monotonic() + self.settings.leader_timeout_s
        while True:
            payload = {"digest": merged["digest"]}
            outcome = self._submit("merge_unavailable", merged["round"], payload)
            early = not outcome.applied and _NOT_YET in (outcome.reason or "")
            if not early or time.monotonic() > deadline:
                break
            time.sleep(_NOT_YET_RETRY_S)
        log.warning("%s: merged model of round %d unavailable (%s)", self.name, merged["round"],
                    "recorded" if outcome.applied else outcome.reason)  # fmt: skip

    # --- leader work ----------------------------------------------------------------------
    def _lead(self, view: dict[str, Any], local: _Local) -> None:
        r = local.round
        if view["current"].get("shards"):
            self._lead_sharded(view, r)
            return
        reference = self._model_structure()
        if view["current"].get("secagg") is not None and reference is not None:
            with self._timed("merge"):
                masked = self._masked.lead(view, r, reference, self._revealed)
            if masked is not None:
                self._publish_merged(r, masked)
            return
        try:
            led = self._leader.run(view, r, local.data, reference, self._capped(2**62))
        except MergeInputError as exc:
            log.error("%s: merge of round %d failed: %s", self.name, r, exc)
            return
        self._publish_merged(r, led)

    def _publish_merged(self, r: int, led: Merged) -> None:
        """Serve the merge this site led and record it on the ledger."""
        self.server.store.publish("merged", r, led.digest, led.data)
        payload: dict[str, Any] = {"digest": led.digest, "size": len(led.data)}
        if led.excluded:
            payload["excluded"] = led.excluded
        outcome = self._submit("merged", r, payload)
        if outcome.applied:
            log.info("%s led round %d: merged %s%s", self.name, r, ", ".join(led.used),
                     f"; left out {led.excluded}" if led.excluded else "")  # fmt: skip
        else:
            log.warning("%s: merged of round %d refused: %s", self.name, r, outcome.reason)

    def _owner_refusal(self, state: dict[str, Any] | None, caller: str, kind: str, round: int,
                       chunks: tuple[int, int]) -> str | None:  # fmt: skip
        """Why `caller` may not fetch `chunks` of this site's snapshot of `round` as a shard
        owner, or None: just the chunks of a shard it owns now."""
        current = (state or {}).get("current") or {}
        shards = current.get("shards") or []
        member = (state or {}).get("members", {}).get(caller)
        if member is None or not member["active"]:
            return f"{caller} is not an active member of {self.contract}"
        specs = list((self._model_structure() or {}).values())
        masked_round = bool(state and state["current"].get("secagg") is not None)
        if (kind not in ("local", "masked") or not state or state["round"] != round or not specs
                or (kind == "local") == masked_round
                or not any(s["owner"] == caller for s in shards)):  # fmt: skip
            return (f"only the current leader of round {round}, its shard owners and the "
                    "auditors of its merge may fetch its local snapshots")  # fmt: skip
        parts = cut(specs, len(shards))
        span = chunk_span if kind == "local" else (lambda part: masked_chunks(specs, part))
        owned = [span(p) for p, s in zip(parts, shards, strict=True) if s["owner"] == caller]
        if chunks not in owned:
            return f"{caller} owns no shard held by chunks {chunks[0]}-{chunks[1]} of round {round}"
        return None

    def _forget_shards(self, r: int) -> None:
        """Drop what this site noted about the shards of rounds up to `r` (over)."""
        self._sharded = {k for k in self._sharded if k[0] > r}
        self._assembly_tried = {k for k in self._assembly_tried if k[0] > r}
        self._unfetched = {k for k in self._unfetched if k[0] > r}
        for old in [k for k in self._assembled if k < r]:
            del self._assembled[old]

    def _is_the_shards(self, record: Mapping[str, Any]) -> bool:
        """Whether the merged model of sharded round `record` that this site fetched whole
        is the one its shards on the ledger make (else it is refused and forgotten)."""
        r, digest = record["round"], record["digest"]
        found = self.server.store.find("merged", r, digest)
        specs = list((self._model_structure() or {}).values())
        problem = (
            "it is gone" if found is None else shards_mismatch(found.data, specs, record["shards"])
        )
        if problem is None:
            return True
        self.server.store.forget("merged", r)
        log.error("%s: merged model of round %d refused: %s", self.name, r, problem)
        self._report_refused(r, digest, f"not what its shards make: {problem}")
        return False

    def _lead_sharded(self, view: dict[str, Any], r: int) -> None:
        """As the leader of a sharded round: propose the model its shards assembled to."""
        _, digest, problem = self._assembled.get(r, ((), None, "not assembled"))
        found = None if digest is None else self.server.store.find("merged", r, digest)
        if found is None:
            log.error("%s: cannot propose the merge of round %d: its shards %s", self.name, r,
                      problem)  # fmt: skip
            return
        payload: dict[str, Any] = {"digest": digest, "size": len(found.data)}
        if view["current"]["shard_excluded"]:
            payload["excluded"] = view["current"]["shard_excluded"]
        outcome = self._submit("merged", r, payload)
        if not outcome.applied:
            log.warning("%s: merged of round %d refused: %s", self.name, r, outcome.reason)

    def _merge_shard(self, view: dict[str, Any], local: _Local, index: int) -> None:
        """As the owner of shard `index`: merge it, serve it, record it on the ledger."""
        r = local.round
        specs = list((self._model_structure() or {}).values())
        try:
            if not specs:
                raise MergeInputError("this site does not know the swarm's model yet")
            if view["current"].get("secagg") is not None:
                with self._timed("merge"):
                    masked = self._masked.merge_shard(view, r, index, self._model_structure())
                if masked is None:
                    return
                got = masked
            else:
                got = self._shard_merger.run(view, r, index, local.data, specs)
        except (MergeInputError, CodecError, ValueError) as exc:  # (then others take over)
            log.error("%s: merge of shard %d of round %d failed: %s", self.name, index, r, exc)
            return
        self.server.store.publish("shard", r, got.digest, got.data, got.leaves)
        payload: dict[str, Any] = {"index": index, "digest": got.digest, "root": got.root,
                                   "size": len(got.data)}  # fmt: skip
        if got.excluded:
            payload["excluded"] = got.excluded
        outcome = self._submit("shard", r, payload)
        if outcome.applied:
            self._see_applied(outcome)
        else:
            log.info("%s: shard %d of round %d refused: %s", self.name, index, r, outcome.reason)

    def _assemble(self, view: dict[str, Any], r: int) -> tuple[str | None, str | None]:
        """Fetch every shard of round `r` from its owner (each checked chunk by chunk) and
        join them; the merged model is kept to be served once the leader proposes it.
        Returns its digest, or why the shards did not give a model."""
        shards = view["current"]["shards"]
        specs = list((self._model_structure() or {}).values())
        if not specs:
            return None, "cannot be checked: this site does not know the swarm's model yet"
        try:
            with self._timed("transfer"):
                data = self._shard_assembly.join(view, r, shards, specs, self.transport.zstd)
        except ShardsUnavailable as exc:  # voted on once their time is up; meanwhile the
            log.warning("%s: cannot assemble the shards of round %d: %s", self.name, r, exc)
            self._unfetched.update((r, i, posted_as(shards[i])) for i in exc.indices)
            return None, None  # leader's copy is fetched, checked against the shards
        except ExchangeError as exc:
            log.warning("%s: cannot assemble the shards of round %d: %s", self.name, r, exc)
            return None, None
        try:
            with self._timed("load"):
                params = self.transport.unpack(data, self._own_structure, copy=False)
                problem = None if self._own_structure is None else (
                    mismatch(self._own_structure, params)
                )  # fmt: skip
                if problem is None:
                    check_finite(params)
                digest = digest_encoded(data)
                del params  # views of `data`
        except CodecError as exc:
            problem = f"malformed: {exc}"
        if problem is not None:
            log.error("%s: the shards of round %d do not give a model: %s", self.name, r,
                      problem)  # fmt: skip
            return None, problem
        self.server.store.publish("merged", r, digest, data)
        return digest, None

    def _audit(self, view: dict[str, Any], local: _Local) -> None:
        """Recompute the merge awaiting audit from the same snapshots and attest the digest
        found (or why it could not be recomputed). A merge found identical is kept, so this
        site need not fetch it once it counts."""
        r, audit = local.round, view["current"]["audit"]
        try:
            found = self._leader.recompute(view, r, local.data, self._model_structure(),
                                           self._capped(2**62))  # fmt: skip
        except MergeInputError as exc:
            log.warning("%s: cannot recompute the merge of round %d by %s: %s", self.name, r,
                        audit["leader"], exc)  # fmt: skip
            payload: dict[str, Any] = {"refused": str(exc)[:500]}
        else:
            payload = {"digest": found.digest, "size": len(found.data)}
            shards = view["current"].get("shards")
            if found.digest == audit["digest"]:
                self.server.store.publish("merged", r, found.digest, found.data)
            elif shards:  # name the shards its owners merged wrongly (they are merged again)
                specs = list((self._model_structure() or {}).values())
                payload["shards"] = differing_shards(found.data, specs, shards)
                log.warning("%s: the merge of round %d by %s is not what its inputs give: "
                            "shards %s are wrong", self.name, r, audit["leader"],
                            payload["shards"])  # fmt: skip
            else:
                log.warning("%s: the merge of round %d by %s is not what its inputs give "
                            "(recomputed %s…, published %s…)", self.name, r, audit["leader"],
                            found.digest[:12], audit["digest"][:12])  # fmt: skip
        outcome = self._submit("attest", r, payload)
        if not outcome.applied:
            log.info("%s: attestation for round %d refused: %s", self.name, r, outcome.reason)
        self._see_applied(outcome)

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
        height, view = self._state()
        while True:
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
                height, view = self._state()
                continue
            if not self._alive_unfinished(view):
                return self._final(view)
            offered = contribution()
            if offered is not None and self.name not in current["ready"]:
                self.sync(offered, retry=False)
                height, view = self._state()
            else:  # a change, or members falling silent, may end it
                height, view = self._state(height, 1.0)

    def _final(self, view: dict[str, Any]) -> RoundResult | None:
        """Fetch the final model, then keep serving it until every live site holds it."""
        for attempt in range(1, _FINAL_ATTEMPTS + 1):
            latest = view["latest_merged"]
            if latest is None:
                return None
            r, digest = latest["round"], latest["digest"]
            try:
                params = self._fetch_merged(latest, [latest["leader"]])
                break
            except SwarmError as exc:  # reported: the contract falls back to the merge before
                log.warning("%s: final model of round %d: %s", self.name, r, exc)
                if attempt == _FINAL_ATTEMPTS:
                    raise
                view = self.view()
        if self.name not in latest["holders"]:
            with contextlib.suppress(SwarmError):
                self._submit("loaded", r, {"digest": digest})
        deadline = time.monotonic() + _FINAL_HANDOVER_S
        height, view = self._state()
        while time.monotonic() < deadline:
            holders = set((view["latest_merged"] or {}).get("holders", []))
            typed, now = RoundView.from_state(view), time.time()
            missing = [
                name
                for name, member in typed.members.items()
                if member.active and name not in holders
                and member.present(now, self.settings.presence_timeout_s)
            ]  # fmt: skip
            if not missing:
                break
            height, view = self._state(height, 1.0)
        self.current_digest = digest
        return RoundResult(r, params, digest, latest["leader"], ())


def _just_behind(state: dict[str, Any] | None, round: int, caller: str) -> bool:
    """Whether `state` may simply not have applied the seal of `round` yet, or the
    handover of its leadership to `caller` (ranked in that round)."""
    if state is None:
        return False
    current = state["current"]
    if state["round"] == round - 1 or (state["round"] == round and not current["sealed"]):
        return True
    return state["round"] == round and caller in (current.get("ranking") or [])


def _fetch_refusal(
    state: dict[str, Any] | None, caller: str, kind: str, round: int, contract: str
) -> str | None:
    """Why `caller` may not fetch this site's `kind` model of `round`, or None if it may."""
    member = (state or {}).get("members", {}).get(caller)
    if state is None or member is None or not member["active"]:
        return f"{caller} is not an active member of {contract}"
    if kind in ("merged", "shard"):
        return None
    current = state["current"]
    if current.get("secagg") is not None and kind != "masked":
        return f"round {round} is securely aggregated: no site hands out its plaintext model"
    auditors = (current.get("audit") or {}).get("auditors", ())
    if (
        state["round"] != round
        or not current["sealed"]
        or (current["leader"] != caller and caller not in auditors)
    ):
        return (f"only the current leader of round {round}, its shard owners and the "
                "auditors of its merge may fetch its local snapshots")  # fmt: skip
    return None
