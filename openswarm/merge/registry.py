"""Merge methods by name, and the single ``merge`` entry point."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from openswarm.merge.errors import MergeInputError
from openswarm.merge.geomedian import geomedian
from openswarm.merge.krum import krum, multi_krum
from openswarm.merge.mean import mean
from openswarm.merge.median import coordmedian
from openswarm.merge.trimmed import trimmed_mean

MergeMethod = Callable[..., dict[str, Any]]

MERGE_METHODS: dict[str, MergeMethod] = {
    "mean": mean,
    "coordmedian": coordmedian,
    "geomedian": geomedian,
    "trimmed_mean": trimmed_mean,
    "krum": krum,
    "multi_krum": multi_krum,
}


def get_merge_method(name: str) -> MergeMethod:
    """The merge function called ``name``; MergeInputError lists the valid names."""
    try:
        return MERGE_METHODS[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(MERGE_METHODS))
        raise MergeInputError(f"unknown merge method {name!r}; valid: {valid}") from None


def merge(
    param_sets: Sequence[Mapping[str, Any]],
    weights: Sequence[float] | None = None,
    method: str = "mean",
    **options: Any,
) -> dict[str, Any]:
    """Merge with the named method; ``options`` go to it (e.g. ``beta``, ``f``, ``tol``)."""
    func = get_merge_method(method)
    allowed = [p for p in inspect.signature(func).parameters if p not in ("param_sets", "weights")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise MergeInputError(
            f"merge method {method!r} has no option(s) {', '.join(unknown)}; "
            f"options: {', '.join(allowed) or 'none'}"
        )
    return func(param_sets, weights, **options)
