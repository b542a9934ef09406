"""HPE Swarm Learning's Keras API: `SwarmCallback`, a Keras callback for `model.fit`.

```python
from swarmlearning.tf import SwarmCallback
cb = SwarmCallback(syncFrequency=20, minPeers=3, adsValData=(x_val, y_val))
model.fit(x, y, epochs=5, callbacks=[cb])
```

Needs Keras 3: `tf.keras` of TensorFlow ≥ 2.16 is Keras 3, and so is plain `keras` on the
JAX or PyTorch backend without TensorFlow. TensorFlow is never imported here; its version is
read from the installed package. HPE's keywords map onto `openswarm.keras.SwarmCallback`;
`adsValData` is `(x, y)`, `(x, y, sample_weight)` or a dataset, evaluated with
`adsValBatchSize`; loss and metric are those given to `model.compile()`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
from typing import Any

from openswarm import DEFAULT_CONTRACT
from swarmlearning._compat import hpe_options

TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly")


def keras2_problem() -> str | None:
    """Why `tf.keras` here is Keras 2 (which this callback cannot serve), or None."""
    if importlib.util.find_spec("tensorflow") is None:
        return None
    if os.environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true", "yes"):
        return "TF_USE_LEGACY_KERAS is set, so tf.keras is Keras 2: unset it"
    for dist in TENSORFLOW_DISTRIBUTIONS:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        major, minor = (int(n) for n in re.findall(r"\d+", version)[:2])
        if (major, minor) < (2, 16):
            return f"TensorFlow {version} ships Keras 2: install tensorflow>=2.16 (Keras 3)"
        return None
    return None


_problem = keras2_problem()
if _problem is not None:
    raise ImportError(f"swarmlearning.tf needs Keras 3; {_problem}")

from openswarm.client.keras import SwarmCallback as _KerasSwarmCallback  # noqa: E402


class SwarmCallback(_KerasSwarmCallback):
    """HPE's `SwarmCallback(syncFrequency, minPeers, trainingContract, **kwargs)` for Keras."""

    def __init__(
        self,
        syncFrequency: int,  # HPE's camelCase names
        minPeers: int,
        trainingContract: str = DEFAULT_CONTRACT,
        **kwargs: Any,
    ) -> None:
        options = hpe_options(syncFrequency, minPeers, trainingContract, kwargs, "tf")
        if options["use_adaptive_sync"] and options.get("val_data") is None:
            raise ValueError("useAdaptiveSync=True decides from validation loss: give adsValData")
        super().__init__(options.pop("sync_frequency"), options.pop("min_peers"), **options)
