"""Merging layer by layer gives the very bits of the whole-set merge, while holding about one
tensor per peer (openswarm.merge.layered)."""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import pytest

from openswarm.codec.arrays import flat_storage
from openswarm.codec.tensors import structure
from openswarm.merge import MergeInputError, merge
from openswarm.merge.layered import LazyTensors, merge_layered

METHODS = {
    "coordmedian": {},
    "trimmed_mean": {"beta": 0.2},
    "geomedian": {"tol": 1e-9},
    "krum": {},
    "multi_krum": {"m": 3},
}


def _sets(count: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    sets = []
    for i in range(count):
        far = 50.0 if i == count - 1 else 1.0  # one peer far away
        sets.append({
            "conv": (rng.standard_normal((8, 3, 5, 5)) * far).astype(np.float32),
            "bias": rng.standard_normal(8).astype(np.float64),
            "steps": np.array([i * 3, 7], np.int64),
            "mask": rng.random(6) > 0.5,
            "head": (rng.standard_normal((64, 10)) * far).astype(np.float16),
        })  # fmt: skip
    return sets


class Alive:
    """Counts the loaded tensors still alive, and the most there ever were."""

    def __init__(self) -> None:
        self.now = self.most = 0

    def track(self, array: np.ndarray) -> np.ndarray:
        self.now += 1
        self.most = max(self.most, self.now)
        weakref.finalize(array, self._gone)
        return array

    def _gone(self) -> None:
        self.now -= 1


def _loaders(sets: list[dict[str, Any]], alive: Alive) -> list[Any]:
    specs = list(structure(sets[0]).values())

    def loader(params: dict[str, Any]) -> Any:
        # a fresh copy per load, as a file read would give
        return lambda t: alive.track(flat_storage(params[specs[t].name], specs[t].dtype).copy())

    return [loader(p) for p in sets]


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("seed", [1, 2])
def test_layer_by_layer_gives_the_whole_set_merge_bit_for_bit(method: str, seed: int) -> None:
    sets = _sets(7, seed)
    weights = [3.0, 1.0, 2.0, 0.0, 5.0, 1.0, 100.0]  # one peer dropped, one capped
    alive = Alive()
    got = merge_layered(list(structure(sets[0]).values()), _loaders(sets, alive), weights,
                        method, METHODS[method])  # fmt: skip
    expected = merge(sets, weights, method=method, **METHODS[method])
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype and np.array_equal(got[name], value), name
    # one tensor per kept peer at a time (and the one a next load replaces)
    assert alive.most <= 6 + 1, alive.most


def test_lazy_tensors_load_each_tensor_once_per_pass() -> None:
    loaded = []
    lazy = LazyTensors(3, lambda t: loaded.append(t) or np.full(2, t))
    assert [int(a[0]) for a in lazy] == [0, 1, 2] and loaded == [0, 1, 2]
    assert lazy[2][0] == 2 and lazy[-1][0] == 2 and loaded == [0, 1, 2]  # held: not again
    assert [int(a[0]) for a in lazy[0:2]] == [0, 1] and len(lazy) == 3 and lazy.loads == 5
    with pytest.raises(IndexError):
        lazy[3]


def test_mean_is_refused_it_streams_instead() -> None:
    sets = _sets(3, 1)
    with pytest.raises(MergeInputError, match="does not take prepared inputs"):
        merge_layered(list(structure(sets[0]).values()), _loaders(sets, Alive()), [1, 1, 1],
                      "mean")  # fmt: skip
    with pytest.raises(MergeInputError, match="no option"):
        merge_layered(list(structure(sets[0]).values()), _loaders(sets, Alive()), [1, 1, 1],
                      "krum", {"beta": 0.1})  # fmt: skip
