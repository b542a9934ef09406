"""A site's differential-privacy settings, checked: mode, clip norm, noise, δ, budget."""

from __future__ import annotations

import math
from dataclasses import dataclass

from openswarm.protocol import SwarmError

#: "site": each round's update leaves clipped and noised (the unit is the site's data set);
#: "sgd": DP-SGD inside local training (the unit is one record).
DP_MODES = ("site", "sgd")
#: What one unit of privacy is under each mode (reported on the ledger).
DP_UNITS = {"site": "site", "sgd": "record"}


class PrivacyError(SwarmError):
    """Differential-privacy settings that cannot work, or the library missing."""


def _positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PrivacyError(f"{name} must be a number > 0, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise PrivacyError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PrivacyBudget:
    """One site's DP settings. `noise` is the noise multiplier z (std = z * clip); `epsilon`
    the budget: the site stops contributing before its ε would exceed it (None: no stop).
    In "sgd" mode clip and noise live in the Opacus optimizer and are read from there."""

    mode: str
    clip: float = 1.0
    noise: float | None = None
    delta: float = 1e-5
    epsilon: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in DP_MODES:
            raise PrivacyError(f"dp must be one of {', '.join(DP_MODES)} (or None), "
                               f"got {self.mode!r}")  # fmt: skip
        _positive(self.clip, "dp_clip")
        if self.noise is not None:
            _positive(self.noise, "dp_noise")
        if (
            isinstance(self.delta, bool)
            or not isinstance(self.delta, int | float)
            or not (0 < self.delta < 1)
        ):
            raise PrivacyError(f"dp_delta must be in (0, 1), e.g. 1e-5, got {self.delta!r}")
        if self.epsilon is not None:
            _positive(self.epsilon, "dp_epsilon")
        if self.mode == "site" and self.noise is None and self.epsilon is None:
            raise PrivacyError("dp='site' needs dp_noise (the noise multiplier) or dp_epsilon "
                               "(a budget to calibrate the noise to, with dp_rounds)")  # fmt: skip

    @property
    def unit(self) -> str:
        """What ε protects: "site" (the site's whole data set) or "record" (one record)."""
        return DP_UNITS[self.mode]
