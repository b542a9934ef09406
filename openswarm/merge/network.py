"""Sorting the rows of a small block column-wise with a sorting network.

Each compare-exchange is one ``np.minimum`` and one ``np.maximum`` over whole rows, so a
(K x n) block sorts in O(K log^2 K) vectorised passes: far faster than ``np.sort`` along
a short axis. Used by the unweighted median and trimmed mean.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=128)
def comparators(count: int, wanted: tuple[int, ...] | None = None) -> tuple[tuple[int, int], ...]:
    """Batcher odd-even merge sort pairs for ``count`` lanes.

    With ``wanted``, only the pairs that the sorted lanes at those positions depend on.
    """
    size = 1
    while size < count:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    # Lanes >= count act as +inf padding: pairs touching them never move anything.
    pairs = [(a, b) for a, b in pairs if b < count]
    if wanted is not None:
        needed, kept = set(wanted), []
        for a, b in reversed(pairs):
            if a in needed or b in needed:
                needed |= {a, b}
                kept.append((a, b))
        pairs = kept[::-1]
    return tuple(pairs)


def sorted_lanes(rows: np.ndarray, wanted: tuple[int, ...] | None = None) -> list[np.ndarray]:
    """Column-wise sorted rows (lane i = i-th smallest); ``rows`` is used as scratch.

    With ``wanted``, only those lanes are guaranteed sorted.
    """
    lanes = list(rows)
    spare = np.empty_like(rows[0])
    for a, b in comparators(len(lanes), wanted):
        np.minimum(lanes[a], lanes[b], out=spare)
        np.maximum(lanes[a], lanes[b], out=lanes[b])
        lanes[a], spare = spare, lanes[a]
    return lanes
