"""Test data: scikit-learn's digits, split into skewed (non-IID) shards, one per site.

A fixed 360-image test set holds every digit equally. Of the rest, each site gets nearly all
the images of its "home" digits and only a few of every other digit, so a model trained on
one shard alone does poorly on the balanced test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

HOMES: dict[int, tuple[tuple[int, ...], ...]] = {
    1: (tuple(range(10)),),
    2: ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9)),
    3: ((0, 1, 2), (3, 4, 5), (6, 7, 8, 9)),
}
TEST_PER_DIGIT = 36
AWAY = 3  # images of each non-home digit a site holds


def _all() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int64)


def _split(sites: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Indices of the test set, and of each site's shard."""
    _, y = _all()
    rng = np.random.default_rng(7)
    test: list[int] = []
    shards: list[list[int]] = [[] for _ in range(sites)]
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(y == digit))
        test.extend(idx[:TEST_PER_DIGIT])
        pool = idx[TEST_PER_DIGIT:]
        home = next(s for s in range(sites) if digit in HOMES[sites][s])
        start = 0
        for site in range(sites):
            if site != home:
                shards[site].extend(pool[start : start + AWAY])
                start += AWAY
        shards[home].extend(pool[start:])
    return np.array(sorted(test)), [rng.permutation(s) for s in shards]


def held_out() -> tuple[np.ndarray, np.ndarray]:
    x, y = _all()
    test, _ = _split(1)
    return x[test], y[test]


def shard(rank: int, sites: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = _all()
    _, shards = _split(sites)
    return x[shards[rank]], y[shards[rank]]


def write_site_dirs(root: Path, sites: int) -> list[Path]:
    """One DATA_DIR per site holding its shard as `digits.npz`: `x`, pixel intensities 0-16
    as rows of 64 (as `load_digits` gives them), and `y`, the labels."""
    dirs = []
    for rank in range(sites):
        x, y = shard(rank, sites)
        path = root / f"data-{rank + 1}"
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "digits.npz", x=np.rint(x * 16).astype(np.int64), y=y)
        dirs.append(path)
    return dirs
