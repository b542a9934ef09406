"""HPE's SwarmCallback keywords, checked and mapped onto openswarm's binding keywords.

Shared by `swarmlearning.pyt`, `swarmlearning.tf` and `swarmlearning.hf_transformers`:

```python
options = hpe_options(syncFrequency, minPeers, trainingContract, kwargs, "pyt")
```

gives the keyword arguments of the openswarm binding (`sync_frequency`, `min_peers`,
`training_contract`, `val_data`, `contribution`, …). An unknown keyword is a `TypeError`
that names it; a keyword of another platform, or a bad value, a `ValueError` that names it.
HPE's defaults are filled in explicitly, so they hold whatever openswarm's own defaults are.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from openswarm import DEFAULT_CONTRACT
from openswarm.protocol import CONTRIBUTIONS, HF_MODES

# HPE keyword -> openswarm keyword, for every platform
COMMON_KEYWORDS: dict[str, str] = {
    "useAdaptiveSync": "use_adaptive_sync",
    "adsValData": "val_data",
    "adsValBatchSize": "val_batch_size",
    "checkinModelOnTrainEnd": "contribution",
    "nodeWeightage": "node_weight",
    "mergeMethod": "merge_method",
    "totalEpochs": "total_epochs",
    "model": "model",
    "logger": "logger",
    # openswarm's own, beyond HPE's: a server optimizer's options, FedProx, SCAFFOLD
    "mergeOptions": "merge_options",
    "proximalMu": "proximal_mu",
    "controlVariates": "control_variates",
    "localLearningRate": "local_lr",
    # differential privacy (openswarm.privacy): mode, clip norm, noise, budget, δ, rounds
    "dp": "dp",
    "dpClip": "dp_clip",
    "dpNoise": "dp_noise",
    "dpEpsilon": "dp_epsilon",
    "dpDelta": "dp_delta",
    "dpRounds": "dp_rounds",
    "secureAggregation": "secure_aggregation",  # masked updates (contract setting)
}

# HPE keyword -> openswarm keyword, for one platform only
PLATFORM_KEYWORDS: dict[str, dict[str, str]] = {
    "pyt": {
        "lossFunction": "loss_fn",
        "lossFunctionArgs": "loss_args",
        "metricFunction": "metric_fn",
        "metricFunctionArgs": "metric_args",
    },
    "tf": {},
    "hf": {"hfMode": "hf_mode"},
    "base": {},  # swarmlearning.client.swarm: a platform's own keywords are its own to check
}

# HPE's defaults (openswarm keyword -> value), filled in when a keyword is not given
HPE_DEFAULTS: dict[str, Any] = {
    "use_adaptive_sync": False,
    "contribution": "snapshot",
    "node_weight": 1,
    "merge_method": "mean",
}
PLATFORM_DEFAULTS: dict[str, dict[str, Any]] = {
    "pyt": {}, "tf": {}, "hf": {"hf_mode": "full"}, "base": {},
}  # fmt: skip

# what `mlPlatform` / `ml_platform` may say for each module (compared upper-case)
PLATFORM_NAMES: dict[str, tuple[str, ...]] = {
    "pyt": ("PYT", "PYTORCH", "TORCH"),
    "tf": ("TF", "TENSORFLOW", "KERAS"),
    "hf": ("HF", "HF_TRANSFORMERS", "HUGGINGFACE", "TRANSFORMERS", "PYT", "PYTORCH"),
}
# (a platform built on swarmlearning.client.swarm names itself: any mlPlatform is accepted)
MODULES: dict[str, str] = {
    "pyt": "swarmlearning.pyt",
    "tf": "swarmlearning.tf",
    "hf": "swarmlearning.hf_transformers",
    "base": "swarmlearning.client.swarm",
}
PLATFORM_KEYS = ("mlPlatform", "ml_platform")


def hpe_options(
    sync_frequency: Any,
    min_peers: Any,
    training_contract: Any,
    kwargs: Mapping[str, Any],
    platform: str,
) -> dict[str, Any]:
    """All openswarm keywords for `SwarmCallback(syncFrequency, minPeers, trainingContract,
    **kwargs)` of `platform` ("pyt", "tf" or "hf").

    The HPE default contract becomes `training_contract=None`, so a contract named by the
    network configuration (`OPENSWARM_CONTRACT`, set by `openswarm run`) applies; its own
    fallback is that same default.
    """
    options = map_hpe_kwargs(kwargs, platform)
    options["sync_frequency"] = _positive_int("syncFrequency", sync_frequency)
    options["min_peers"] = _positive_int("minPeers", min_peers)
    if not isinstance(training_contract, str) or not training_contract:
        raise ValueError(f"trainingContract must be a non-empty string, got {training_contract!r}")
    options["training_contract"] = (
        None if training_contract == DEFAULT_CONTRACT else training_contract
    )
    if options.get("logger") is None:
        options["logger"] = hpe_logger()
    return options


def hpe_logger() -> logging.Logger:
    """The callback's logger as HPE's behaves: INFO and above to standard output, unless the
    program configured logging itself (then records go where it said)."""
    logger = logging.getLogger("swarmlearning")
    if logger.handlers or logging.getLogger().handlers:
        return logger
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def map_hpe_kwargs(kwargs: Mapping[str, Any], platform: str) -> dict[str, Any]:
    """HPE keyword arguments -> openswarm keyword options of `platform`'s binding."""
    if platform not in PLATFORM_KEYWORDS:
        raise ValueError(f"unknown platform {platform!r}; one of {', '.join(PLATFORM_KEYWORDS)}")
    renamed = {**COMMON_KEYWORDS, **PLATFORM_KEYWORDS[platform]}
    _check_names(kwargs, renamed, platform)
    _check_platform(kwargs, platform)
    options = {**HPE_DEFAULTS, **PLATFORM_DEFAULTS[platform]}
    # a keyword given as None means "not given", as in HPE's signature
    options.update({renamed[k]: v for k, v in kwargs.items() if k in renamed and v is not None})
    _check_values(options)
    return options


def accepted_keywords(platform: str) -> list[str]:
    """Every keyword `platform`'s SwarmCallback accepts beyond the positional three."""
    return [*COMMON_KEYWORDS, *PLATFORM_KEYWORDS[platform], *PLATFORM_KEYS]


def _check_names(kwargs: Mapping[str, Any], renamed: Mapping[str, str], platform: str) -> None:
    given = [k for k in kwargs if k not in renamed and k not in PLATFORM_KEYS]
    elsewhere = {
        k: [MODULES[p] for p, names in PLATFORM_KEYWORDS.items() if k in names] for k in given
    }
    unknown = [k for k in given if not elsewhere[k]]
    if unknown:
        raise TypeError(
            f"SwarmCallback() got unknown keyword argument(s): {', '.join(map(repr, unknown))}; "
            f"{MODULES[platform]} accepts syncFrequency, minPeers, trainingContract, "
            f"{', '.join(accepted_keywords(platform))}"
        )
    if given:
        detail = "; ".join(f"{k!r} is for {' and '.join(elsewhere[k])} only" for k in given)
        extra = (
            " (Keras takes its loss and metrics from model.compile())" if platform == "tf" else ""
        )
        raise ValueError(f"{MODULES[platform]}.SwarmCallback: {detail}{extra}")


def _check_platform(kwargs: Mapping[str, Any], platform: str) -> None:
    if platform not in PLATFORM_NAMES:  # a platform of its own names itself
        return
    for key in PLATFORM_KEYS:
        if key not in kwargs or kwargs[key] is None:
            continue
        if str(kwargs[key]).upper() not in PLATFORM_NAMES[platform]:
            raise ValueError(
                f"{key}={kwargs[key]!r} does not match {MODULES[platform]} (which expects one of "
                f"{', '.join(PLATFORM_NAMES[platform])}); import SwarmCallback from the module "
                "of your platform"
            )


def _check_values(options: dict[str, Any]) -> None:
    if not isinstance(options["use_adaptive_sync"], bool):
        raise ValueError(
            f"useAdaptiveSync must be True or False, got {options['use_adaptive_sync']!r}"
        )
    if options["contribution"] not in CONTRIBUTIONS:
        raise ValueError(
            f"checkinModelOnTrainEnd must be one of {', '.join(CONTRIBUTIONS)}, "
            f"got {options['contribution']!r}"
        )
    weight = options["node_weight"]
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 100:
        raise ValueError(f"nodeWeightage must be an integer from 1 to 100, got {weight!r}")
    if not isinstance(options["merge_method"], str):
        raise ValueError(f"mergeMethod must be a name, got {options['merge_method']!r}")
    for hpe, key in (("totalEpochs", "total_epochs"), ("adsValBatchSize", "val_batch_size")):
        if options.get(key) is not None:
            options[key] = _positive_int(hpe, options[key])
    for hpe, key in (("lossFunctionArgs", "loss_args"), ("metricFunctionArgs", "metric_args")):
        if options.get(key) is not None and not isinstance(options[key], Mapping):
            raise ValueError(f"{hpe} must be a dict of keyword arguments, got {options[key]!r}")
    logger = options.get("logger")
    if logger is not None and not isinstance(logger, logging.Logger):
        raise ValueError(f"logger must be a logging.Logger, got {type(logger).__name__}")
    if "hf_mode" in options and options["hf_mode"] not in HF_MODES:
        raise ValueError(f"hfMode must be one of {', '.join(HF_MODES)}, got {options['hf_mode']!r}")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}")
    return value
