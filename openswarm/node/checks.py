"""What a parameter set must look like to be merged with, or loaded into, another."""

from __future__ import annotations

from typing import Any

from openswarm.codec.arrays import UnsupportedValueError
from openswarm.codec.tensors import TensorSpec, spec_of, structure
from openswarm.protocol import CONTROL_VARIATE_PREFIX

Params = dict[str, Any]
Structure = dict[str, TensorSpec]

__all__ = ["Params", "Structure", "mismatch", "structure"]


def mismatch(reference: Structure, params: Params) -> str | None:
    """Why `params` cannot be merged with a model of structure `reference`, or None."""
    missing = [n for n in reference if n not in params]
    extra = [n for n in params if n not in reference]
    if missing or extra:
        hint = ""
        if any(n.startswith(CONTROL_VARIATE_PREFIX) for n in (*missing, *extra)):
            hint = "; control_variates differ between sites: set it alike on every site"
        return f"tensor names differ (missing {missing[:3]}, unexpected {extra[:3]}){hint}"
    if list(params) != list(reference):  # the order is part of a model (and of its digest)
        return "tensors come in another order than this site's model's"
    for name, ref in reference.items():
        try:
            got = spec_of(name, params[name])
        except UnsupportedValueError as exc:
            return f"tensor {name!r}: {exc}"
        if got.shape != ref.shape:
            return f"tensor {name!r} has shape {got.shape}, expected {ref.shape}"
        if got.dtype != ref.dtype:
            return f"tensor {name!r} has dtype {got.dtype.name}, expected {ref.dtype.name}"
    return None
