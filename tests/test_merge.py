"""Merge methods against plain reference implementations, invariances, robustness, refusals."""

from __future__ import annotations

import itertools
import math
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from openswarm.merge import (
    MERGE_METHODS,
    MergeInputError,
    coordmedian,
    geomedian,
    geomedian_with_info,
    get_merge_method,
    krum,
    mean,
    merge,
    multi_krum,
    trimmed_mean,
)
from openswarm.merge.inputs import prepare
from openswarm.merge.krum import krum_scores

Sets = list[dict[str, np.ndarray]]
SHAPES = {"conv.weight": (3, 2, 2), "conv.bias": (3,), "fc.weight": (4, 5), "scalar": ()}


def random_sets(k: int, seed: int = 0, dtype: type = np.float64) -> Sets:
    rng = np.random.default_rng(seed)
    return [{n: rng.normal(size=s).astype(dtype) for n, s in SHAPES.items()} for _ in range(k)]


def random_weights(k: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 2.0, size=k)


def capped(w: np.ndarray) -> np.ndarray:
    """The weights the robust methods use: each at most the lower median of all."""
    return np.minimum(w, np.sort(w)[(len(w) - 1) // 2])


def flat(params: dict) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in params.values()])


def unflat(vector: np.ndarray, like: dict) -> dict[str, np.ndarray]:
    out, pos = {}, 0
    for name, value in like.items():
        out[name] = vector[pos : pos + value.size].reshape(value.shape)
        pos += value.size
    return out


# ---------------------------------------------------------------- reference implementations


def ref_mean(sets: Sets, w: np.ndarray) -> np.ndarray:
    return sum(wi * flat(s) for wi, s in zip(w, sets, strict=True)) / w.sum()


def ref_weighted_median_1d(values: list[float], weights: list[float]) -> float:
    pairs = sorted(zip(values, weights, strict=True))
    total = sum(weights)
    acc = 0.0
    for i, (value, weight) in enumerate(pairs):
        acc += weight
        if math.isclose(acc, total / 2, rel_tol=1e-12):
            return (value + pairs[i + 1][0]) / 2
        if acc > total / 2:
            return value
    raise AssertionError("unreachable")


def ref_coordmedian(sets: Sets, w: np.ndarray) -> np.ndarray:
    rows = np.stack([flat(s) for s in sets])
    return np.array([ref_weighted_median_1d(list(col), list(w)) for col in rows.T])


def ref_trimmed(sets: Sets, w: np.ndarray, beta: float) -> np.ndarray:
    rows = np.stack([flat(s) for s in sets])
    k = len(sets)
    cut = min((k - 1) // 2, next(c for c in range(k + 1) if c >= beta * k - 1e-12))
    w = capped(w)
    out = []
    for col in rows.T:
        kept = sorted(zip(col, w, strict=True))[cut : len(sets) - cut]
        out.append(sum(v * wi for v, wi in kept) / sum(wi for _, wi in kept))
    return np.array(out)


def ref_weiszfeld(points: np.ndarray, w: np.ndarray, iters: int = 20000) -> np.ndarray:
    z = (w[:, None] * points).sum(0) / w.sum()
    for _ in range(iters):
        d = np.linalg.norm(points - z, axis=1)
        if d.min() < 1e-15:
            break
        a = w / d
        new = (a[:, None] * points).sum(0) / a.sum()
        if np.linalg.norm(new - z) < 1e-15 * max(1.0, np.linalg.norm(z)):
            return new
        z = new
    return z


def geomedian_objective(z: np.ndarray, points: np.ndarray, w: np.ndarray) -> float:
    return float((w * np.linalg.norm(points - z, axis=1)).sum())


def ref_krum_scores(sets: Sets, f: int) -> list[float]:
    vecs = [flat(s) for s in sets]
    scores = []
    for i, v in enumerate(vecs):
        dists = sorted(float(((v - u) ** 2).sum()) for j, u in enumerate(vecs) if j != i)
        scores.append(sum(dists[: len(vecs) - f - 2]))
    return scores


def assert_close(params: dict, expected: np.ndarray, tol: float = 1e-9) -> None:
    np.testing.assert_allclose(flat(params), expected, rtol=tol, atol=tol)


# ---------------------------------------------------------------- against references


@pytest.mark.parametrize("k", [1, 2, 3, 6])
@pytest.mark.parametrize("weighted", [False, True])
def test_mean_matches_reference(k: int, weighted: bool) -> None:
    sets = random_sets(k)
    w = random_weights(k) if weighted else np.ones(k)
    assert_close(mean(sets, w if weighted else None), ref_mean(sets, w))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 8, 16])
@pytest.mark.parametrize("weighted", [False, True])
def test_coordmedian_matches_reference(k: int, weighted: bool) -> None:
    sets = random_sets(k, seed=k)
    w = random_weights(k) if weighted else np.ones(k)
    assert_close(coordmedian(sets, w if weighted else None), ref_coordmedian(sets, capped(w)))


def test_trimmed_mean_with_half_trimming_is_the_median_for_odd_counts() -> None:
    sets = random_sets(5, seed=8)
    assert_close(trimmed_mean(sets, beta=0.5), flat(coordmedian(sets)), tol=0)


def test_numpy_scalars_count_as_zero_dimensional_arrays() -> None:
    out = mean([{"s": np.float32(1.0)}, {"s": np.float32(2.0)}])
    assert isinstance(out["s"], np.ndarray) and out["s"].shape == () and out["s"] == 1.5


def test_coordmedian_tie_at_half_weight_averages_with_next_value() -> None:
    sets = [{"x": np.array([v])} for v in (1.0, 2.0, 10.0, 20.0, 30.0)]
    # cumulative weights 1, 1.5, 2 of total 4: exactly half at 10 -> (10 + 20) / 2
    assert coordmedian(sets, [1, 0.5, 0.5, 1, 1])["x"][0] == 15.0
    assert coordmedian(sets[:3], [1, 1.5, 1.5])["x"][0] == 2.0
    assert coordmedian(sets[:2])["x"][0] == 1.5


@pytest.mark.parametrize(("k", "beta"), [(3, 0.0), (5, 0.2), (6, 0.25), (10, 0.1), (16, 0.3)])
@pytest.mark.parametrize("weighted", [False, True])
def test_trimmed_mean_matches_reference(k: int, beta: float, weighted: bool) -> None:
    sets = random_sets(k, seed=k + 100)
    w = random_weights(k) if weighted else np.ones(k)
    expected = ref_trimmed(sets, w, beta)
    assert_close(trimmed_mean(sets, w if weighted else None, beta=beta), expected)


@pytest.mark.parametrize("weighted", [False, True])
def test_geomedian_matches_reference_and_is_optimal(weighted: bool) -> None:
    k = 7
    sets = random_sets(k, seed=3)
    w = random_weights(k) if weighted else np.ones(k)
    info = geomedian_with_info(sets, w if weighted else None, tol=1e-12, max_iter=2000)
    assert info.converged
    points = np.stack([flat(s) for s in sets])
    z = flat(info.params)
    w = capped(w)
    np.testing.assert_allclose(z, ref_weiszfeld(points, w), atol=1e-7)
    # Optimality: the objective's gradient vanishes, and no small move improves it.
    diff = z - points
    grad = (w[:, None] * diff / np.linalg.norm(diff, axis=1)[:, None]).sum(0)
    assert np.linalg.norm(grad) < 1e-6 * w.sum()
    best = geomedian_objective(z, points, w)
    rng = np.random.default_rng(0)
    for _ in range(20):
        step = rng.normal(size=z.shape) * 1e-4
        assert geomedian_objective(z + step, points, w) >= best - 1e-12


def test_geomedian_default_stops_on_relative_step() -> None:
    sets = random_sets(6, seed=9)
    info = geomedian_with_info(sets)
    assert info.converged and 1 <= info.iterations <= 50
    assert info.final_step <= 1e-6
    capped = geomedian_with_info(sets, max_iter=1, tol=1e-15)
    assert not capped.converged and capped.iterations == 1 and capped.final_step > 1e-15
    assert list(geomedian(sets)) == list(SHAPES)


def test_geomedian_at_a_data_point_uses_vardi_zhang_not_division_by_zero() -> None:
    # Collinear points: the geometric median is the middle point itself.
    sets = [{"v": np.array([x, 2 * x])} for x in (-1.0, 0.5, 3.0)]
    info = geomedian_with_info(sets, max_iter=500)
    np.testing.assert_array_equal(info.params["v"], [0.5, 1.0])
    assert info.converged and info.iterations == 0
    # Two peers at one point hold two thirds of the weight: that point is the median.
    sets = random_sets(2, seed=5)
    info = geomedian_with_info([sets[0], sets[1], sets[0]])
    assert info.converged and info.iterations == 0
    assert_close(info.params, flat(sets[0]), tol=0)


def test_geomedian_caps_a_peer_that_declares_most_of_the_weight() -> None:
    # Declaring more than half the weight would make a peer the median; its weight is
    # capped at the lower median of the weights, so here all four weigh the same.
    sets = random_sets(4, seed=5)
    gamed = geomedian_with_info(sets, [5.0, 1.0, 1.0, 1.0])
    assert gamed.converged and all(np.isfinite(flat(gamed.params)))
    assert_close(gamed.params, flat(geomedian(sets)), tol=0)
    assert np.abs(flat(gamed.params) - flat(sets[0])).max() > 0.1


def test_geomedian_of_two_equal_weight_sets_is_their_mean() -> None:
    sets = random_sets(2, seed=6)
    assert_close(geomedian(sets), ref_mean(sets, np.ones(2)), tol=1e-12)
    # with two peers neither can outweigh the other (weights capped at the lower one)
    assert_close(geomedian(sets, [2.0, 1.0]), ref_mean(sets, np.ones(2)), tol=1e-12)


def test_geomedian_of_identical_sets_is_that_set() -> None:
    sets = random_sets(1) * 4
    info = geomedian_with_info(sets)
    assert info.converged and info.iterations == 0
    assert_close(info.params, flat(sets[0]), tol=0)


@pytest.mark.parametrize(("k", "f"), [(3, 0), (5, 1), (7, 2), (8, 1)])
def test_krum_and_multi_krum_match_reference(k: int, f: int) -> None:
    sets = random_sets(k, seed=k * 7)
    for i, s in enumerate(sets):  # spread the sets so scores differ clearly
        for v in s.values():
            v *= 1 + i / 3
    scores = ref_krum_scores(sets, f)
    best = int(np.argmin(scores))
    assert_close(krum(sets, f=f), flat(sets[best]), tol=0)
    w = random_weights(k)
    for m in (1, 2, k - f):
        chosen = sorted(np.argsort(scores, kind="stable")[:m])
        expected = ref_mean([sets[i] for i in chosen], capped(w)[chosen])
        assert_close(multi_krum(sets, w, f=f, m=m), expected)
    default = sorted(np.argsort(scores, kind="stable")[: k - f])
    assert_close(multi_krum(sets, f=f), ref_mean([sets[i] for i in default], np.ones(k - f)))


def test_krum_counts_k_minus_f_minus_2_neighbours() -> None:
    sets = [{"x": np.array([v])} for v in (0.0, 1.0, 2.0, 10.0, 10.5)]
    # f=1: 2 nearest -> scores 5, 2, 5, 64.25, 72.5; f=0: 3 nearest -> 105, 83, 69, ...
    assert krum(sets, f=1)["x"][0] == 1.0
    assert krum(sets, f=0)["x"][0] == 2.0
    assert multi_krum(sets, f=1, m=3)["x"][0] == 1.0  # mean of 0, 1, 2
    assert multi_krum(sets, f=0, m=2)["x"][0] == 1.5  # scores 69 and 83: peers 2 and 1
    prep = prepare(sets)
    np.testing.assert_allclose(krum_scores(prep, 1), ref_krum_scores(sets, 1))


def test_krum_default_f_is_the_largest_allowed() -> None:
    sets = random_sets(7, seed=2)
    assert_close(krum(sets), flat(krum(sets, f=2)), tol=0)
    assert_close(multi_krum(sets), flat(multi_krum(sets, f=2)), tol=0)


def test_krum_returns_a_copy() -> None:
    sets = random_sets(5)
    out = krum(sets, f=1)
    for s in sets:
        for name in s:
            assert not np.shares_memory(out[name], s[name])


# ---------------------------------------------------------------- invariances

ALL = ["mean", "coordmedian", "geomedian", "trimmed_mean", "krum", "multi_krum"]
OPTIONS: dict[str, dict] = {"trimmed_mean": {"beta": 0.2}, "krum": {"f": 1}, "multi_krum": {"f": 1}}


def run(method: str, sets: Sets, weights=None) -> dict:
    return merge(sets, weights, method=method, **OPTIONS.get(method, {}))


@pytest.mark.parametrize("method", ALL)
def test_peer_order_does_not_matter(method: str) -> None:
    sets, w = random_sets(6, seed=11), random_weights(6)
    perm = [3, 0, 5, 1, 4, 2]
    a = run(method, sets, w)
    b = run(method, [sets[i] for i in perm], w[perm])
    assert_close(b, flat(a), tol=1e-9)


@pytest.mark.parametrize("method", ALL)
def test_scaling_all_weights_does_not_matter(method: str) -> None:
    sets, w = random_sets(6, seed=12), random_weights(6)
    assert_close(run(method, sets, w * 1000.0), flat(run(method, sets, w)), tol=1e-9)
    assert_close(run(method, sets, [2.5] * 6), flat(run(method, sets)), tol=1e-9)


@pytest.mark.parametrize("method", ["mean", "coordmedian", "geomedian", "trimmed_mean"])
def test_a_single_peer_returns_itself(method: str) -> None:
    sets = random_sets(1, seed=4)
    out = run(method, sets)
    assert list(out) == list(sets[0])
    assert_close(out, flat(sets[0]), tol=0)


@pytest.mark.parametrize("method", ALL)
def test_weight_zero_removes_a_peer(method: str) -> None:
    sets, w = random_sets(7, seed=13), random_weights(7)
    garbage = {n: np.full(s, 1e9) for n, s in SHAPES.items()}
    with_zero = [*sets[:3], garbage, *sets[3:]]
    w_zero = np.concatenate([w[:3], [0.0], w[3:]])
    assert_close(run(method, with_zero, w_zero), flat(run(method, sets, w)), tol=1e-12)


@pytest.mark.parametrize("method", ALL)
def test_outputs_keep_names_order_dtypes_and_kind(method: str) -> None:
    sets = random_sets(6, seed=14, dtype=np.float32)
    for s in sets:
        s["steps"] = np.array(10, np.int64)
        s["half"] = s["fc.weight"].astype(np.float16)
    out = run(method, sets)
    assert list(out) == list(sets[0])
    for name, value in out.items():
        assert isinstance(value, np.ndarray)
        assert value.dtype == sets[0][name].dtype and value.shape == sets[0][name].shape
    assert out["steps"] == 10


@pytest.mark.parametrize("method", ALL)
def test_inputs_are_not_modified(method: str) -> None:
    sets = random_sets(6, seed=15)
    before = [flat(s).copy() for s in sets]
    run(method, sets, random_weights(6))
    for s, b in zip(sets, before, strict=True):
        np.testing.assert_array_equal(flat(s), b)


# ---------------------------------------------------------------- robustness


@pytest.mark.parametrize(
    "method", ["coordmedian", "geomedian", "trimmed_mean", "krum", "multi_krum"]
)
def test_robust_methods_resist_one_huge_peer_and_mean_does_not(method: str) -> None:
    rng = np.random.default_rng(21)
    centre = {n: rng.normal(size=s) for n, s in SHAPES.items()}
    honest = [{n: v + 0.01 * rng.normal(size=v.shape) for n, v in centre.items()} for _ in range(5)]
    attacker = {n: v * 1e6 for n, v in honest[0].items()}
    sets = [*honest[:2], attacker, *honest[2:]]
    honest_mean = ref_mean(honest, np.ones(5))
    out = run(method, sets)
    assert np.abs(flat(out) - honest_mean).max() < 0.05
    assert np.abs(flat(mean(sets)) - honest_mean).max() > 1000


# ---------------------------------------------------------------- integers, bools, 16-bit


@pytest.mark.parametrize("method", ALL)
def test_integer_and_bool_rule(method: str) -> None:
    rng = np.random.default_rng(3)
    counts = [1, 2, 4, 4, 9]
    flags = [True, True, False, True, False]
    sets = [
        {"w": rng.normal(size=4), "n": np.array(c, np.int64), "b": np.array([f, not f])}
        for c, f in zip(counts, flags, strict=True)
    ]
    for i, s in enumerate(sets):
        s["w"] += i
    out = run(method, sets)
    assert out["n"].dtype == np.int64 and out["b"].dtype == np.bool_
    expected_n = {"mean": 4, "coordmedian": 4, "geomedian": 4, "trimmed_mean": 3}  # 20/5; 10/3
    if method in expected_n:
        assert out["n"] == expected_n[method]
        assert out["b"].tolist() == [True, False]  # 3 of 5 vote True in the first flag


def test_integer_rounding_is_half_to_even_and_bool_ties_are_false() -> None:
    two = [
        {"n": np.array([1, 2, -3], np.int32), "b": np.array([True])},
        {
            "n": np.array([2, 3, -2], np.int32),
            "b": np.array([False]),
        },
    ]
    out = mean(two)
    assert out["n"].tolist() == [2, 2, -2]  # 1.5 -> 2, 2.5 -> 2, -2.5 -> -2
    assert out["b"].tolist() == [False]  # exactly half: no strict majority
    assert mean(two, [2, 1])["b"].tolist() == [True]
    assert coordmedian(two)["n"].tolist() == [2, 2, -2]
    u8 = [{"x": np.array([250], np.uint8)}, {"x": np.array([255], np.uint8)}]
    assert mean(u8)["x"].tolist() == [252]  # 252.5 -> 252


def test_float16_computes_in_float32_and_casts_back() -> None:
    sets = [{"h": np.full(4, v, np.float16)} for v in (2048.0, 2049.0, 2050.0, 2051.0)]
    # float16 has spacing 2 at 2048: inputs 2048, 2048, 2050, 2052; exact mean 2049.5 -> 2050
    out = mean(sets)["h"]
    assert out.dtype == np.float16
    expected = np.float16(np.mean([np.float32(s["h"][0]) for s in sets]))
    assert out.tolist() == [float(expected)] * 4


def test_large_float32_sums_do_not_overflow() -> None:
    sets = [{"x": np.full(10, 3e38, np.float32)} for _ in range(3)]
    out = mean(sets)["x"]
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, 3e38, rtol=1e-6)


# ---------------------------------------------------------------- torch


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_torch_in_torch_out(method: str, dtype: torch.dtype) -> None:
    sets = random_sets(6, seed=30, dtype=np.float32)
    tsets = [{n: torch.from_numpy(v).to(dtype) for n, v in s.items()} for s in sets]
    for s in tsets:
        s["num_batches_tracked"] = torch.tensor(5)
    out = run(method, tsets)
    assert list(out) == list(tsets[0])
    for name, value in out.items():
        assert isinstance(value, torch.Tensor)
        assert value.dtype == tsets[0][name].dtype
        assert value.shape == tsets[0][name].shape
    ref = run(method, [{n: v.float().numpy() for n, v in s.items()} for s in tsets])
    got = {n: v.float().numpy() for n, v in out.items()}
    tol = {torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    np.testing.assert_allclose(flat(got), flat(ref), rtol=tol, atol=tol)


def test_bfloat16_mean_rounds_like_torch() -> None:
    gen = torch.Generator().manual_seed(0)
    tsets = [{"w": torch.randn(1000, generator=gen).to(torch.bfloat16)} for _ in range(4)]
    out = mean(tsets)["w"]
    expected = (torch.stack([s["w"].float() for s in tsets]).sum(0) * 0.25).to(torch.bfloat16)
    assert torch.equal(out, expected)


def test_non_contiguous_torch_inputs() -> None:
    base = [torch.randn(3, 4) for _ in range(3)]
    out = mean([{"w": b.t()} for b in base])["w"]
    torch.testing.assert_close(out, torch.stack(base).mean(0).t())


# ---------------------------------------------------------------- refusals


def _sets(k: int = 5) -> Sets:
    return random_sets(k, seed=40)


def _with(peer: int, **changes: object) -> Sets:
    sets = _sets()
    sets[peer] = {**sets[peer], **changes}
    return sets


def _without(peer: int, name: str) -> Sets:
    sets = _sets()
    sets[peer] = {k: v for k, v in sets[peer].items() if k != name}
    return sets


BAD_INPUTS: list[tuple[str, Callable[[], tuple], str]] = [
    ("empty", lambda: ([], None), "at least one"),
    ("one mapping", lambda: (_sets()[0], None), "sequence of parameter sets"),
    ("not a mapping", lambda: ([*_sets()[:2], [1, 2]], None), "peer 2: expected a mapping"),
    ("missing", lambda: (_without(3, "fc.weight"), None), r"peer 3: missing .*'fc\.weight'"),
    ("extra", lambda: (_with(2, extra=np.zeros(1)), None), "peer 2: unexpected .*'extra'"),
    (
        "shape",
        lambda: (_with(4, **{"conv.bias": np.zeros(4)}), None),
        r"peer 4, tensor 'conv\.bias': shape \(4,\) differs from peer 0's \(3,\)",
    ),
    (
        "dtype",
        lambda: (_with(1, **{"fc.weight": np.zeros((4, 5), np.float32)}), None),
        r"peer 1, tensor 'fc\.weight': dtype float32 differs from peer 0's float64",
    ),
    (
        "nan",
        lambda: (_with(2, **{"fc.weight": np.full((4, 5), np.nan)}), None),
        r"peer 2, tensor 'fc\.weight': contains NaN",
    ),
    (
        "inf",
        lambda: (_with(3, scalar=np.array(-np.inf)), None),
        r"peer 3, tensor 'scalar': contains NaN or infinity",
    ),
    (
        "nan in zero-weight peer",
        lambda: (_with(3, scalar=np.array(np.nan)), [1, 1, 1, 0, 1]),
        r"peer 3, tensor 'scalar': contains NaN",
    ),
    (
        "unsupported dtype",
        lambda: (_with(1, scalar=np.array(1 + 2j)), None),
        r"peer 1, tensor 'scalar': unsupported dtype complex128",
    ),
    (
        "not an array",
        lambda: (_with(2, scalar=1.5), None),
        r"peer 2, tensor 'scalar': expected a numpy array or torch tensor, got float",
    ),
    (
        "mixed numpy and torch",
        lambda: (_with(3, scalar=torch.tensor(1.0, dtype=torch.float64)), None),
        r"peer 3, tensor 'scalar': got a torch tensor but peer 0 gives numpy arrays",
    ),
    ("weights count", lambda: (_sets(), [1, 1, 1]), "expected 5 values"),
    ("negative weight", lambda: (_sets(), [1, 1, -1, 1, 1]), r"weights\[2\] = -1.0"),
    ("nan weight", lambda: (_sets(), [1, 1, 1, float("nan"), 1]), r"weights\[3\] = nan"),
    ("zero total", lambda: (_sets(), [0, 0, 0, 0, 0]), "weights sum to 0"),
    ("non-numeric weights", lambda: (_sets(), ["a"] * 5), "weights must be a sequence"),
]


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize(("case", "make", "pattern"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs_raise_merge_input_error(method: str, case: str, make, pattern: str) -> None:
    sets, weights = make()
    with pytest.raises(MergeInputError, match=pattern):
        merge(sets, weights, method=method)
    assert issubclass(MergeInputError, ValueError)


def test_nan_deep_inside_a_large_tensor_names_the_peer_in_streaming_mean() -> None:
    sets = [{"a": np.ones(10), "big": np.ones(300_000, np.float32)} for _ in range(4)]
    sets[2]["big"] = sets[2]["big"].copy()
    sets[2]["big"][250_001] = np.inf
    with pytest.raises(MergeInputError, match=r"peer 2, tensor 'big'"):
        mean(sets)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda s: krum(s[:4], f=1), r"f=1 needs at least 2f\+3 = 5 .* got 4"),
        (lambda s: krum(s, [1, 1, 1, 0, 0], f=1), "got 3"),
        (lambda s: krum(s[:2]), "at least 3 parameter sets"),
        (lambda s: krum(s, f=-1), "f must be an int"),
        (lambda s: multi_krum(s, f=1, m=0), r"m must be an int in \[1, 5\]"),
        (lambda s: multi_krum(s, f=1, m=6), "m must be"),
        (lambda s: trimmed_mean(s, beta=0.6), r"beta must be a number in \[0, 0.5\]"),
        (lambda s: trimmed_mean(s, beta=-0.1), "beta must be"),
        (lambda s: trimmed_mean(s[:2], beta=0.49), None),
        (lambda s: trimmed_mean(s[:4], beta=0.5), None),  # drops 1 from each end
        (lambda s: geomedian(s, tol=0), "tol must be"),
        (lambda s: geomedian(s, max_iter=-1), "max_iter"),
        (lambda s: get_merge_method("median"), "unknown merge method 'median'; valid: coordmed"),
        (lambda s: merge(s, method="mean", beta=0.1), "has no option"),
    ],
)
def test_bad_options_raise_merge_input_error(call, pattern: str | None) -> None:
    sets = _sets()
    if pattern is None:
        call(sets)
        return
    with pytest.raises(MergeInputError, match=pattern):
        call(sets)


# ---------------------------------------------------------------- registry and memory


def test_registry_lists_every_method() -> None:
    assert set(MERGE_METHODS) == set(ALL)
    for name, func in MERGE_METHODS.items():
        assert get_merge_method(name) is func
    sets = _sets()
    assert_close(merge(sets), flat(mean(sets)), tol=0)
    assert_close(merge(sets, method="trimmed_mean", beta=0.2), flat(trimmed_mean(sets, beta=0.2)))


@pytest.mark.parametrize("method", ["mean", "coordmedian", "trimmed_mean", "geomedian"])
def test_extra_memory_is_about_one_parameter_set_for_any_peer_count(method: str) -> None:
    size = 2_000_000  # 8 MB of float32 per set
    sets = [{"w": np.full(size, float(i), np.float32)} for i in range(12)]
    tracemalloc.start()
    try:
        run(method, sets)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.3 * size * 4, f"{method}: peak {peak / 2**20:.1f} MiB"


def test_mean_into_kept_outputs_matches_and_checks_them() -> None:
    rng = np.random.default_rng(7)
    sets = [
        {"w": rng.standard_normal((3, 4)).astype(np.float32), "n": np.array(i, np.int64)}
        for i in range(3)
    ]
    weights = [1.0, 2.0, 3.0]
    out = {"w": np.full((3, 4), np.nan, np.float32), "n": np.empty((), np.int64)}
    merged = mean(sets, weights, out=out)
    expected = mean(sets, weights)
    for name in expected:
        np.testing.assert_array_equal(merged[name], expected[name])
        assert np.shares_memory(merged[name], out[name])
    with pytest.raises(MergeInputError, match=r"out\['w'\] must be"):
        mean(sets, weights, out={"w": np.empty((3, 4), np.float64), "n": out["n"]})
    with pytest.raises(MergeInputError, match=r"out\['n'\] must be"):
        mean(sets, weights, out={"w": out["w"]})


# ---------------------------------------------------------------- weight gaming


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    dims=st.integers(1, 5),
    honest_weights=st.lists(st.integers(1, 100), min_size=4, max_size=4),
    distance=st.sampled_from([0.3, 1.0, 3.0, 1e3, 1e6]),
)
def test_one_peer_at_the_largest_weight_moves_no_robust_method_beyond_the_honest_spread(
    seed: int, dims: int, honest_weights: list[int], distance: float
) -> None:
    # Five peers: four honest ones with declared weights 1-100, one hostile at weight 100
    # placed near or far, in any direction. Coordinate-wise methods stay within the honest
    # peers' range of each coordinate; geomedian and multi-Krum move from the honest-only
    # result by at most the honest peers' diameter; Krum ignores weights altogether.
    rng = np.random.default_rng(seed)
    honest = rng.normal(size=(4, dims)) * rng.uniform(0.1, 3.0)
    direction = rng.normal(size=dims)
    hostile = honest.mean(0) + distance * np.abs(honest).max() * direction / np.linalg.norm(
        direction
    )
    sets = [{"x": row} for row in (*honest, hostile)]
    weights = [*map(float, honest_weights), 100.0]
    low, high = honest.min(0), honest.max(0)
    for method in ("coordmedian", "trimmed_mean"):
        got = merge(sets, weights, method=method)["x"]
        assert np.all((low - 1e-9 <= got) & (got <= high + 1e-9)), method
    diameter = max(np.linalg.norm(a - b) for a, b in itertools.combinations(honest, 2))
    for method, alone in (("geomedian", {}), ("multi_krum", {"f": 0})):
        got = merge(sets, weights, method=method)["x"]
        base = merge(sets[:4], weights[:4], method=method, **alone)["x"]
        assert np.linalg.norm(got - base) <= diameter * (1 + 1e-9), method
    assert_close(krum(sets, weights), flat(krum(sets)), tol=0)
