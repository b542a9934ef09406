"""Streaming weighted sums of peers' tensors: the core of mean, multi-Krum and geomedian.

Work goes chunk by chunk (cache-sized), each output chunk accumulating every peer before
moving on, so extra memory is one output set plus two chunks, whatever the peer count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from openswarm.codec.finite import has_nonfinite
from openswarm.merge.errors import NonFiniteInput
from openswarm.merge.inputs import Prepared
from openswarm.merge.numeric import acc_dtype, all_finite, as_float, store

CHUNK = 1 << 16


def combine(
    prep: Prepared, coeffs: np.ndarray, outputs: Sequence[np.ndarray] | None = None
) -> list[np.ndarray]:
    """``sum_i coeffs[i] * peer_i`` for every tensor, as flat raw outputs.

    Each float output chunk is checked while in cache (one cheap pass). A non-finite one
    is traced to the peer holding the NaN/inf (MergeInputError naming peer and tensor);
    if no input is at fault, an intermediate sum overflowed and the chunk is redone in
    float64. So callers that skip an upfront finiteness check stay safe.
    """
    return [
        combine_tensor(prep, t, coeffs, None if outputs is None else outputs[t])
        for t in range(len(prep.specs))
    ]


def combine_tensor(
    prep: Prepared, t: int, coeffs: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """The weighted sum of tensor ``t`` over all peers of ``prep`` (see :func:`combine`),
    written into the flat raw array ``out`` when given."""
    spec = prep.specs[t]
    acc = acc_dtype(spec.dtype)
    if out is None:
        out = np.empty(spec.size, spec.dtype.storage)
    direct = out.dtype == acc
    scratch = np.empty(min(CHUNK, spec.size), acc)
    tmp = np.empty_like(scratch)
    sources = [flats[t] for flats in prep.flats]
    coeff_list = [float(c) for c in coeffs]
    equal = all(c == coeff_list[0] for c in coeff_list)
    check = spec.dtype.is_float
    convert = any(src.dtype != acc for src in sources)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is caught per chunk
        for start in range(0, spec.size, CHUNK):
            stop = min(start + CHUNK, spec.size)
            target = out[start:stop] if direct else scratch[: stop - start]
            chunks = [src[start:stop] for src in sources]
            values = [as_float(c, spec.dtype) for c in chunks] if convert else chunks
            _accumulate(target, tmp[: stop - start], values, coeff_list, equal)
            if check and not all_finite(target):
                store(out[start:stop], _explain(prep, t, chunks, coeff_list), spec.dtype)
            elif not direct:
                store(out[start:stop], target, spec.dtype)
    return out


def _accumulate(
    target: np.ndarray,
    tmp: np.ndarray,
    values: Sequence[np.ndarray],
    coeffs: Sequence[float],
    equal: bool,
) -> None:
    if equal:
        if len(values) == 1:
            np.copyto(target, values[0])
        else:
            np.add(values[0], values[1], out=target)
            for value in values[2:]:
                np.add(target, value, out=target)
        if coeffs[0] != 1.0:
            np.multiply(target, coeffs[0], out=target)
        return
    np.multiply(values[0], coeffs[0], out=target)
    for value, coeff in zip(values[1:], coeffs[1:], strict=True):
        np.multiply(value, coeff, out=tmp)
        np.add(target, tmp, out=target)


def _explain(
    prep: Prepared, t: int, chunks: Sequence[np.ndarray], coeffs: Sequence[float]
) -> np.ndarray:
    """Name the peer whose chunk is non-finite, or redo an overflowed chunk in float64."""
    spec = prep.specs[t]
    for peer, chunk in zip(prep.peers, chunks, strict=True):
        if has_nonfinite(chunk, spec.dtype):
            raise NonFiniteInput(peer, spec.name)
    total = np.zeros(len(chunks[0]), np.float64)
    for chunk, coeff in zip(chunks, coeffs, strict=True):
        total += coeff * as_float(chunk, spec.dtype).astype(np.float64)
    return total
