"""Validation of merge inputs, and their flat views (zero-weight peers checked then dropped).

All checks (names, shapes, dtypes, kinds, weights, finiteness) run before any arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from openswarm.codec.arrays import UnsupportedValueError, flat_storage, from_storage
from openswarm.codec.arrays import is_torch as _is_torch
from openswarm.codec.finite import has_nonfinite
from openswarm.codec.tensors import TensorSpec, spec_of
from openswarm.merge.errors import MergeInputError, NonFiniteInput
from openswarm.merge.sums import exact


@dataclass(frozen=True)
class Prepared:
    """Validated inputs: the peers with positive weight and their flat raw tensors."""

    specs: tuple[TensorSpec, ...]
    flats: tuple[tuple[np.ndarray, ...], ...]  # [peer][tensor], see codec flat_storage
    weights: np.ndarray  # float64, > 0, sums to 1
    peers: tuple[int, ...]  # caller's index of each kept peer
    template: Mapping[str, Any]  # the first parameter set: output kind and device
    as_torch: bool

    @property
    def count(self) -> int:
        """Number of peers taking part."""
        return len(self.flats)

    def equal_weights(self) -> bool:
        """True if all kept peers have the same weight."""
        return bool(np.all(self.weights == self.weights[0]))

    def capped(self) -> Prepared:
        """Every weight capped at the weights' lower median, renormalised.

        A strict majority of the peers then holds the largest weight there is, so no single
        peer, whatever it declared, outweighs all the others (with three peers or more it
        holds under half the total): what keeps the robust methods robust to weight gaming.
        """
        cap = np.sort(self.weights)[(self.count - 1) // 2]
        weights = np.minimum(self.weights, cap)
        return replace(self, weights=weights / exact(weights))

    def select(self, rows: Sequence[int]) -> Prepared:
        """Only the given peers (rows of this object), weights renormalised."""
        weights = self.weights[list(rows)]
        return replace(
            self,
            flats=tuple(self.flats[r] for r in rows),
            weights=weights / exact(weights),
            peers=tuple(self.peers[r] for r in rows),
        )

    def build(self, outputs: Sequence[np.ndarray]) -> dict[str, Any]:
        """The merged parameter set from flat outputs, in the input's kind and order."""
        result: dict[str, Any] = {}
        for spec, flat in zip(self.specs, outputs, strict=True):
            value = from_storage(flat, spec.shape, spec.dtype, as_torch=self.as_torch)
            if self.as_torch:
                device = self.template[spec.name].device
                if device.type != "cpu":
                    value = value.to(device)
            result[spec.name] = value
        return result


def prepare(
    param_sets: Sequence[Mapping[str, Any]],
    weights: Sequence[float] | None = None,
) -> Prepared:
    """Validate ``param_sets`` and ``weights``; MergeInputError names the peer and tensor."""
    sets = _sets(param_sets)
    specs, as_torch = _structure(sets)
    w = _weights(weights, len(sets))
    kept = [i for i in range(len(sets)) if w[i] > 0]
    flats: dict[int, tuple[np.ndarray, ...]] = {}
    for i in range(len(sets)):
        flats[i] = _flats(sets[i], specs)
        for spec, flat in zip(specs, flats[i], strict=True):
            if has_nonfinite(flat, spec.dtype):
                raise NonFiniteInput(i, spec.name)
    kept_w = w[kept]
    return Prepared(
        specs=specs,
        flats=tuple(flats[i] for i in kept),
        weights=kept_w / exact(kept_w),
        peers=tuple(kept),
        template=sets[0],
        as_torch=as_torch,
    )


def _sets(param_sets: Any) -> list[Mapping[str, Any]]:
    if isinstance(param_sets, Mapping) or not isinstance(param_sets, Sequence):
        raise MergeInputError(
            "param_sets must be a sequence of parameter sets (mappings of name -> array), "
            f"got {type(param_sets).__name__}"
        )
    if len(param_sets) == 0:
        raise MergeInputError("param_sets is empty: at least one parameter set is needed")
    for i, params in enumerate(param_sets):
        if not isinstance(params, Mapping):
            raise MergeInputError(
                f"peer {i}: expected a mapping of name -> array, got {type(params).__name__}"
            )
    return list(param_sets)


def _structure(sets: list[Mapping[str, Any]]) -> tuple[tuple[TensorSpec, ...], bool]:
    first = sets[0]
    names = list(first)
    for name in names:
        if not isinstance(name, str):
            raise MergeInputError(f"peer 0: tensor name {name!r} is not a string")
    specs = tuple(_spec(0, name, first[name]) for name in names)
    as_torch = bool(names) and _is_torch(first[names[0]])
    known = set(names)
    for i, params in enumerate(sets):
        missing = [n for n in names if n not in params]
        extra = [n for n in params if n not in known]
        if missing:
            raise MergeInputError(f"peer {i}: missing tensor(s) {_quoted(missing)}")
        if extra:
            raise MergeInputError(f"peer {i}: unexpected tensor(s) {_quoted(extra)}")
        for spec in specs:
            value = params[spec.name]
            got = _spec(i, spec.name, value)
            if _is_torch(value) != as_torch:
                got_kind = "a torch tensor" if _is_torch(value) else "a numpy array"
                want = "torch tensors" if as_torch else "numpy arrays"
                raise MergeInputError(
                    f"peer {i}, tensor {spec.name!r}: got {got_kind} but peer 0 gives "
                    f"{want}; convert all inputs to one kind"
                )
            if got.shape != spec.shape:
                raise MergeInputError(
                    f"peer {i}, tensor {spec.name!r}: shape {got.shape} differs from "
                    f"peer 0's {spec.shape}"
                )
            if got.dtype != spec.dtype:
                raise MergeInputError(
                    f"peer {i}, tensor {spec.name!r}: dtype {got.dtype.name} differs from "
                    f"peer 0's {spec.dtype.name}"
                )
    return specs, as_torch


def _spec(peer: int, name: str, value: Any) -> TensorSpec:
    try:
        return spec_of(name, value)
    except UnsupportedValueError as exc:
        raise MergeInputError(f"peer {peer}, tensor {name!r}: {exc}") from None


def _weights(weights: Any, count: int) -> np.ndarray:
    if weights is None:
        return np.ones(count)
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise MergeInputError(f"weights must be a sequence of numbers, got {weights!r}") from None
    if w.ndim != 1 or len(w) != count:
        raise MergeInputError(
            f"weights: expected {count} values (one per parameter set), got shape {w.shape}"
        )
    for i, value in enumerate(w):
        if not np.isfinite(value) or value < 0:
            raise MergeInputError(f"weights[{i}] = {value}: weights must be finite and >= 0")
    total = w.sum()
    if not total > 0 or not np.isfinite(total):
        raise MergeInputError(f"weights sum to {total}: need a positive, finite total")
    return w


def _flats(params: Mapping[str, Any], specs: tuple[TensorSpec, ...]) -> tuple[np.ndarray, ...]:
    return tuple(flat_storage(params[s.name], s.dtype) for s in specs)


def _quoted(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)
