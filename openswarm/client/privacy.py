"""A site's differential privacy in the session: what may leave the site, and its ε so far.

Site-level ("site"): what leaves in each round is ``anchor + clip(update, C) + N(0, (zC)²)``
per coordinate, where the anchor is the last merged model the site loaded and the update
its parameters minus the anchor over the float tensors (one global L2 norm). Each release
is a Gaussian mechanism on the site's whole data set. DP-SGD ("sgd"): the noise is added
in training (Opacus); a release is post-processing and costs nothing more, ε grows with the
optimizer's steps. Either way the site stops releasing before its ε would exceed its
budget. This module never touches the network; the noise comes from a fresh OS-seeded
generator, never a fixed seed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from openswarm.client.drift import _numpy
from openswarm.codec import decode, encode
from openswarm.privacy import (
    PrivacyBudget,
    PrivacyError,
    calibrate_site_noise,
    sgd_epsilon,
    site_epsilon,
)


@dataclass
class SgdSteps:
    """What DP-SGD spent so far: Opacus's noise multiplier and sample rate, and the number
    of noised optimizer steps (counted by `openswarm.torch.make_private`)."""

    noise: float
    sample_rate: float
    steps: int = 0


class SitePrivacy:
    """One site's DP state: releases made, the anchor, whether its budget is spent.

    `rounds` (site mode with no noise given) is the number of releases the budget is
    calibrated for; `sgd` (sgd mode) reads the optimizer's `SgdSteps`."""

    def __init__(self, budget: PrivacyBudget, *, rounds: int | None = None,
                 sgd: Callable[[], SgdSteps] | None = None) -> None:  # fmt: skip
        self.budget = budget
        self._sgd = sgd
        if budget.mode == "sgd" and sgd is None:
            raise PrivacyError(
                "dp='sgd' needs a DP-SGD optimizer: with PyTorch, "
                "openswarm.torch.make_private(...) and SwarmCallback(optimizer=)"
            )
        if budget.mode == "site" and budget.noise is None:
            if rounds is None:
                raise PrivacyError("dp_epsilon without dp_noise needs dp_rounds: how many "
                                   "rounds to calibrate the noise for")  # fmt: skip
            assert budget.epsilon is not None
            self.noise = calibrate_site_noise(budget.epsilon, rounds, budget.delta)
        else:
            self.noise = budget.noise if budget.mode == "site" else sgd().noise  # type: ignore[misc]
        self.releases = 0  # what left the site (site mode: each a noised update)
        self.spent = False
        self.anchor: dict[str, np.ndarray] = {}
        self._rng = np.random.default_rng(secrets.randbits(128))

    # --- the accounting -------------------------------------------------------------------
    def epsilon(self, extra: int = 0) -> float:
        """ε so far at the budget's δ (`extra`: after that many more releases)."""
        delta = self.budget.delta
        if self.budget.mode == "site":
            return site_epsilon(self.noise, self.releases + extra, delta)
        assert self._sgd is not None
        steps = self._sgd()
        return sgd_epsilon(steps.noise, steps.sample_rate, steps.steps, delta)

    def record(self) -> dict[str, Any]:
        """The privacy record for the ledger's metrics."""
        return {"epsilon": self.epsilon(), "delta": self.budget.delta, "unit": self.budget.unit,
                "mode": self.budget.mode, "spent": self.spent}  # fmt: skip

    def may_release(self) -> bool:
        """Whether one more release stays within the budget (once not, never again)."""
        if not self.spent and self.budget.epsilon is not None:
            after = self.epsilon(extra=1 if self.budget.mode == "site" else 0)
            self.spent = after > self.budget.epsilon
        return not self.spent

    # --- what leaves ----------------------------------------------------------------------
    def loaded(self, params: Mapping[str, Any]) -> None:
        """Keep the merged model the site just loaded: the anchor of its next update."""
        if self.budget.mode == "site":
            arrays = _numpy(params)
            self.anchor = {n: np.array(v, copy=True) for n, v in arrays.items()
                           if _is_float(v)}  # fmt: skip

    def release(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """What leaves the site for `params` (call `may_release` first); counts it."""
        arrays = decode(encode(params))  # a copy: the model trains on in place
        if self.budget.mode == "sgd":
            self.releases += 1
            return arrays
        floats = [n for n, v in arrays.items() if _is_float(v)]
        update = {n: arrays[n].astype(np.float64) - self.anchor.get(n, arrays[n]) for n in floats}
        norm = float(np.sqrt(sum(float(np.sum(u * u)) for u in update.values())))
        clip = self.budget.clip
        scale = min(1.0, clip / norm) if norm > 0 else 1.0
        std = self.noise * clip
        out = dict(arrays)
        for name in floats:
            base = self.anchor.get(name, arrays[name]).astype(np.float64)
            noisy = base + update[name] * scale + self._rng.normal(0.0, std, update[name].shape)
            out[name] = noisy.astype(arrays[name].dtype)
        self.releases += 1
        return out


def _is_float(value: Any) -> bool:
    kind = np.asarray(value).dtype
    return kind.kind == "f" or kind.name == "bfloat16"
