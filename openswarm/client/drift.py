"""Drift-aware local training: FedProx's proximal term and SCAFFOLD's control variates.

Between two merges each site drifts towards its own optimum. Two remedies correct the
local gradient ``g`` of every trainable tensor ``w``:

- **FedProx** (Li et al. 2020), ``proximal_mu``: ``g + mu * (w - w_merged)``, the gradient
  of ``mu/2 * ||w - w_merged||²`` added to the loss, where ``w_merged`` is the model of the
  last merge. No extra traffic.
- **SCAFFOLD** (Karimireddy et al. 2020), ``control_variates``: ``g + c - c_i``, with
  ``c_i`` this site's control variate and ``c`` the swarm's. At each sync the site takes as
  its new ``c_i`` the mean of its raw local gradients since the last merge: measured where
  the binding sees them (PyTorch's hooks), else estimated from the step as option II does,
  ``c_i - c + (w_merged - w) / (K * local_lr)`` (``K`` local steps), which assumes plain
  SGD steps of ``local_lr``. It sends ``c_i`` with its snapshot, as tensors named
  ``CONTROL_VARIATE_PREFIX + name``; the merge averages them like any tensor, so the merged
  model carries the swarm's ``c``. Costs one extra model's worth of bytes each way per
  round.

A binding applies the correction where it can: PyTorch adds it to each parameter's
gradient in backward (hooks, exact for any optimizer); the others (Keras, scikit-learn, a
`ModelAdapter` of one's own) step the weights after each batch,
``w <- w - local_lr * correction`` (exact for plain SGD, "decoupled" for others).
This module holds the state as numpy arrays and never touches the network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from openswarm.codec import decode, encode
from openswarm.protocol import CONTROL_VARIATE_PREFIX, SERVER_OPTIMIZERS, SwarmError

#: Merge methods whose merged control variate is the swarm's mean of them (SCAFFOLD's c):
#: the robust ones pick or trim sites' variates apart from their models.
CONTROL_VARIATE_METHODS = ("mean", *SERVER_OPTIMIZERS)


def variate_name(name: str) -> str:
    """The name tensor `name`'s control variate travels under."""
    return CONTROL_VARIATE_PREFIX + name


def is_variate(name: str) -> bool:
    """Whether `name` is a control variate's (not the model's)."""
    return name.startswith(CONTROL_VARIATE_PREFIX)


class Drift:
    """One site's drift correction: the last merged model and the control variates.

    `trainable` names the tensors that get gradients (None: every float tensor)."""

    def __init__(self, *, proximal_mu: float = 0.0, control_variates: bool = False,
                 local_lr: float | None = None, merge_method: str = "mean") -> None:  # fmt: skip
        if isinstance(proximal_mu, bool) or not isinstance(proximal_mu, int | float):
            raise SwarmError(f"proximal_mu must be a number ≥ 0, got {proximal_mu!r}")
        if not (math.isfinite(proximal_mu) and proximal_mu >= 0):
            raise SwarmError(f"proximal_mu must be a finite number ≥ 0, got {proximal_mu!r}")
        if local_lr is not None and (
            isinstance(local_lr, bool)
            or not isinstance(local_lr, int | float)
            or not (math.isfinite(local_lr) and local_lr > 0)
        ):
            raise SwarmError(f"local_lr must be a finite number > 0, got {local_lr!r}")
        if control_variates and merge_method not in CONTROL_VARIATE_METHODS:
            raise SwarmError(
                f"control_variates need merge method mean or a server optimizer "
                f"({', '.join(SERVER_OPTIMIZERS)}), not {merge_method!r}: the swarm's control "
                "variate is the mean of the sites', and a robust method picks or trims them "
                "apart from the models"
            )
        self.proximal_mu = float(proximal_mu)
        self.control_variates = bool(control_variates)
        self.local_lr = None if local_lr is None else float(local_lr)
        self.trainable: frozenset[str] | None = None
        self.anchor: dict[str, np.ndarray] = {}  # the last merged model (trainable tensors)
        self.swarm_c: dict[str, np.ndarray] = {}
        self.site_c: dict[str, np.ndarray] = {}
        self._pending: dict[str, np.ndarray] = {}  # site_c as last offered
        # set by appliers that see the raw gradients (torch hooks): their mean per tensor
        # since the last merge, the site's new control variate (no step size needed)
        self.gradient_means: Callable[[], dict[str, np.ndarray]] | None = None
        self.steps = 0  # local steps since the last merge
        self.version = 0  # bumped at each load, so appliers refresh their copies

    @property
    def active(self) -> bool:
        return self.proximal_mu > 0 or self.control_variates

    def require_lr(self, fallback: float | None, why: str) -> float:
        """The local learning rate: `local_lr`, else `fallback` (e.g. the optimizer's);
        SwarmError naming the option if neither is known."""
        lr = self.local_lr if self.local_lr is not None else fallback
        if lr is None:
            raise SwarmError(
                f"{why} needs the local step size: pass local_lr= (the optimizer's learning "
                "rate; for SGD with momentum b, lr / (1 - b)), or with PyTorch optimizer="
            )
        return lr

    def _tracked(self, params: Mapping[str, Any]) -> Iterable[str]:
        for name, value in params.items():
            if is_variate(name):
                continue
            if self.trainable is not None and name not in self.trainable:
                continue
            kind = np.asarray(value).dtype
            if kind.kind == "f" or kind.name == "bfloat16":  # ml_dtypes' is no np.floating
                yield name

    # --- at a sync ------------------------------------------------------------------------
    def offer(self, params: Mapping[str, Any], lr: float | None = None) -> dict[str, Any]:
        """What this site sends: `params` (its model now, numpy), with its control variates
        updated from the steps since the last merge when SCAFFOLD is on."""
        if not self.control_variates:
            return dict(params)
        arrays = _numpy(params)
        names = list(self._tracked(arrays))
        # updated from the variates of the last merge every time (offering twice before a
        # merge offers the same), and kept once a merge is loaded
        self._pending = dict(self.site_c)
        means = self.gradient_means() if self.gradient_means is not None else {}
        if means:
            for name in names:
                if name in means:
                    self._pending[name] = means[name].astype(np.float32).reshape(arrays[name].shape)
        elif self.steps and self.anchor:
            step = self.require_lr(lr, "control_variates")
            scale = np.float32(1.0 / (self.steps * step))
            for name in names:
                w = arrays[name].astype(np.float32)
                c_i = self.site_c.get(name, np.zeros_like(w))
                c = self.swarm_c.get(name, np.zeros_like(w))
                self._pending[name] = c_i - c + (self.anchor[name] - w) * scale
        offered = dict(arrays)
        for name in names:
            variate = self._pending.get(name)
            if variate is None:
                variate = np.zeros(arrays[name].shape, np.float32)
            offered[variate_name(name)] = variate.reshape(arrays[name].shape)
        return offered

    def loaded(self, merged: Mapping[str, Any]) -> dict[str, Any]:
        """Take a merged model: keep it as the anchor (and the swarm's control variates it
        carries); returns the model's tensors, for the model to load."""
        model = without_variates(merged)
        if not self.active:
            return model
        arrays = _numpy(model)
        self.anchor = {n: arrays[n].astype(np.float32).copy() for n in self._tracked(arrays)}
        if self.control_variates:
            self.site_c = dict(self._pending)
            self.swarm_c = {
                n: np.asarray(merged[variate_name(n)], np.float32).copy()
                for n in self.anchor
                if variate_name(n) in merged
            }
        self.steps = 0
        self.version += 1
        return model

    # --- during local training ------------------------------------------------------------
    def correction(self, name: str, w: np.ndarray) -> np.ndarray | None:
        """What to add to tensor `name`'s gradient at weights `w`: ``mu*(w - anchor) +
        c - c_i``; None if nothing (not tracked, or no merge yet)."""
        anchor = self.anchor.get(name)
        if anchor is None:
            return None
        total = np.zeros(anchor.shape, np.float32)
        if self.proximal_mu:
            total += np.float32(self.proximal_mu) * (np.asarray(w, np.float32) - anchor)
        if self.control_variates and name in self.swarm_c:
            total += self.swarm_c[name]
            if name in self.site_c:
                total -= self.site_c[name].reshape(anchor.shape)
        return total

    def decoupled(self, params: Mapping[str, Any], lr: float) -> dict[str, Any]:
        """`params` after one corrective step ``w - lr * correction(w)`` (for platforms
        whose gradients this cannot reach)."""
        arrays = _numpy(params)
        stepped = dict(arrays)
        for name, value in arrays.items():
            w = np.asarray(value)
            corr = self.correction(name, w)
            if corr is not None:
                stepped[name] = (w.astype(np.float32) - np.float32(lr) * corr).astype(w.dtype)
        return stepped


def without_variates(params: Mapping[str, Any]) -> dict[str, Any]:
    """`params` without control variates: the model's tensors."""
    return {name: value for name, value in params.items() if not is_variate(name)}


def _numpy(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """`params` as numpy arrays (torch tensors through the codec, which keeps bfloat16)."""
    if all(isinstance(v, np.ndarray) for v in params.values()):
        return dict(params)
    return decode(encode(params))


__all__ = ["CONTROL_VARIATE_METHODS", "Drift", "is_variate", "variate_name", "without_variates"]
