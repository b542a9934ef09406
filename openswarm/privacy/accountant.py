"""ε for δ through Google's dp-accounting (RDP), and noise calibrated to a target ε.

Site-level DP: each round's release is a Gaussian mechanism on the site's clipped update
(sensitivity C, noise z·C), composed over the releases. DP-SGD: each optimizer step is a
Poisson-subsampled Gaussian (sample rate q, noise multiplier z), composed over the steps.
Neighbouring data sets differ by adding or removing one unit (a site's data set, a record).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Iterator
from types import ModuleType

from openswarm.privacy.budget import PrivacyError


def _library() -> ModuleType:
    try:
        import dp_accounting
    except ImportError:
        raise PrivacyError(
            "differential privacy needs Google's dp-accounting: pip install 'openswarm[privacy]'"
        ) from None
    return dp_accounting


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """dp-accounting logs (through absl) each RDP order it cannot evaluate and leaves out of
    the minimum: expected for small orders of subsampled mechanisms, not news to a user."""
    log = logging.getLogger("absl")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _epsilon(event: object, delta: float) -> float:
    dp = _library()
    accountant = dp.rdp.RdpAccountant()
    with _quiet():
        accountant.compose(event)
        return float(accountant.get_epsilon(delta))


@functools.lru_cache(maxsize=4096)
def site_epsilon(noise: float, releases: int, delta: float) -> float:
    """ε after `releases` Gaussian releases of noise multiplier `noise` (0 releases: 0)."""
    if releases <= 0:
        return 0.0
    dp = _library()
    return _epsilon(dp.SelfComposedDpEvent(dp.GaussianDpEvent(noise), releases), delta)


@functools.lru_cache(maxsize=4096)
def sgd_epsilon(noise: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε after `steps` DP-SGD steps (Poisson sampling at `sample_rate`, multiplier `noise`)."""
    if steps <= 0:
        return 0.0
    dp = _library()
    step = dp.PoissonSampledDpEvent(sample_rate, dp.GaussianDpEvent(noise))
    return _epsilon(dp.SelfComposedDpEvent(step, steps), delta)


def _calibrate(epsilon_of: object, target: float, delta: float) -> float:
    dp = _library()
    if not (math.isfinite(target) and target > 0):
        raise PrivacyError(f"the ε budget must be a finite number > 0, got {target!r}")
    with _quiet():
        noise = dp.calibrate_dp_mechanism(
            dp.rdp.RdpAccountant, epsilon_of, target, delta,
            bracket_interval=dp.LowerEndpointAndGuess(1e-3, 1.0), tol=1e-4,
        )  # fmt: skip
    return float(noise)


def calibrate_site_noise(epsilon: float, releases: int, delta: float) -> float:
    """The noise multiplier whose `releases` Gaussian releases spend at most `epsilon`."""
    if not isinstance(releases, int) or releases < 1:
        raise PrivacyError(f"planned releases (dp_rounds) must be an integer ≥ 1, got {releases!r}")
    dp = _library()
    return _calibrate(
        lambda z: dp.SelfComposedDpEvent(dp.GaussianDpEvent(z), releases), epsilon, delta
    )


def calibrate_sgd_noise(epsilon: float, sample_rate: float, steps: int, delta: float) -> float:
    """The DP-SGD noise multiplier that spends at most `epsilon` over `steps` steps."""
    if not isinstance(steps, int) or steps < 1:
        raise PrivacyError(f"planned steps must be an integer ≥ 1, got {steps!r}")
    if not 0 < sample_rate <= 1:
        raise PrivacyError(f"the sample rate must be in (0, 1], got {sample_rate!r}")
    dp = _library()
    return _calibrate(
        lambda z: dp.SelfComposedDpEvent(
            dp.PoissonSampledDpEvent(sample_rate, dp.GaussianDpEvent(z)), steps
        ),
        epsilon,
        delta,
    )
