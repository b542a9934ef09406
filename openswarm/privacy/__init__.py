"""Differential privacy for a site: the accountant and its settings (pure: no network).

`accountant` turns noise multipliers and release counts into ε at a given δ (Google's
dp-accounting, RDP) and calibrates noise to a budget; `budget` holds a site's settings."""

from openswarm.privacy.accountant import (
    calibrate_sgd_noise,
    calibrate_site_noise,
    sgd_epsilon,
    site_epsilon,
)
from openswarm.privacy.budget import DP_MODES, PrivacyBudget, PrivacyError

__all__ = [
    "DP_MODES",
    "PrivacyBudget",
    "PrivacyError",
    "calibrate_sgd_noise",
    "calibrate_site_noise",
    "sgd_epsilon",
    "site_epsilon",
]
