"""The Hugging Face binding: `SwarmCallback`, a `transformers.TrainerCallback` for `Trainer`.

Optimizer steps count as batches. `hf_mode="full"` syncs the model's whole state_dict;
`hf_mode="peft"` syncs only the adapter weights of a PEFT model (what
`peft.get_peft_model_state_dict` returns: e.g. the LoRA matrices and any `modules_to_save`).
Parameters may be on any device and in any dtype (see `openswarm.client.torch`).

A Trainer run on several processes (`accelerate launch`, `torchrun`: DDP, one replica of
the model per process) takes part as one site. Only global rank 0 talks to the swarm; the
others call no ledger and open no port. At the first and last step, and every
`sync_frequency` optimizer steps (the steps at which rank 0 syncs), rank 0 broadcasts
over the job's own process group what it loaded: the encoded merged parameters, its round
count and its sync interval (which adaptive sync may change). The others load them with
`set_params`, so every replica holds the merged model; after the last step each compares
its final digest with rank 0's. While rank 0 waits for the swarm the others wait in that
broadcast: give `TrainingArguments(ddp_timeout=…)` more seconds than the longest wait for
the other sites (the start of training and its end, when every site must finish). If rank
0 fails in a step, the others raise SwarmError too. Sharded training (FSDP, DeepSpeed
ZeRO-3, tensor parallelism) is refused: each process must hold the whole model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from openswarm.client.base import ModelMethods
from openswarm.client.session import SwarmSession
from openswarm.client.torch import (
    FAILED,
    LOADED,
    NOTHING,
    DriftHooks,
    GroupMessage,
    SiteGroup,
    host_tensors,
    matching_tensors,
    require_bfloat16_support,
)
from openswarm.codec import decode, digest, encode
from openswarm.protocol import HF_MODES, SwarmError

try:
    from transformers import TrainerCallback, default_data_collator
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("openswarm.hf needs transformers: pip install 'openswarm[hf]'") from exc

DEFAULT_VAL_BATCH_SIZE = 32


class HfModel(DriftHooks):
    """The model adapter of a transformers model: its whole state_dict (`hf_mode="full"`) or
    a PEFT model's adapter weights (`"peft"`); `evaluate()` reports the model's own loss on
    `val_data`, and accuracy when the labels are class indices. `loaded` turns True when
    `set_params` loads (a multi-process site forwards what rank 0 loaded)."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        hf_mode: str = "full",
        val_data: Iterable[Any] | None = None,
        val_batch_size: int | None = None,
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
        self.model = model
        self.hf_mode = hf_mode
        self.val_data = val_data
        self.val_batch_size = val_batch_size
        require_bfloat16_support(self._state())
        self.loaded = False
        self.lr: float | None = None

    # --- parameters -----------------------------------------------------------------------
    def get_params(self) -> dict[str, torch.Tensor]:
        return host_tensors(self._state())

    def set_params(self, params: Mapping[str, Any]) -> None:
        tensors = matching_tensors(self._state(), params)
        with torch.no_grad():  # copy_ onto each tensor's own device, dtype unchanged
            if self.hf_mode == "full":
                self.model.load_state_dict(tensors, strict=True)
            else:
                from peft import set_peft_model_state_dict

                result = set_peft_model_state_dict(self.model, tensors)
                if result.unexpected_keys:
                    raise SwarmError(f"PEFT did not load {sorted(result.unexpected_keys)[:5]}")
        self.loaded = True

    def _state(self) -> Mapping[str, torch.Tensor]:
        """The synced tensors, where the model holds them (any device)."""
        if self.hf_mode == "peft":
            from peft import get_peft_model_state_dict

            return get_peft_model_state_dict(self.model)
        return self.model.state_dict()

    def _drift_target(self) -> tuple[torch.nn.Module, Iterable[str]]:
        # PEFT adapters, synced under other names, get a step after each batch instead
        return self.model, self._state().keys()

    def learning_rate(self) -> float | None:
        """The Trainer's learning rate (set at the start of training)."""
        return self.lr

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


class SwarmCallback(ModelMethods, TrainerCallback):
    """Swarm learning for a Hugging Face `Trainer`.

    ```python
    cb = SwarmCallback(model, sync_frequency=20, min_peers=3, val_data=val_dataset)
    Trainer(model=model, args=args, train_dataset=train, callbacks=[cb]).train()
    # model now holds the final swarm model, the same on every site
    ```

    `val_data` is a dataset of examples (dicts of model inputs with `labels`) or a DataLoader
    of such batches; `evaluate()` reports the model's loss on it, and accuracy when the labels
    are class indices. The model adapter is `HfModel`; other keywords are `SwarmSession`'s.
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
        self.hf = HfModel(model, hf_mode=hf_mode, val_data=val_data, val_batch_size=val_batch_size)
        self.session = SwarmSession(
            self.hf, sync_frequency=sync_frequency, min_peers=min_peers, **options
        )
        self.model = model
        self.group: SiteGroup | None = None  # set by on_train_begin for a multi-process job
        self._group_steps = 0

    # --- Trainer hooks --------------------------------------------------------------------
    def on_train_begin(self, args: Any = None, state: Any = None, control: Any = None,
                       **kwargs: Any) -> None:  # fmt: skip
        trained = kwargs.get("model")
        if trained is not None and trained is not self.model:
            self.logger.warning("the Trainer trains another model object than SwarmCallback's")
        if self.total_epochs is None and getattr(state, "num_train_epochs", 0):
            self.session.total_epochs = int(state.num_train_epochs)
        self.group = None if self.loopback else _site_group(args)
        if self.group is not None and self.session.drift.active:
            raise SwarmError(
                "proximal_mu and control_variates take one process per site for now: its "
                "gradients must all be corrected alike, and DDP averages them across ranks"
            )
        if self.session.drift.active:
            _check_drift_args(args)
        rate = getattr(args, "learning_rate", None)
        self.hf.lr = float(rate) if isinstance(rate, int | float) and rate > 0 else None
        self._group_steps = 0
        self._site_step(lambda: self.session.train_begin(), shared=True)

    def on_step_end(self, args: Any = None, state: Any = None, control: Any = None,
                    **kwargs: Any) -> None:  # fmt: skip
        shared = False
        if self.group is not None:  # the steps at which rank 0 syncs, counted on every rank
            self._group_steps += 1
            shared = self._group_steps >= self.sync_frequency
            if shared:
                self._group_steps = 0
        self._site_step(lambda: self.session.batch_end(), shared=shared)

    def on_epoch_end(self, args: Any = None, state: Any = None, control: Any = None,
                     **kwargs: Any) -> None:  # fmt: skip
        epoch = getattr(state, "epoch", None)
        self.session.epoch_end(None if epoch is None else round(epoch) - 1)

    def on_train_end(self, args: Any = None, state: Any = None, control: Any = None,
                     **kwargs: Any) -> None:  # fmt: skip
        self._site_step(lambda: self.session.train_end(), shared=True, final=True)

    # --- several processes as one site ----------------------------------------------------
    def _site_step(self, step: Callable[[], None], *, shared: bool, final: bool = False) -> None:
        """Run a swarm step: alone; or on rank 0 of a multi-process job, then (when
        ``shared``) broadcast its outcome, which the other ranks receive and load."""
        group = self.group
        if group is None:
            step()
            return
        if not group.is_main:
            if shared:
                self._follow(group.receive(), group.rank, final)
            return
        try:
            step()
            message = self._outcome(final) if shared else None
        except BaseException:
            if shared:  # the others are waiting for this step's message: end them too
                group.send(GroupMessage(FAILED, self.rounds, self.sync_frequency))
            raise
        if message is not None:
            group.send(message)

    def _outcome(self, final: bool) -> GroupMessage:
        """Rank 0's message: the parameters it loaded since the last one, if any."""
        loaded, self.hf.loaded = self.hf.loaded, False
        data = encode(self.get_params()) if loaded else None
        return GroupMessage(
            LOADED if loaded else NOTHING, self.rounds, self.sync_frequency,
            digest=self.final_digest if final else None, data=data,
        )  # fmt: skip

    def _follow(self, message: GroupMessage, rank: int, final: bool) -> None:
        """Another rank: load what rank 0 loaded; after the last step, check the digest."""
        if message.status == FAILED:
            raise SwarmError(f"rank {rank}: the site's main process (rank 0) failed; see its log")
        self.session.rounds = message.rounds
        self.session.sync_frequency = message.sync_frequency
        if message.data is not None:
            self.set_params(decode(message.data, as_torch=True))
        if final:
            self.session.final_digest = digest(self.get_params())
            if message.digest is not None and message.digest != self.final_digest:
                raise SwarmError(
                    f"rank {rank} ends with model {self.final_digest[:12]}… but rank 0 with "
                    f"{message.digest[:12]}…"
                )


def _check_drift_args(args: Any) -> None:
    """SwarmError for Trainer settings under which the gradient hooks would be wrong."""
    if (getattr(args, "gradient_accumulation_steps", 1) or 1) > 1:
        raise SwarmError(
            "proximal_mu and control_variates add their correction at every backward pass: "
            "with gradient_accumulation_steps > 1 it would count several times a step; use 1"
        )
    if getattr(args, "fp16", False):
        raise SwarmError(
            "proximal_mu and control_variates with fp16 would add their correction to loss-"
            "scaled gradients; train in bf16 or fp32"
        )


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


def _site_group(args: Any) -> SiteGroup | None:
    """The job's process group when this Trainer runs on several processes (else None);
    SwarmError for sharded training, where no process holds the whole model."""
    group = SiteGroup.current(getattr(args, "device", None))
    if group is None:
        return None
    sharded = bool(getattr(args, "fsdp", None))
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled

        sharded = sharded or is_deepspeed_zero3_enabled()
    except ImportError:  # pragma: no cover - depends on the transformers version
        pass
    if sharded:
        raise SwarmError(
            "FSDP and DeepSpeed ZeRO-3 shard the model over the processes: a site must hold "
            "whole parameters; train with data parallelism (DDP, ZeRO-1/2) instead"
        )
    return group


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
