"""Merge methods: pure functions from peers' parameter sets (and weights) to one set.

Every method takes ``(param_sets, weights=None, **options)`` and returns the input's kind
(numpy or torch), dtypes, names and order. Names, shapes, dtypes, kinds, weights and
options are validated before any arithmetic, finiteness too; MergeInputError names
the peer and tensor (NonFiniteInput, with the peer's index, for NaN or infinity).
Zero-weight peers are validated, then dropped. The robust methods (coordmedian, geomedian,
trimmed_mean, multi_krum) cap every weight at the weights' lower median first, so that no
one peer outweighs the rest whatever it declared; krum ignores weights; mean uses them as
they are.

Shared rules: 16-bit floats compute in float32; integer tensors compute in float64 and
round half to even; bools are True where the float result is > 0.5 (a strict weighted
majority for mean and median). ``krum`` copies the chosen peer's tensors, and
``geomedian`` merges integer/bool tensors by the weighted coordinate-wise median.
"""

from openswarm.merge.errors import MergeInputError, NonFiniteInput
from openswarm.merge.geomedian import GeomedianResult, geomedian, geomedian_with_info
from openswarm.merge.krum import krum, multi_krum
from openswarm.merge.mean import mean
from openswarm.merge.median import coordmedian
from openswarm.merge.registry import MERGE_METHODS, get_merge_method, merge
from openswarm.merge.trimmed import trimmed_mean

__all__ = [
    "MERGE_METHODS",
    "GeomedianResult",
    "MergeInputError",
    "NonFiniteInput",
    "coordmedian",
    "geomedian",
    "geomedian_with_info",
    "get_merge_method",
    "krum",
    "mean",
    "merge",
    "multi_krum",
    "trimmed_mean",
]
