"""Merge methods by name, and the single ``merge`` entry point."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from openswarm.merge.errors import MergeInputError
from openswarm.merge.geomedian import geomedian, geomedian_prepared
from openswarm.merge.inputs import Prepared
from openswarm.merge.krum import krum, krum_prepared, multi_krum, multi_krum_prepared
from openswarm.merge.mean import mean
from openswarm.merge.median import coordmedian, coordmedian_prepared
from openswarm.merge.trimmed import trimmed_mean, trimmed_mean_prepared

MergeMethod = Callable[..., dict[str, Any]]

MERGE_METHODS: dict[str, MergeMethod] = {
    "mean": mean,
    "coordmedian": coordmedian,
    "geomedian": geomedian,
    "trimmed_mean": trimmed_mean,
    "krum": krum,
    "multi_krum": multi_krum,
}


#: The methods that take validated inputs (`Prepared`), as merging layer by layer needs;
#: `mean` is not one: it adds whole sets one after another (merge.running_mean).
PREPARED_METHODS: dict[str, Callable[..., dict[str, Any]]] = {
    "coordmedian": coordmedian_prepared,
    "geomedian": lambda prep, **options: geomedian_prepared(prep, **options).params,
    "trimmed_mean": trimmed_mean_prepared,
    "krum": krum_prepared,
    "multi_krum": multi_krum_prepared,
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
    _check_options(method, func, options)
    return func(param_sets, weights, **options)


def merge_prepared(prep: Prepared, method: str, **options: Any) -> dict[str, Any]:
    """As :func:`merge`, of validated inputs (any method but ``mean``)."""
    func = get_merge_method(method)
    if method not in PREPARED_METHODS:
        raise MergeInputError(f"merge method {method!r} does not take prepared inputs")
    _check_options(method, func, options)
    return PREPARED_METHODS[method](prep, **options)


def _check_options(method: str, func: MergeMethod, options: Mapping[str, Any]) -> None:
    allowed = [p for p in inspect.signature(func).parameters if p not in ("param_sets", "weights")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise MergeInputError(
            f"merge method {method!r} has no option(s) {', '.join(unknown)}; "
            f"options: {', '.join(allowed) or 'none'}"
        )
