"""Prints the digest of every merge method's result on fixed inputs (for
tests/test_merge_determinism.py, which runs it under different CPU-feature settings)."""

from __future__ import annotations

import json

import numpy as np

from openswarm.codec import digest_encoded, encode
from openswarm.merge import MERGE_METHODS, merge

OPTIONS = {"trimmed_mean": {"beta": 0.2}}


def inputs(count: int) -> list[dict[str, np.ndarray]]:
    """`count` parameter sets of several dtypes, spread so that the methods differ."""
    rng = np.random.default_rng(count)
    sets = []
    for i in range(count):
        scale = 1 + i / 7
        sets.append({
            "conv": (rng.normal(size=(33, 17, 9)) * scale).astype(np.float32),
            "head": (rng.normal(size=1001) * scale).astype(np.float64),
            "half": (rng.normal(size=300) * scale).astype(np.float16),
            "steps": rng.integers(-50, 50, size=77).astype(np.int64),
            "mask": rng.random(40) < 0.5,
        })  # fmt: skip
    return sets


def main() -> None:
    digests = {}
    for count in (5, 9):
        sets = inputs(count)
        weights = [float(1 + (3 * i) % 7) for i in range(count)]
        for method in sorted(MERGE_METHODS):
            merged = merge(sets, weights, method=method, **OPTIONS.get(method, {}))
            digests[f"{method}/{count}"] = digest_encoded(encode(merged))
    print(json.dumps(digests, sort_keys=True))


if __name__ == "__main__":
    main()
