"""Server-side optimizers (merge/server_opt.py) against references written here from the
formulas of Hsu et al. 2019 (FedAvgM) and Reddi et al. 2021 (FedAdam, FedYogi,
FedAdagrad); their state as data; and the settings that refuse what they cannot run."""

from __future__ import annotations

from collections.abc import Mapping

import ml_dtypes
import numpy as np
import pytest

from openswarm.codec.tensors import structure
from openswarm.ledger.contract import ContractError, ContractSettings
from openswarm.merge import MergeInputError
from openswarm.merge.server_opt import (
    OPTIMIZERS,
    check_options,
    initial,
    merged_structure,
    model_part,
    state_name,
    step,
)
from openswarm.node.settings import SwarmSettings
from openswarm.protocol import CONTROL_VARIATE_PREFIX, SERVER_OPTIMIZERS, SwarmConfigError

SHAPES = {"fc.weight": (3, 4), "fc.bias": (4,), "scale": ()}
#: Hyperparameters away from the defaults, so that a step that ignored them would show.
OPTIONS = {
    "fedavgm": {"server_lr": 0.7, "momentum": 0.5},
    "fedadam": {"server_lr": 0.1, "beta1": 0.8, "beta2": 0.95, "tau": 0.01},
    "fedyogi": {"server_lr": 0.1, "beta1": 0.8, "beta2": 0.95, "tau": 0.01},
    "fedadagrad": {"server_lr": 0.1, "beta1": 0.5, "tau": 0.01},
}
ROUNDS = 5


def random_params(seed: int, dtype: type = np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: np.asarray(rng.normal(size=s)).astype(dtype) for n, s in SHAPES.items()}


def reference(method: str, hyper: Mapping[str, float], x: np.ndarray, means: list[np.ndarray]):
    """The optimizer over rounds of `means`, in float64, straight from the papers' formulas
    (no bias correction): the final parameters and state (m, v)."""
    x = x.astype(np.float64)
    m, v = np.zeros_like(x), np.zeros_like(x)
    for mean in means:
        delta = mean.astype(np.float64) - x
        if method == "fedavgm":
            m = hyper["momentum"] * m + delta
            x = x + hyper["server_lr"] * m
            continue
        m = hyper["beta1"] * m + (1 - hyper["beta1"]) * delta
        if method == "fedadam":
            v = hyper["beta2"] * v + (1 - hyper["beta2"]) * delta**2
        elif method == "fedyogi":
            v = v - (1 - hyper["beta2"]) * delta**2 * np.sign(v - delta**2)
        else:
            v = v + delta**2
        x = x + hyper["server_lr"] * m / (np.sqrt(v) + hyper["tau"])
    return x, m, v


def run_rounds(method: str, options: Mapping[str, float], start: dict, means: list[dict]) -> dict:
    """`step` round after round, each round's merged model the next one's previous."""
    specs = structure(start)
    merged = initial(method, start, specs)
    for mean in means:
        merged = step(method, options, merged, mean, specs)
    return merged


@pytest.mark.parametrize("method", SERVER_OPTIMIZERS)
def test_each_optimizer_matches_its_paper_formulas_with_state_carried_over_rounds(
    method: str,
) -> None:
    start = random_params(0)
    means = [random_params(10 + r) for r in range(ROUNDS)]
    merged = run_rounds(method, OPTIONS[method], start, means)
    for name in SHAPES:
        x, m, v = reference(method, OPTIONS[method], start[name], [mean[name] for mean in means])
        np.testing.assert_allclose(merged[name], x, rtol=2e-5, atol=2e-6, err_msg=name)
        np.testing.assert_allclose(merged[state_name("m", name)], m, rtol=2e-5, atol=2e-6)
        if "v" in OPTIMIZERS[method].slots:
            np.testing.assert_allclose(merged[state_name("v", name)], v, rtol=2e-5, atol=2e-6)
        assert merged[name].dtype == np.float32 and merged[name].shape == SHAPES[name]
    # the optimizer moved the model somewhere other than the last round's mean
    assert not np.allclose(merged["fc.weight"], means[-1]["fc.weight"])


@pytest.mark.parametrize("method", SERVER_OPTIMIZERS)
def test_default_options_are_the_documented_ones(method: str) -> None:
    start = random_params(1)
    means = [random_params(20 + r) for r in range(3)]
    merged = run_rounds(method, {}, start, means)
    x, _, _ = reference(method, OPTIMIZERS[method].defaults, start["fc.weight"],
                        [mean["fc.weight"] for mean in means])  # fmt: skip
    np.testing.assert_allclose(merged["fc.weight"], x, rtol=2e-5, atol=2e-6)


def test_fedavgm_with_no_momentum_and_unit_rate_is_the_plain_mean() -> None:
    start, mean = random_params(2), random_params(3)
    specs = structure(start)
    merged = step("fedavgm", {"momentum": 0.0, "server_lr": 1.0},
                  initial("fedavgm", start, specs), mean, specs)  # fmt: skip
    for name in SHAPES:
        np.testing.assert_allclose(merged[name], mean[name], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", SERVER_OPTIMIZERS)
def test_initial_merged_model_is_the_model_then_zero_state_per_slot(method: str) -> None:
    start = random_params(4)
    start["big"] = np.ones((2, 2), np.float64)
    specs = structure(start)
    full = initial(method, start, specs)
    slots = OPTIMIZERS[method].slots
    expected = list(start) + [state_name(s, n) for s in slots for n in start]
    assert list(full) == expected == list(merged_structure(method, specs))
    for name, value in start.items():
        assert full[name] is value  # the model as it is
        for slot in slots:
            state = full[state_name(slot, name)]
            assert state.shape == value.shape and not state.any()
            # float32 state for float32 tensors, float64 for float64 ones
            assert state.dtype == (np.float64 if name == "big" else np.float32)
    assert list(model_part(full)) == list(start)
    assert state_name("m", "fc.bias") == "openswarm:opt/m/fc.bias"


@pytest.mark.parametrize("method", ["fedavgm", "fedadam"])
def test_integer_tensors_and_control_variates_take_the_mean_and_get_no_state(
    method: str,
) -> None:
    variate = CONTROL_VARIATE_PREFIX + "fc.weight"
    start = {**random_params(5), "steps": np.array(3, np.int64),
             variate: np.zeros((3, 4), np.float32)}  # fmt: skip
    mean = {**random_params(6), "steps": np.array(7, np.int64),
            variate: np.full((3, 4), 0.25, np.float32)}  # fmt: skip
    specs = structure(start)
    full_specs = merged_structure(method, specs)
    for slot in OPTIMIZERS[method].slots:
        assert state_name(slot, "fc.weight") in full_specs
        assert state_name(slot, "steps") not in full_specs
        assert state_name(slot, variate) not in full_specs
    merged = step(method, {}, initial(method, start, specs), mean, specs)
    merged = step(method, {}, merged, mean, specs)  # twice: a stepped one would drift on
    assert merged["steps"].dtype == np.int64 and int(merged["steps"]) == 7
    assert merged[variate].dtype == np.float32
    np.testing.assert_array_equal(merged[variate], mean[variate])
    assert list(merged) == list(full_specs)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("method", ["fedavgm", "fedadam"])
def test_half_precision_params_keep_their_dtype_and_state_is_float32(method, dtype) -> None:
    start = random_params(7, dtype)
    means = [random_params(30 + r, dtype) for r in range(3)]
    specs = structure(start)
    assert all(state.dtype == np.float32 for name, state in initial(method, start, specs).items()
               if name.startswith("openswarm:opt/"))  # fmt: skip
    merged = run_rounds(method, OPTIONS[method], start, means)
    for name in SHAPES:
        assert merged[name].dtype == np.dtype(dtype) and merged[name].shape == SHAPES[name]
        for slot in OPTIMIZERS[method].slots:
            assert merged[state_name(slot, name)].dtype == np.float32
    # within half precision of the float64 reference (each round's model is rounded)
    x, _, _ = reference(method, OPTIONS[method], start["fc.weight"].astype(np.float64),
                        [mean["fc.weight"].astype(np.float64) for mean in means])  # fmt: skip
    np.testing.assert_allclose(merged["fc.weight"].astype(np.float64), x, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("method", SERVER_OPTIMIZERS)
def test_a_step_is_deterministic_to_the_bit(method: str) -> None:
    start, mean = random_params(8), random_params(9)
    specs = structure(start)
    previous = run_rounds(method, OPTIONS[method], start, [random_params(40)])
    first = step(method, OPTIONS[method], previous, mean, specs)
    second = step(method, OPTIONS[method], previous, mean, specs)
    assert list(first) == list(second)
    for name in first:
        assert first[name].dtype == second[name].dtype
        assert first[name].tobytes() == second[name].tobytes(), name


def test_a_step_does_not_change_its_inputs() -> None:
    start, mean = random_params(8), random_params(9)
    specs = structure(start)
    previous = run_rounds("fedadam", {}, start, [random_params(41)])
    kept = {name: value.copy() for name, value in previous.items()}
    step("fedadam", {}, previous, mean, specs)
    for name, value in kept.items():
        assert previous[name].tobytes() == value.tobytes(), name


def test_a_previous_model_without_state_counts_as_zero_state_but_partial_state_is_refused() -> None:
    start, mean = random_params(10), random_params(11)
    specs = structure(start)
    # the initial sync: the leader's model alone, which the contract checks as its snapshot
    alone = step("fedadam", {}, start, mean, specs)
    zero = step("fedadam", {}, initial("fedadam", start, specs), mean, specs)
    assert list(alone) == list(zero)
    assert all(alone[n].tobytes() == zero[n].tobytes() for n in zero)
    # fedavgm's state (m only) is not enough for fedadam (m and v)
    with pytest.raises(MergeInputError, match="openswarm:opt/v/"):
        step("fedadam", {}, initial("fedavgm", start, specs), mean, specs)


@pytest.mark.parametrize(
    ("method", "options", "named"),
    [
        ("fedadam", {"momentum": 0.9}, "momentum"),  # fedavgm's option
        ("fedavgm", {"bogus": 1}, "bogus"),
        ("fedadagrad", {"beta2": 0.9}, "beta2"),  # adagrad has no second decay
        ("fedadam", {"beta1": "0.9"}, "beta1"),
        ("fedavgm", {"server_lr": True}, "server_lr"),
        ("fedadam", {"beta2": 1}, "beta2"),
        ("fedavgm", {"momentum": -0.1}, "momentum"),
        ("fedadam", {"tau": 0}, "tau"),
        ("fedyogi", {"server_lr": 0}, "server_lr"),
        ("fedadagrad", {"beta1": 1.0}, "beta1"),
    ],
)
def test_check_options_refuses_a_bad_option_and_names_it(method, options, named) -> None:
    with pytest.raises(MergeInputError, match=named):
        check_options(method, options)


def test_check_options_fills_the_defaults_and_takes_what_fits() -> None:
    assert check_options("fedadam", {"beta1": 0}) == {"server_lr": 0.01, "beta1": 0.0,
                                                     "beta2": 0.99, "tau": 1e-3}  # fmt: skip
    assert check_options("fedavgm", {"momentum": 0.5}) == {"server_lr": 1.5, "momentum": 0.5}
    with pytest.raises(MergeInputError, match="not a server optimizer"):
        check_options("mean", {})


@pytest.mark.parametrize(
    ("settings", "fix"),
    [
        ({"merge_topology": "sharded"}, "needs merge_topology leader"),
        ({"compression": "float16"}, "use one of none, zstd"),
        ({"compression": "int8+zstd"}, "use one of none, zstd"),
        ({"merge_options": {"learning_rate": 0.1}}, "options: server_lr"),
        ({"merge_options": {"beta2": 1}}, "beta2 must be"),
    ],
)
def test_site_settings_refuse_what_a_server_optimizer_cannot_run(settings, fix) -> None:
    with pytest.raises(SwarmConfigError, match=fix):
        SwarmSettings(merge_method="fedadam", **settings)


def test_site_settings_take_a_server_optimizer_with_its_options() -> None:
    chosen = SwarmSettings(merge_method="fedyogi", merge_options={"server_lr": 0.05},
                           compression="bfloat16+zstd")  # fmt: skip
    assert chosen.server_optimizer
    assert chosen.contract_settings()["merge_options"] == {"server_lr": 0.05}


@pytest.mark.parametrize(
    ("settings", "fix"),
    [
        ({"merge_topology": "sharded"}, "use merge_topology leader"),
        ({"compression": "float16"}, "use one of none, zstd"),
        ({"compression": "int8"}, "use one of none, zstd"),
    ],
)
def test_contract_settings_refuse_what_a_server_optimizer_cannot_run(settings, fix) -> None:
    with pytest.raises(ContractError, match=fix):
        ContractSettings(merge_method="fedadam", **settings)


@pytest.mark.parametrize("options", [{"learning_rate": 0.1}, {"beta2": 1}])
def test_contract_settings_refuse_a_server_optimizers_bad_options(options) -> None:
    with pytest.raises(ContractError, match=r"learning_rate|beta2"):
        ContractSettings(merge_method="fedadam", merge_options=options)


def test_state_planted_in_the_first_merged_model_counts_as_zero() -> None:
    # the swarm's first merged model is its leader's own snapshot: a hostile leader could
    # send one carrying crafted state (a huge or negative v); no step made it, so none is used
    start, mean = random_params(20), random_params(21)
    specs = structure(start)
    planted = initial("fedadagrad", start, specs)
    for name in planted:
        if name.startswith("openswarm:opt/v/"):
            planted[name] = np.full_like(planted[name], -1e30)
    honest = step("fedadagrad", {}, start, mean, specs)
    neutral = step("fedadagrad", {}, planted, mean, specs, first=True)
    assert all(honest[n].tobytes() == neutral[n].tobytes() for n in honest)
    poisoned = step("fedadagrad", {}, planted, mean, specs)  # had it counted
    assert any(not np.isfinite(v).all() for v in poisoned.values())
