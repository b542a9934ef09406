"""DP-SGD for a PyTorch site: Opacus's per-sample clipping and noise, with the steps counted.

`make_private` wraps a model, optimizer and data loader with Opacus (Poisson sampling,
per-sample gradient clipping to `max_grad_norm`, Gaussian noise of `noise_multiplier`
times that norm) and remembers, for the swarm callback, the noise multiplier, the sample
rate and how many noised steps the optimizer took: what record-level ε is computed from
(`openswarm.privacy.sgd_epsilon`). This module never touches the network.
"""

from __future__ import annotations

import secrets
import weakref
from typing import Any

import torch

from openswarm.client.privacy import SgdSteps
from openswarm.privacy import PrivacyError, calibrate_sgd_noise

_STEPS: weakref.WeakKeyDictionary[Any, SgdSteps] = weakref.WeakKeyDictionary()


def make_private(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: torch.utils.data.DataLoader,
    *,
    max_grad_norm: float,
    noise_multiplier: float | None = None,
    target_epsilon: float | None = None,
    steps: int | None = None,
    delta: float = 1e-5,
) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.utils.data.DataLoader]:
    """`(model, optimizer, data_loader)` for DP-SGD through Opacus. Give `noise_multiplier`,
    or `target_epsilon` and the planned optimizer `steps` (e.g. epochs * len(data_loader))
    to calibrate it to. Pass the returned optimizer to `SwarmCallback(..., optimizer=,
    dp="sgd")`; the model may be passed wrapped or not (its tensors keep their names)."""
    try:
        from opacus import PrivacyEngine
    except ImportError:
        raise PrivacyError("DP-SGD needs Opacus: pip install 'openswarm[privacy]'") from None
    if not isinstance(max_grad_norm, int | float) or not max_grad_norm > 0:
        raise PrivacyError(f"max_grad_norm must be a number > 0, got {max_grad_norm!r}")
    if len(data_loader) < 1:
        raise PrivacyError("the data loader is empty: DP-SGD needs at least one batch")
    sample_rate = 1 / len(data_loader)  # what Opacus's Poisson sampling uses
    if noise_multiplier is None:
        if target_epsilon is None or steps is None:
            raise PrivacyError(
                "make_private needs noise_multiplier, or target_epsilon and steps (the "
                "planned optimizer steps) to calibrate it to"
            )
        noise_multiplier = calibrate_sgd_noise(target_epsilon, sample_rate, steps, delta)
    elif not isinstance(noise_multiplier, int | float) or not noise_multiplier > 0:
        raise PrivacyError(f"noise_multiplier must be a number > 0, got {noise_multiplier!r}")
    # noise from a generator seeded by the OS, not from torch's global (often fixed) seed
    noise = torch.Generator().manual_seed(secrets.randbits(63))
    engine = PrivacyEngine(accountant="rdp")
    model, optimizer, data_loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=data_loader,
        noise_multiplier=float(noise_multiplier), max_grad_norm=float(max_grad_norm),
        poisson_sampling=True, noise_generator=noise,
    )  # fmt: skip
    counted = SgdSteps(noise=float(noise_multiplier), sample_rate=sample_rate)
    hook = optimizer.step_hook  # Opacus's accountant; runs once per noised step

    def count(opt: Any) -> None:
        counted.steps += 1
        if hook is not None:
            hook(opt)

    optimizer.attach_step_hook(count)
    _STEPS[optimizer] = counted
    return model, optimizer, data_loader


def sgd_steps(optimizer: Any) -> SgdSteps | None:
    """The DP-SGD record of an optimizer made by `make_private` (None: not one)."""
    try:
        return _STEPS.get(optimizer)
    except TypeError:  # not weakly referenceable: not one of ours
        return None


def plain_module(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside Opacus's GradSampleModule (whose tensor names take a "_module."
    prefix), so wrapped and plain sites sync the same names; any other model as it is."""
    inner = getattr(model, "_module", None)
    if type(model).__module__.startswith("opacus") and isinstance(inner, torch.nn.Module):
        return inner
    return model
