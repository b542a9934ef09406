"""HPE Swarm Learning's Hugging Face API: `SwarmCallback` for a `transformers.Trainer`.

```python
from swarmlearning.hf_transformers import SwarmCallback
cb = SwarmCallback(syncFrequency=20, minPeers=3, model=model, adsValData=val_dataset)
Trainer(model=model, args=args, train_dataset=train, callbacks=[cb]).train()
```

HPE's keywords map onto `openswarm.hf.SwarmCallback`. `adsValData` is a dataset of examples
(dicts of model inputs with `labels`) batched by `adsValBatchSize`, or a DataLoader of such
batches; the loss is the model's own, plus accuracy when the labels are classes.
`hfMode="peft"` syncs only the adapter weights of a `peft.PeftModel`.
"""

from __future__ import annotations

from typing import Any

import torch

from openswarm import DEFAULT_CONTRACT
from openswarm.client.hf import SwarmCallback as _HfSwarmCallback
from swarmlearning._compat import hpe_options


class SwarmCallback(_HfSwarmCallback):
    """HPE's `SwarmCallback(syncFrequency, minPeers, trainingContract, **kwargs)` for HF."""

    def __init__(
        self,
        syncFrequency: int,
        minPeers: int,
        trainingContract: str = DEFAULT_CONTRACT,
        **kwargs: Any,
    ) -> None:
        options = hpe_options(syncFrequency, minPeers, trainingContract, kwargs, "hf")
        model = options.pop("model", None)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                "swarmlearning.hf_transformers.SwarmCallback needs model=<the model to sync>, "
                f"got {type(model).__name__}"
            )
        if options["use_adaptive_sync"] and options.get("val_data") is None:
            raise ValueError("useAdaptiveSync=True decides from validation loss: give adsValData")
        super().__init__(model, options.pop("sync_frequency"), options.pop("min_peers"), **options)
