"""HPE Swarm Learning's Keras API: `SwarmCallback`, a Keras callback for `model.fit`.

```python
from swarmlearning.tf import SwarmCallback
cb = SwarmCallback(syncFrequency=20, minPeers=3, adsValData=(x_val, y_val))
model.fit(x, y, epochs=5, callbacks=[cb])
```

Works with the Keras the program uses: Keras 3 (`tf.keras` of TensorFlow ≥ 2.16, or plain
`keras` on the JAX or PyTorch backend) and Keras 2 (`tf-keras` with `TF_USE_LEGACY_KERAS=1`,
or TensorFlow < 2.16), the generation HPE's TensorFlow programs are written for. Which one is
read from the environment and the installed packages before anything is imported. HPE's
keywords map onto `openswarm.keras.SwarmCallback`; `adsValData` is `(x, y)`,
`(x, y, sample_weight)` or a dataset, evaluated with `adsValBatchSize`; loss and metric are
those given to `model.compile()`.
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


def keras_generation() -> int:
    """2 where the program's `tf.keras` is Keras 2, else 3; ImportError when Keras 2 is asked
    for and missing."""
    if importlib.util.find_spec("tensorflow") is None:
        return 3
    if os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes"):
        if importlib.util.find_spec("tf_keras") is None:
            raise ImportError(
                "TF_USE_LEGACY_KERAS is set, so tf.keras is Keras 2, but the tf-keras package "
                "is not installed: pip install tf-keras (matching your TensorFlow), or unset "
                "TF_USE_LEGACY_KERAS to use Keras 3"
            )
        return 2
    for dist in TENSORFLOW_DISTRIBUTIONS:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        major, minor = (int(n) for n in re.findall(r"\d+", version)[:2])
        return 2 if (major, minor) < (2, 16) else 3
    return 3


if keras_generation() == 2:
    from openswarm.client.tf_keras import SwarmCallback as _KerasSwarmCallback
else:
    from openswarm.client.keras import SwarmCallback as _KerasSwarmCallback


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
