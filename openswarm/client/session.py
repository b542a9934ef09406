"""The platform-neutral part of every binding: a `SwarmSession` over a `ModelAdapter`.

A binding is two small pieces:

- a **model adapter** (`ModelAdapter`): `get_params()` — the model's parameters as an
  ordered `{name: array or tensor}`; `set_params(params)` — load such a dict (numpy arrays)
  back into the model in place; `evaluate()` — `(loss, metric)` on the validation data,
  either may be None;
- **hooks** that call the session's steps — `train_begin()`, `batch_end()`,
  `epoch_end(epoch)`, `train_end()` — from the platform's own callbacks
  (`openswarm.client.base` has the plain-loop ones, `LoopCallback`).

The session does the rest through the peer runtime: it joins the swarm, counts batches,
syncs, loads merged models, reports metrics and runs the final sync.

For an implementer: parameter values are numpy arrays or torch tensors of a codec dtype
(`openswarm.codec.SUPPORTED_DTYPES`), with the same names, order, shapes and dtypes on every
site and in every round. `set_params` gets numpy arrays that may share one buffer: copy them
into the model, exactly — after the final sync the digest of `get_params()` must equal the
swarm's. `evaluate()` runs after each merge to report progress; its loss drives adaptive
sync. A step raises `SwarmError` (`openswarm.protocol`) when the swarm cannot go on.
`openswarm/client/sklearn.py` is a complete binding in this pattern.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from openswarm.client.drift import Drift, without_variates
from openswarm.client.privacy import SitePrivacy
from openswarm.codec import decode, digest, encode
from openswarm.codec.limits import MAX_NAME_BYTES
from openswarm.node.peer import RoundResult, SwarmPeer
from openswarm.node.settings import NetworkConfig, SwarmSettings
from openswarm.protocol import (
    CONTROL_VARIATE_PREFIX,
    LEADER_TIMEOUT_S,
    MERGE_METHOD,
    STATE_PREFIX,
    SwarmError,
)


def swarm_loopback() -> bool:
    """HPE's `SWARM_LOOPBACK=True`: check the parameters, then train alone, with no swarm
    (HPE's recommended pre-flight check of a program)."""
    return os.environ.get("SWARM_LOOPBACK", "").strip().lower() in ("true", "1", "yes")


def may_lead() -> bool:
    """HPE's `SL_MAKE_ME_ADMIN=False` in the environment: this site never leads a round."""
    return os.environ.get("SL_MAKE_ME_ADMIN", "").strip().lower() not in ("false", "0", "no")


def env_merge_memory() -> str:
    """HPE's `SL_RAM_INTENSIVE=False` in the environment: merge layer by layer ("layer")."""
    off = os.environ.get("SL_RAM_INTENSIVE", "").strip().lower() in ("false", "0", "no")
    return "layer" if off else "model"


def adaptive_bounds(start: int) -> dict[str, int]:
    """Adaptive sync's range: from a quarter to four times the starting interval."""
    return {"start": start, "min": max(1, start // 4), "max": start * 4}


@runtime_checkable
class ModelAdapter(Protocol):
    """What the swarm needs of a model: read, load and evaluate its parameters."""

    def get_params(self) -> Mapping[str, Any]: ...

    def set_params(self, params: Mapping[str, Any]) -> None: ...

    def evaluate(self) -> tuple[float | None, float | None]: ...


class SwarmSession:
    """One site's training run in the swarm: initial sync, periodic merges, a shared end."""

    def __init__(
        self,
        model: ModelAdapter,
        *,
        sync_frequency: int,
        min_peers: int,
        merge_method: str = MERGE_METHOD,
        merge_options: Mapping[str, Any] | None = None,
        node_weight: float = 1,
        training_contract: str | None = None,
        total_epochs: int | None = None,
        contribution: str = "snapshot",
        leader_timeout_s: float = LEADER_TIMEOUT_S,
        extra_window_s: float = 2.0,
        use_adaptive_sync: bool = False,
        presence_timeout_s: float = SwarmSettings.presence_timeout_s,
        ledger_retry_s: float = SwarmSettings.ledger_retry_s,
        lead: bool | None = None,
        weight_policy: str | None = None,
        audit: int | None = None,
        may_audit: bool = True,
        compression: str | None = None,
        merge_memory: str | None = None,
        merge_topology: str | None = None,
        secure_aggregation: bool | Mapping[str, Any] | None = None,
        network: NetworkConfig | None = None,
        logger: logging.Logger | None = None,
        proximal_mu: float = 0.0,
        control_variates: bool = False,
        local_lr: float | None = None,
        dp: str | None = None,
        dp_clip: float = 1.0,
        dp_noise: float | None = None,
        dp_epsilon: float | None = None,
        dp_delta: float = 1e-5,
        dp_rounds: int | None = None,
    ) -> None:
        if not isinstance(model, ModelAdapter):
            raise SwarmError(
                f"{type(model).__name__} is not a model adapter: it needs get_params(), "
                "set_params(params) and evaluate()"
            )
        if not isinstance(sync_frequency, int) or sync_frequency < 1:
            raise SwarmError(f"sync_frequency must be an integer ≥ 1, got {sync_frequency!r}")
        self.loopback = swarm_loopback()
        # In loopback no ledger is needed, so no network settings either.
        self.network = network or (None if self.loopback else NetworkConfig.load())
        network_contract = self.network.contract if self.network is not None else None
        self.settings = SwarmSettings(
            contract=training_contract or network_contract or SwarmSettings.contract,
            min_peers=min_peers,
            merge_method=merge_method,
            merge_options=dict(merge_options or {}),
            weight=float(node_weight),
            leader_timeout_s=leader_timeout_s,
            extra_window_s=extra_window_s,
            contribution=contribution,
            adaptive_sync=adaptive_bounds(sync_frequency) if use_adaptive_sync else None,
            presence_timeout_s=presence_timeout_s,
            heartbeat_s=min(SwarmSettings.heartbeat_s, presence_timeout_s / 3),
            ledger_retry_s=ledger_retry_s,
            lead=may_lead() if lead is None else bool(lead),
            weight_policy=weight_policy,
            audit=audit,
            audits=bool(may_audit),
            compression=compression,
            merge_memory=merge_memory or env_merge_memory(),
            merge_topology=merge_topology,
            secure_aggregation=secure_aggregation,
        )
        self.drift = Drift(proximal_mu=proximal_mu, control_variates=control_variates,
                           local_lr=local_lr, merge_method=merge_method)  # fmt: skip
        self.privacy = _site_privacy(model, dp, clip=dp_clip, noise=dp_noise,
                                     epsilon=dp_epsilon, delta=dp_delta, rounds=dp_rounds,
                                     control_variates=control_variates)  # fmt: skip
        self._released: dict[str, Any] | None = None  # the last release (public already)
        self._last_report: tuple[int, float, float | None] | None = None  # round, loss, metric
        self._stop_reported = False  # whether the spent budget was logged and reported
        self._hooked = False  # whether the adapter corrects gradients itself
        self._lr: float | None = None  # the local learning rate the correction uses
        self.sync_frequency = sync_frequency
        self.use_adaptive_sync = use_adaptive_sync
        self.total_epochs = total_epochs
        self.model = model
        self.logger = logger or logging.getLogger("openswarm")
        self.peer: SwarmPeer | None = None
        self.epoch = 0
        self.rounds = 0
        self.final_digest: str | None = None
        self.intervals: list[tuple[int, int]] = []  # (round, batches until the next one)
        # per round: seconds spent encoding, in the ledger, transferring, merging, loading
        self.round_timings: list[dict[str, float]] = []
        self._traffic_reported: dict[str, int] = {}  # peer.traffic() at the last report
        self._batches_since_sync = 0
        self._last_local: dict[str, Any] | None = None

    # --- the steps ------------------------------------------------------------------------
    def train_begin(self) -> None:
        """Join the swarm and start from the swarm's model (the latest merged one, if any)."""
        if self.use_adaptive_sync and self.model.evaluate()[0] is None:
            raise SwarmError(
                "adaptive sync decides from validation loss: give validation data "
                "(val_data, or adsValData in the HPE API)"
            )
        _check_names(self.model.get_params(),
                     self.drift.control_variates or self.settings.server_optimizer)  # fmt: skip
        if self.drift.active:
            self._start_drift()
        if self.privacy is not None:  # the untrained model: what the first update starts from
            self.privacy.loaded(self.model.get_params())
        if self.loopback:
            self._check_loopback()
            return
        assert self.network is not None
        self.peer = SwarmPeer(self.settings, self.network)
        self.peer.register()
        latest = self.peer.latest_merged(self._offer())
        if latest is not None:
            self.logger.info("%s: loading the latest merged model (round %d)",
                             self.peer.name, latest.round)  # fmt: skip
            self._load(latest)
        else:
            result = self.peer.sync(self._offer())
            self._load(result)
            if result.params is not None:
                self._report(result)

    def batch_end(self) -> None:
        """Count a batch; every `sync_frequency` batches, merge with the swarm."""
        if self.drift.active:
            self._correct_drift()
        if self.loopback or (self.privacy is not None and self.privacy.spent):
            return
        self._batches_since_sync += 1
        if self._batches_since_sync >= self.sync_frequency and self._may_release():
            self._sync()

    def epoch_end(self, epoch: int | None = None) -> None:
        self.epoch = self.epoch + 1 if epoch is None else epoch + 1

    def train_end(self) -> None:
        """Final sync, then stay in the swarm until every site is done; the model then holds
        the final merged parameters, identical on every peer (see `final_digest`)."""
        if self.loopback:
            self.final_digest = digest(self.model.get_params())
            self.logger.info("SWARM_LOOPBACK: trained alone; model %s", self.final_digest)
            return
        peer = self._require_peer()
        try:
            if self.privacy is not None:
                # only what was released may leave: the final update if the budget allows
                # it, and after that the last release (costs nothing more)
                if (self._batches_since_sync or self.rounds == 0) and self._may_release():
                    self._sync()
                self._last_local = self._released
            else:
                # "snapshot" contributes the site's own last local weights: copy them before
                # the final merge overwrites the model in place.
                self._last_local = decode(encode(self._offer()))
            if self.privacy is None and (self._batches_since_sync or self.rounds == 0):
                last = self._sync()
                if last.params is not None and peer.name not in last.participants:
                    # it caught up with the swarm rather than merging: what it offers now
                    # is the model it caught up with, not its stale one
                    self._last_local = decode(encode(self._offer()))
            result = peer.finish(self._contribution)
            if result is not None and result.params is not None:
                self._set_merged(result.params)
                self._report(result)  # the final model, after the last epoch
            self.final_digest = digest(self.model.get_params())
            # the swarm's final parameters as they arrived (with a lossy compression their
            # digest is not the ledger's, which covers the compressed form; a merged model
            # with an optimizer's state or control variates carries more than the model)
            extra = peer.carries_state or self.drift.control_variates
            swarm_digest = None if result is None else (
                result.digest
                if result.params is None or not (peer.transport.lossy_mode or extra)
                else digest(without_variates(result.params))
            )  # fmt: skip
            if swarm_digest is not None and swarm_digest != self.final_digest:
                raise SwarmError(
                    f"loaded final model has digest {self.final_digest[:12]}… but the swarm's "
                    f"is {str(swarm_digest)[:12]}…: set_params does not load exactly"
                )
            self.logger.info("%s: final model %s", peer.name, self.final_digest)
        finally:
            self._stop_drift()
            peer.close()

    def close(self) -> None:
        """Leave the swarm without finishing (after an error); `train_end` closes itself."""
        self._stop_drift()
        if self.peer is not None:
            self.peer.close()

    def _stop_drift(self) -> None:
        remove = getattr(self.model, "remove_drift", None)
        if callable(remove):
            remove()

    # --- internals ------------------------------------------------------------------------
    def _check_loopback(self) -> None:
        """What a swarm would need of the parameters, without a swarm (SwarmError if not)."""
        try:
            data = encode(self.model.get_params())
            decode(data)
        except Exception as exc:  # whatever the codec or the platform raises
            message = f"SWARM_LOOPBACK: the model's parameters cannot be synced: {exc}"
            raise SwarmError(message) from exc
        loss, _ = self.model.evaluate()
        self.logger.info(
            "SWARM_LOOPBACK: parameters checked (%d bytes encoded, loss %s); training alone, "
            "no swarm", len(data), "n/a" if loss is None else f"{loss:.4f}",
        )  # fmt: skip

    def _start_drift(self) -> None:
        """Set up the drift correction before training: gradient hooks where the adapter
        installs them (`install_drift`), else a corrective step after each batch, which
        needs the local learning rate (`local_lr`, or the adapter's `learning_rate()`)."""
        install = getattr(self.model, "install_drift", None)
        rate = getattr(self.model, "learning_rate", None)
        found = rate() if callable(rate) else None
        self._hooked = bool(install(self.drift)) if callable(install) else False
        if not self._hooked:
            self._lr = self.drift.require_lr(found, f"proximal_mu or control_variates with "
                                             f"{type(self.model).__name__}")  # fmt: skip
        else:  # the hooks measure the gradients: no step size needed
            self._lr = self.drift.local_lr or found

    def _correct_drift(self) -> None:
        """Count a local step; without gradient hooks, take the corrective step."""
        self.drift.steps += 1
        if not self._hooked and self.drift.anchor:
            assert self._lr is not None
            self.model.set_params(self.drift.decoupled(self.model.get_params(), self._lr))

    def _offer(self) -> Mapping[str, Any]:
        """What this site syncs: its model's parameters (and its control variates)."""
        params = self.model.get_params()
        return self.drift.offer(params, self._lr) if self.drift.control_variates else params

    def _release(self) -> Mapping[str, Any]:
        """What leaves the site in a round: its offer, privatised under DP (and kept)."""
        offered = self._offer()
        if self.privacy is None:
            return offered
        self._released = self.privacy.release(offered)
        return self._released

    def _may_release(self) -> bool:
        """Whether the privacy budget allows one more release; reports the stop once."""
        if self.privacy is None or self.privacy.may_release():
            return True
        if not self._stop_reported:
            self._stop_reported = True
            budget = self.privacy.budget
            self.logger.warning(
                "privacy budget spent: ε would exceed %g (δ=%g, per %s); this site stops "
                "contributing and only receives the swarm's model", budget.epsilon,
                budget.delta, budget.unit,
            )  # fmt: skip
            if self._last_report is not None:
                self._send_metrics(*self._last_report)
        return False

    def _require_peer(self) -> SwarmPeer:
        if self.peer is None:
            raise SwarmError("call train_begin() (on_train_begin) before the other steps")
        return self.peer

    def _sync(self) -> RoundResult:
        peer = self._require_peer()
        self._batches_since_sync = 0
        result = peer.sync(self._release())
        self._load(result)
        if result.params is not None:
            self._report(result)
        return result

    def _load(self, result: RoundResult) -> None:
        if result.params is not None:
            started = time.perf_counter()
            self._set_merged(result.params)
            result.timings["load"] = time.perf_counter() - started
            self.rounds += 1
            self.round_timings.append(dict(result.timings))
        if self.use_adaptive_sync and result.sync_interval:
            if result.sync_interval != self.sync_frequency:
                self.logger.info("adaptive sync: next round after %d batches (was %d)",
                                 result.sync_interval, self.sync_frequency)  # fmt: skip
            self.sync_frequency = result.sync_interval
        self.intervals.append((result.round, self.sync_frequency))

    def _set_merged(self, merged: Mapping[str, Any]) -> None:
        """Load a merged model (and keep it as the next update's anchor under DP)."""
        params = self.drift.loaded(merged)
        self.model.set_params(params)
        if self.privacy is not None:
            self.privacy.loaded(params)

    def _report(self, result: RoundResult) -> None:
        """Report the validation loss after `result`'s round, with its phases and traffic."""
        loss, metric = self.model.evaluate()
        if loss is None or not math.isfinite(loss):
            return
        self._last_report = (result.round, loss, metric)
        self._send_metrics(result.round, loss, metric, result.timings)

    def _send_metrics(self, round: int, loss: float, metric: float | None,
                      phases: Mapping[str, float] | None = None) -> None:  # fmt: skip
        peer = self._require_peer()
        total = peer.traffic()
        traffic = {k: total[k] - self._traffic_reported.get(k, 0) for k in total}
        privacy = None if self.privacy is None else self.privacy.record()
        try:
            peer.report_metrics(
                round, loss, metric, min(self.epoch, self.total_epochs or self.epoch),
                self.total_epochs, phases=phases, traffic=traffic, privacy=privacy,
            )  # fmt: skip
            self._traffic_reported = total
        except SwarmError as exc:
            self.logger.warning("could not report metrics: %s", exc)

    def _contribution(self) -> Mapping[str, Any] | None:
        mode = self.settings.contribution
        if mode == "inactive":
            return None
        if mode == "active":
            latest = self._require_peer().latest_merged()
            return self._offer() if latest is None else latest.params
        return self._last_local


def _site_privacy(model: ModelAdapter, dp: str | None, *, clip: float, noise: float | None,
                  epsilon: float | None, delta: float, rounds: int | None,
                  control_variates: bool) -> SitePrivacy | None:  # fmt: skip
    """The session's DP state for option `dp` (None: no DP); PrivacyError when the options
    cannot work together."""
    if dp is None:
        return None
    from openswarm.privacy import PrivacyBudget, PrivacyError

    budget = PrivacyBudget(dp, clip=clip, noise=noise, delta=delta, epsilon=epsilon)
    if control_variates:
        raise PrivacyError(
            "dp cannot run with control_variates: SCAFFOLD's variates are made from the raw "
            "local gradients and would leave the site without noise; use proximal_mu instead"
        )
    sgd = None
    if dp == "sgd":
        sgd = getattr(model, "dp_sgd_steps", None)
        if not callable(sgd) or sgd() is None:
            raise PrivacyError(
                f"dp='sgd' needs DP-SGD in training, which {type(model).__name__} does not "
                "have: with PyTorch, model, optimizer, loader = openswarm.torch.make_private"
                "(...) and SwarmCallback(model, ..., optimizer=optimizer); other platforms: "
                "dp='site'"
            )
    return SitePrivacy(budget, rounds=rounds, sgd=sgd)


def _check_names(params: Mapping[str, Any], prefixed: bool) -> None:
    """SwarmError if a tensor's name takes a prefix the swarm keeps for its own tensors (a
    server optimizer's state, SCAFFOLD's control variates), which it would be taken for, or
    (`prefixed`: the swarm adds such tensors) is too long to carry one."""
    longest = max(len(STATE_PREFIX) + 2, len(CONTROL_VARIATE_PREFIX))  # "openswarm:opt/v/"
    for name in params:
        if not isinstance(name, str):
            continue
        for prefix in (STATE_PREFIX, CONTROL_VARIATE_PREFIX):
            if name.startswith(prefix):
                raise SwarmError(
                    f"tensor {name[:80]!r} starts with {prefix!r}, which the swarm keeps for its "
                    "own tensors: rename it (e.g. a module or layer name)"
                )
        if prefixed and len(name.encode("utf-8")) + longest > MAX_NAME_BYTES:
            raise SwarmError(
                f"tensor name {name[:40]!r}… is too long: the swarm's state and control "
                f"variates of it add {longest} bytes to a limit of {MAX_NAME_BYTES}; shorten it"
            )
