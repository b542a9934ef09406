"""HPE Swarm Learning compatibility: programs written for HPE's client run unmodified.

Import `SwarmCallback` from the module of your platform, as with HPE:

- `swarmlearning.pyt` — PyTorch (maps onto `openswarm.torch.SwarmCallback`);
- `swarmlearning.tf` — Keras 3, as `tf.keras` of TensorFlow ≥ 2.16 or plain `keras`
  (maps onto `openswarm.keras.SwarmCallback`), or Keras 2 (`tf-keras` with
  `TF_USE_LEGACY_KERAS=1`, or TensorFlow < 2.16; maps onto `openswarm.client.tf_keras`);
- `swarmlearning.hf_transformers` — Hugging Face `Trainer` (maps onto `openswarm.hf`).

Each takes HPE's `SwarmCallback(syncFrequency, minPeers, trainingContract, **kwargs)`;
unknown keywords are an error that names them. The platforms are imported only with their
module.
"""
