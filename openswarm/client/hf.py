"""The Hugging Face binding: `SwarmCallback`, a `transformers.TrainerCallback` for `Trainer`.

Optimizer steps count as batches. `hf_mode="full"` syncs the model's whole state_dict;
`hf_mode="peft"` syncs only the adapter weights of a PEFT model (what
`peft.get_peft_model_state_dict` returns: e.g. the LoRA matrices and any `modules_to_save`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from openswarm.client.base import SwarmCallbackBase
from openswarm.node.peer import SwarmError

try:
    from transformers import TrainerCallback, default_data_collator
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("openswarm.hf needs transformers: pip install 'openswarm[hf]'") from exc

HF_MODES = ("full", "peft")
DEFAULT_VAL_BATCH_SIZE = 32


class SwarmCallback(SwarmCallbackBase, TrainerCallback):
    """Swarm learning for a Hugging Face `Trainer`.

    ```python
    cb = SwarmCallback(model, sync_frequency=20, min_peers=3, val_data=val_dataset)
    Trainer(model=model, args=args, train_dataset=train, callbacks=[cb]).train()
    # model now holds the final swarm model, the same on every site
    ```

    `val_data` is a dataset of examples (dicts of model inputs with `labels`) or a DataLoader
    of such batches; `evaluate()` reports the model's loss on it, and accuracy when the labels
    are class indices.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        sync_frequency: int,
        min_peers: int,
        *,
        hf_mode: str = "full",
        val_data: Iterable[Any] | None = None,
        val_batch_size: int | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise SwarmError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if hf_mode not in HF_MODES:
            raise SwarmError(f"hf_mode must be one of {HF_MODES}, got {hf_mode!r}")
        if hf_mode == "peft":
            _require_peft_model(model)
        if val_batch_size is not None and (
            not isinstance(val_batch_size, int) or val_batch_size < 1
        ):
            raise SwarmError(f"val_batch_size must be an integer ≥ 1, got {val_batch_size!r}")
        super().__init__(sync_frequency=sync_frequency, min_peers=min_peers, **options)
        self.model = model
        self.hf_mode = hf_mode
        self.val_data = val_data
        self.val_batch_size = val_batch_size

    # --- parameters -----------------------------------------------------------------------
    def get_params(self) -> dict[str, torch.Tensor]:
        if self.hf_mode == "peft":
            from peft import get_peft_model_state_dict

            state = get_peft_model_state_dict(self.model)
        else:
            state = self.model.state_dict()
        return {name: t.detach().cpu() for name, t in state.items()}

    def set_params(self, params: Mapping[str, Any]) -> None:
        tensors = {name: _tensor(value) for name, value in params.items()}
        with torch.no_grad():
            if self.hf_mode == "full":
                self.model.load_state_dict(tensors, strict=True)
                return
            from peft import set_peft_model_state_dict

            expected = set(self.get_params())
            if set(tensors) != expected:
                missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
                raise SwarmError(
                    f"adapter weights do not match the model: missing {missing[:5]}, "
                    f"unexpected {extra[:5]}"
                )
            result = set_peft_model_state_dict(self.model, tensors)
            if result.unexpected_keys:
                raise SwarmError(f"PEFT did not load {sorted(result.unexpected_keys)[:5]}")

    # --- validation -----------------------------------------------------------------------
    def evaluate(self) -> tuple[float | None, float | None]:
        if self.val_data is None:
            return None, None
        was_training = self.model.training
        self.model.eval()
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        total_loss = 0.0
        examples = correct = labelled = 0
        try:
            with torch.no_grad():
                for batch in self._val_batches():
                    inputs = _inputs(batch, device)
                    out = self.model(**inputs)
                    if getattr(out, "loss", None) is None:
                        raise SwarmError("the model returned no loss on the validation batch")
                    labels = inputs["labels"]
                    n = int(labels.shape[0]) if labels.dim() else 1
                    total_loss += float(out.loss) * n
                    examples += n
                    logits = getattr(out, "logits", None)
                    if _is_classification(logits, labels):
                        mask = labels != -100
                        correct += int(((logits.argmax(-1) == labels) & mask).sum())
                        labelled += int(mask.sum())
        finally:
            self.model.train(was_training)
        if examples == 0:
            return None, None
        return total_loss / examples, (correct / labelled if labelled else None)

    def _val_batches(self) -> Iterable[Any]:
        data = self.val_data
        if isinstance(data, torch.utils.data.DataLoader):
            return data
        if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
            return torch.utils.data.DataLoader(
                data,  # type: ignore[arg-type]
                batch_size=self.val_batch_size or DEFAULT_VAL_BATCH_SIZE,
                collate_fn=default_data_collator,
            )
        return data  # type: ignore[return-value]  # any iterable of batches

    # --- Trainer hooks --------------------------------------------------------------------
    def on_train_begin(self, args: Any = None, state: Any = None, control: Any = None,
                       **kwargs: Any) -> None:  # fmt: skip
        trained = kwargs.get("model")
        if trained is not None and trained is not self.model:
            self.logger.warning("the Trainer trains another model object than SwarmCallback's")
        if self.total_epochs is None and getattr(state, "num_train_epochs", 0):
            self.total_epochs = int(state.num_train_epochs)
        SwarmCallbackBase.on_train_begin(self)

    def on_step_end(self, args: Any = None, state: Any = None, control: Any = None,
                    **kwargs: Any) -> None:  # fmt: skip
        SwarmCallbackBase.on_batch_end(self)

    def on_epoch_end(self, args: Any = None, state: Any = None, control: Any = None,
                     **kwargs: Any) -> None:  # fmt: skip
        epoch = getattr(state, "epoch", None)
        SwarmCallbackBase.on_epoch_end(self, None if epoch is None else round(epoch) - 1)

    def on_train_end(self, args: Any = None, state: Any = None, control: Any = None,
                     **kwargs: Any) -> None:  # fmt: skip
        SwarmCallbackBase.on_train_end(self)


def _require_peft_model(model: torch.nn.Module) -> None:
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise SwarmError("hf_mode='peft' needs peft: pip install 'openswarm[hf]'") from exc
    if not isinstance(model, PeftModel):
        raise SwarmError(
            f"hf_mode='peft' syncs adapter weights: model must be a peft.PeftModel "
            f"(from peft.get_peft_model), got {type(model).__name__}"
        )


def _tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.array(value))


def _inputs(batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
    if not isinstance(batch, Mapping):
        raise SwarmError(
            f"validation batches must be dicts of model inputs, got {type(batch).__name__}"
        )
    inputs = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    if "labels" not in inputs and "label" in inputs:
        inputs["labels"] = inputs.pop("label")
    if "labels" not in inputs:
        raise SwarmError("validation data needs 'labels' (or 'label') to compute a loss")
    return inputs


def _is_classification(logits: Any, labels: torch.Tensor) -> bool:
    return (
        isinstance(logits, torch.Tensor)
        and not labels.is_floating_point()
        and logits.dim() == labels.dim() + 1
        and logits.shape[:-1] == labels.shape
    )
