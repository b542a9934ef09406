"""Server-side optimizers without a server: the round's mean as a pseudo-gradient.

``fedavgm``, ``fedadam``, ``fedyogi`` and ``fedadagrad`` (Hsu et al. 2019; Reddi et al.,
"Adaptive Federated Optimization", 2021) treat ``delta = mean_t - x_{t-1}`` (the weighted
mean of the round's snapshots minus the previous merged model) as a gradient step and
apply an optimizer to it:

- fedavgm:    ``m = momentum*m + delta``;                        ``x = x_prev + server_lr*m``
- fedadam:    ``m = beta1*m + (1-beta1)*delta``; ``v = beta2*v + (1-beta2)*delta**2``
- fedyogi:    as fedadam, but ``v = v - (1-beta2)*delta**2*sign(v - delta**2)``
- fedadagrad: as fedadam, but ``v = v + delta**2``
- adaptive ones: ``x = x_prev + server_lr * m / (sqrt(v) + tau)`` (no bias correction,
  as in Reddi et al.)

The optimizer state is data, not an object: float tensors named ``STATE_PREFIX + slot +
"/" + name`` that follow the model's tensors in the merged model, so the merged model of
a round (its digest on the ledger) carries everything the next round's leader needs, and
any leader, or an auditor, continues from it bit for bit. The first merged model (the
initial sync, the leader's own snapshot, which the contract checks as such) carries no
state: a previous model without any counts as zero state. Integer and bool tensors take
the mean as it is, and tensors whose names start with ``UNOPTIMIZED_PREFIXES`` (SCAFFOLD's
control variates) too. Everything here is pure: numpy in, numpy out; it never reads the
ledger or a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from openswarm.codec.arrays import flat_storage, from_storage
from openswarm.codec.dtypes import BY_NAME
from openswarm.codec.limits import MAX_NAME_BYTES
from openswarm.codec.tensors import TensorSpec
from openswarm.merge.errors import MergeInputError
from openswarm.merge.numeric import acc_dtype, as_float, store
from openswarm.protocol import (
    CONTROL_VARIATE_PREFIX,
    SERVER_OPTIMIZER_DEFAULTS,
    STATE_PREFIX,
    server_optimizer_problem,
)

Params = dict[str, Any]
Structure = dict[str, TensorSpec]

#: Tensors the optimizer leaves alone: their merged value is the mean itself.
UNOPTIMIZED_PREFIXES = (CONTROL_VARIATE_PREFIX,)


@dataclass(frozen=True)
class ServerOptimizer:
    """One optimizer: its state slots and its hyperparameters with their defaults."""

    name: str
    slots: tuple[str, ...]
    defaults: Mapping[str, float]


OPTIMIZERS: dict[str, ServerOptimizer] = {
    name: ServerOptimizer(name, ("m",) if name == "fedavgm" else ("m", "v"), defaults)
    for name, defaults in SERVER_OPTIMIZER_DEFAULTS.items()
}


def is_server_optimizer(method: str) -> bool:
    """Whether `method` names a server-side optimizer (rather than a plain merge)."""
    return method in OPTIMIZERS


def check_options(method: str, options: Mapping[str, Any]) -> dict[str, float]:
    """The optimizer's hyperparameters: `options` over the defaults, each checked to be a
    number in its range (below 1 for the decay rates). MergeInputError names a bad one."""
    problem = server_optimizer_problem(method, options)
    if problem is not None:
        raise MergeInputError(problem)
    return {**OPTIMIZERS[method].defaults, **{k: float(v) for k, v in options.items()}}


def state_name(slot: str, name: str) -> str:
    """The name of tensor `name`'s state in `slot` (e.g. ``m``)."""
    return f"{STATE_PREFIX}{slot}/{name}"


def is_state(name: str) -> bool:
    """Whether `name` is a server optimizer's state tensor."""
    return name.startswith(STATE_PREFIX)


def optimized(spec: TensorSpec) -> bool:
    """Whether the optimizer steps tensor `spec` (float tensors, control variates aside)."""
    return spec.dtype.is_float and not spec.name.startswith(UNOPTIMIZED_PREFIXES)


def merged_structure(method: str, model: Structure) -> Structure:
    """What a merged model of a contract with optimizer `method` looks like: the model's
    tensors, then each optimized tensor's state per slot (float32; float64 for float64)."""
    if not is_server_optimizer(method):
        return dict(model)
    full = dict(model)
    for slot in OPTIMIZERS[method].slots:
        for spec in model.values():
            if not optimized(spec):
                continue
            name = state_name(slot, spec.name)
            if len(name.encode("utf-8")) > MAX_NAME_BYTES:
                raise MergeInputError(
                    f"tensor name {spec.name[:40]!r}… is too long to hold {method}'s state "
                    f"(state names add {len(STATE_PREFIX) + len(slot) + 1} bytes to a limit "
                    f"of {MAX_NAME_BYTES}); shorten it or use merge method mean"
                )
            full[name] = TensorSpec(name, BY_NAME[acc_dtype(spec.dtype).name], spec.shape)
    return full


def model_part(params: Mapping[str, Any]) -> Params:
    """`params` without the optimizer's state tensors (what a site's model loads)."""
    return {name: value for name, value in params.items() if not is_state(name)}


def initial(method: str, model: Mapping[str, Any], specs: Structure) -> Params:
    """The first merged model: `model` as it is, with zero state."""
    full: Params = dict(model)
    for name, spec in merged_structure(method, specs).items():
        if name not in full:
            full[name] = np.zeros(spec.shape, spec.dtype.storage)
    return full


def step(method: str, options: Mapping[str, Any], previous: Mapping[str, Any],
         mean: Mapping[str, Any], specs: Structure, *, first: bool = False) -> Params:  # fmt: skip
    """The merged model of a round: `previous` (the last merged model, with its state)
    moved by the optimizer along ``mean - previous``. `mean` holds the model's tensors
    (structure `specs`, already checked); the result is numpy, model tensors then state,
    in `merged_structure` order. Deterministic: the same inputs give the same bits.
    `first`: `previous` is the swarm's first merged model (a leader's own snapshot), whose
    state, if it carries any, was not made by a step: it counts as zero."""
    hyper = check_options(method, options)
    full_specs = merged_structure(method, specs)
    if first or not any(is_state(name) for name in previous):  # zero state
        previous = initial(method, model_part(previous), specs)
    missing = [name for name in full_specs if name not in previous]
    if missing:
        raise MergeInputError(
            f"the previous merged model lacks {method}'s state ({missing[0]!r}…): was it made "
            "by another merge method?"
        )
    out: Params = {}
    state_out: Params = {}
    for spec in specs.values():
        new = flat_storage(mean[spec.name], spec.dtype)
        if not optimized(spec):
            out[spec.name] = from_storage(new.copy(), spec.shape, spec.dtype, as_torch=False)
            continue
        x_prev = as_float(flat_storage(previous[spec.name], spec.dtype), spec.dtype)
        delta = as_float(new, spec.dtype) - x_prev
        slots = {
            slot: np.array(flat_storage(previous[state_name(slot, spec.name)],
                                        full_specs[state_name(slot, spec.name)].dtype),
                           dtype=acc_dtype(spec.dtype))
            for slot in OPTIMIZERS[method].slots
        }  # fmt: skip
        moved = _apply(method, hyper, x_prev, delta, slots)
        raw = np.empty(spec.size, spec.dtype.storage)
        store(raw, moved, spec.dtype)
        out[spec.name] = from_storage(raw, spec.shape, spec.dtype, as_torch=False)
        for slot, values in slots.items():
            state_out[state_name(slot, spec.name)] = values.reshape(spec.shape)
    for name in full_specs:
        if name not in out:
            out[name] = state_out[name]
    return out


def _apply(method: str, hyper: Mapping[str, float], x_prev: np.ndarray, delta: np.ndarray,
           slots: dict[str, np.ndarray]) -> np.ndarray:  # fmt: skip
    """One optimizer step: updates `slots` in place and returns the new parameters."""
    kind = x_prev.dtype.type
    lr = kind(hyper["server_lr"])
    m = slots["m"]
    if method == "fedavgm":
        m *= kind(hyper["momentum"])
        m += delta
        return x_prev + lr * m
    beta1 = kind(hyper["beta1"])
    m *= beta1
    m += (kind(1) - beta1) * delta
    v = slots["v"]
    squared = delta * delta
    if method == "fedadam":
        beta2 = kind(hyper["beta2"])
        v *= beta2
        v += (kind(1) - beta2) * squared
    elif method == "fedyogi":
        beta2 = kind(hyper["beta2"])
        v -= (kind(1) - beta2) * squared * np.sign(v - squared)
    else:  # fedadagrad
        v += squared
    return x_prev + lr * m / (np.sqrt(v) + kind(hyper["tau"]))


__all__ = [
    "OPTIMIZERS",
    "ServerOptimizer",
    "check_options",
    "initial",
    "is_server_optimizer",
    "is_state",
    "merged_structure",
    "model_part",
    "state_name",
    "step",
]
