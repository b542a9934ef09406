"""FedProx's proximal term and SCAFFOLD's control variates (openswarm.client.drift): each
against an independent reference on small problems, their refusals, and two in-process
sessions over plain adapters that train with both and end with one model."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch

from openswarm.client import LoopCallback
from openswarm.client.drift import Drift, variate_name
from openswarm.client.torch import TorchModel, optimizer_step_size
from openswarm.codec import digest
from openswarm.ledger.local import LocalLedger
from openswarm.node.settings import NetworkConfig
from openswarm.protocol import SwarmError


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return torch.randn(8, 4, generator=generator), torch.randint(0, 2, (8,), generator=generator)


def _grads(model: torch.nn.Module, extra_loss: Any = None) -> dict[str, torch.Tensor]:
    x, y = _batch()
    model.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    if extra_loss is not None:
        loss = loss + extra_loss(model)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {n: t.detach().numpy().copy() for n, t in model.state_dict().items()}


def test_the_proximal_hook_adds_the_gradient_of_mu_half_the_squared_distance() -> None:
    mu = 0.3
    anchor = _numpy(_net(1))
    hooked = _net(2)
    drift = Drift(proximal_mu=mu)
    assert TorchModel(hooked).install_drift(drift)
    drift.loaded(anchor)
    got = _grads(hooked)
    reference = _net(2)  # the same weights, the proximal term written into the loss

    def proximal(model: torch.nn.Module) -> torch.Tensor:
        return sum(
            mu / 2 * ((p - torch.from_numpy(anchor[n])) ** 2).sum()
            for n, p in model.named_parameters()
        )

    want = _grads(reference, proximal)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(want[n], _grads(_net(2))[n]) for n in want)  # it matters


def test_the_scaffold_hook_adds_the_swarms_minus_the_sites_control_variate() -> None:
    rng = np.random.default_rng(0)
    net = _net(3)
    plain = _grads(_net(3))
    drift = Drift(control_variates=True, local_lr=0.1)
    assert TorchModel(net).install_drift(drift)
    merged = _numpy(_net(3))
    swarm_c = {n: rng.standard_normal(v.shape).astype(np.float32) for n, v in merged.items()}
    merged.update({variate_name(n): c for n, c in swarm_c.items()})
    drift.loaded(merged)
    site_c = {n: rng.standard_normal(v.shape).astype(np.float32) for n, v in swarm_c.items()}
    drift.site_c = dict(site_c)
    drift.version += 1
    got = _grads(net)
    for name, grad in plain.items():
        want = grad + torch.from_numpy(swarm_c[name] - site_c[name])
        torch.testing.assert_close(got[name], want, rtol=1e-5, atol=1e-6)


def test_the_control_variate_update_is_scaffolds_option_two() -> None:
    lr, steps = 0.05, 4
    rng = np.random.default_rng(1)
    x = {"w": rng.standard_normal((3, 2)).astype(np.float32), "n": np.array(7)}
    c = rng.standard_normal((3, 2)).astype(np.float32)
    drift = Drift(control_variates=True, local_lr=lr)
    first = drift.offer(x)  # before any merge: zero variates, the integer tensor has none
    assert set(first) == {"w", "n", variate_name("w")}
    assert not first[variate_name("w")].any()
    drift.loaded({"w": x["w"], "n": x["n"], variate_name("w"): c})
    y = {"w": x["w"] - 0.2, "n": x["n"]}
    drift.steps = steps
    offered = drift.offer(y)
    c_i = np.zeros_like(c)  # the site's variate so far
    want = c_i - c + (x["w"] - y["w"]) / (steps * lr)
    np.testing.assert_allclose(offered[variate_name("w")], want, rtol=1e-5)
    np.testing.assert_array_equal(drift.offer(y)[variate_name("w")], offered[variate_name("w")])
    drift.loaded({"w": y["w"], "n": x["n"], variate_name("w"): c})  # kept once merged
    np.testing.assert_array_equal(drift.site_c["w"], offered[variate_name("w")])


def test_the_corrective_step_after_a_batch_is_sgd_on_the_corrected_gradient() -> None:
    mu, lr = 0.5, 0.1
    drift = Drift(proximal_mu=mu, control_variates=True, local_lr=lr)
    anchor = np.array([1.0, -2.0], np.float32)
    c = np.array([0.3, 0.1], np.float32)
    drift.loaded({"w": anchor, variate_name("w"): c})
    drift.site_c = {"w": np.array([0.1, 0.4], np.float32)}
    w = np.array([2.0, 0.0], np.float32)
    stepped = drift.decoupled({"w": w}, lr)["w"]
    want = w - lr * (mu * (w - anchor) + c - drift.site_c["w"])
    np.testing.assert_allclose(stepped, want, rtol=1e-6)


def test_the_step_size_of_sgd_with_momentum_is_lr_over_one_minus_momentum() -> None:
    net = _net(0)
    assert optimizer_step_size(torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)) == (
        pytest.approx(0.5)
    )
    assert optimizer_step_size(torch.optim.Adam(net.parameters(), lr=0.01)) == 0.01
    assert optimizer_step_size(None) is None


@pytest.mark.parametrize(
    ("options", "cause"),
    [
        ({"control_variates": True, "merge_method": "krum"}, "not 'krum'"),
        ({"control_variates": True, "merge_method": "coordmedian"}, "robust method"),
        ({"proximal_mu": -1.0}, "proximal_mu"),
        ({"proximal_mu": float("nan")}, "proximal_mu"),
        ({"proximal_mu": True}, "proximal_mu"),
        ({"local_lr": 0.0}, "local_lr"),
    ],
)
def test_options_that_cannot_work_are_refused_naming_the_cause(
    options: dict[str, Any], cause: str
) -> None:
    with pytest.raises(SwarmError, match=cause):
        Drift(**options)


class ArrayModel:
    """A dict of float32 arrays; a "training step" moves it toward the site's own target."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.arrays = {"w": rng.standard_normal((3, 2)).astype(np.float32)}
        self.target = float(seed)

    def step(self) -> None:
        self.arrays["w"] += np.float32(0.1) * (np.float32(self.target) - self.arrays["w"])

    def get_params(self) -> dict[str, np.ndarray]:
        return {n: v.copy() for n, v in self.arrays.items()}

    def set_params(self, params: Mapping[str, Any]) -> None:
        for name, value in self.arrays.items():
            value[...] = np.asarray(params[name])

    def evaluate(self) -> tuple[float, None]:
        return float(np.mean(self.arrays["w"] ** 2)), None


def test_an_adapter_that_cannot_hook_gradients_needs_the_local_learning_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SWARM_LOOPBACK", "True")
    cb = LoopCallback(ArrayModel(1), sync_frequency=2, min_peers=2, proximal_mu=0.1)
    with pytest.raises(SwarmError, match="local_lr"):
        cb.on_train_begin()


def test_two_sessions_with_both_corrections_end_with_one_model(ledger1: LocalLedger) -> None:
    models = [ArrayModel(1), ArrayModel(3)]
    callbacks = []
    for i, model in enumerate(models):
        name = f"p{i + 1}"
        network = NetworkConfig(ledger=tuple(ledger1.endpoints),
                                identity=ledger1.identity_dir(name),
                                admin_identity=ledger1.identity_dir("admin"))  # fmt: skip
        callbacks.append(LoopCallback(
            model, sync_frequency=2, min_peers=2, training_contract="drift", total_epochs=2,
            network=network, proximal_mu=0.5, control_variates=True, local_lr=0.1,
        ))  # fmt: skip

    def train(cb: LoopCallback, model: ArrayModel) -> None:
        cb.on_train_begin()
        for epoch in range(2):
            for _ in range(4):
                model.step()
                cb.on_batch_end()
            cb.on_epoch_end(epoch)
        cb.on_train_end()

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(train, callbacks, models))
    finals = {cb.final_digest for cb in callbacks}
    assert len(finals) == 1 and None not in finals
    assert all(digest(m.get_params()) == callbacks[0].final_digest for m in models)
    drift = callbacks[0].session.drift
    assert drift.site_c and drift.swarm_c  # the variates travelled and were merged
    assert not np.array_equal(drift.swarm_c["w"], np.zeros_like(drift.swarm_c["w"]))
    # the merged models carry the variates: the ledger's digest is not the model's
    with ledger1.client("admin") as client:
        latest = client.state("drift")["state"]["latest_merged"]
    assert latest["digest"] not in finals


def test_scikit_learn_takes_the_constant_schedules_step_and_asks_for_local_lr_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sklearn.linear_model import SGDClassifier

    from openswarm.sklearn import SwarmCallback as SklearnCallback

    monkeypatch.setenv("SWARM_LOOPBACK", "True")
    x = np.random.default_rng(0).standard_normal((8, 3))
    y = np.arange(8) % 2
    constant = SGDClassifier(learning_rate="constant", eta0=0.02).partial_fit(x, y, [0, 1])
    cb = SklearnCallback(constant, 2, 2, proximal_mu=0.1)
    cb.on_train_begin()  # no local_lr needed: eta0
    assert cb.adapter.learning_rate() == 0.02
    optimal = SGDClassifier().partial_fit(x, y, [0, 1])  # a schedule that changes the step
    with pytest.raises(SwarmError, match="local_lr"):
        SklearnCallback(optimal, 2, 2, control_variates=True).on_train_begin()
    SklearnCallback(optimal, 2, 2, control_variates=True, local_lr=0.01).on_train_begin()


def test_hpe_programs_can_ask_for_the_corrections_in_hpe_style_keywords() -> None:
    from swarmlearning._compat import map_hpe_kwargs

    options = map_hpe_kwargs(
        {"proximalMu": 0.01, "controlVariates": True, "localLearningRate": 0.5,
         "mergeMethod": "fedadam", "mergeOptions": {"server_lr": 0.02}},
        "pyt",
    )  # fmt: skip
    assert options["proximal_mu"] == 0.01 and options["control_variates"] is True
    assert options["local_lr"] == 0.5 and options["merge_options"] == {"server_lr": 0.02}
    assert options["merge_method"] == "fedadam"


def test_the_hugging_face_adapter_hooks_the_same_correction() -> None:
    from openswarm.client.hf import HfModel

    mu = 0.2
    anchor = _numpy(_net(1))
    hooked = _net(2)
    drift = Drift(proximal_mu=mu)
    assert HfModel(hooked).install_drift(drift)
    drift.loaded(anchor)
    got = _grads(hooked)
    plain = _grads(_net(2))
    weights = dict(_net(2).named_parameters())
    for name, grad in plain.items():
        want = grad + mu * (weights[name].detach() - torch.from_numpy(anchor[name]))
        torch.testing.assert_close(got[name], want, rtol=1e-5, atol=1e-6)


def _rounds_on_two_quadratics(drift_options: dict[str, Any], rounds: int = 300) -> float:
    """Two sites, each minimising its own 1/2 (w - a_i)' H_i (w - a_i) for 10 local steps
    between merges (a plain mean of everything offered); the final model's distance to the
    minimiser of the sum. With unequal curvatures, plain averaging settles elsewhere."""
    lr, steps = 0.1, 10
    curv = [np.diag([1.0, 0.1]).astype(np.float32), np.diag([0.1, 1.0]).astype(np.float32)]
    targets = [np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)]
    best = np.linalg.solve(curv[0] + curv[1], curv[0] @ targets[0] + curv[1] @ targets[1])
    drifts = [Drift(local_lr=lr, **drift_options) for _ in range(2)]
    merged = {"w": np.zeros(2, np.float32)}
    for drift in drifts:
        drift.loaded(drift.offer(merged))
    for _ in range(rounds):
        offers = []
        for drift, h, a in zip(drifts, curv, targets, strict=True):
            w = merged["w"].copy()
            for _ in range(steps):
                w = drift.decoupled({"w": w - lr * h @ (w - a)}, lr)["w"]
                drift.steps += 1
            offers.append(drift.offer({"w": w}))
        merged = {n: (offers[0][n] + offers[1][n]) / 2 for n in offers[0]}
        for drift in drifts:
            drift.loaded(merged)
    return float(np.linalg.norm(merged["w"] - best))


def test_scaffold_reaches_the_swarms_optimum_where_plain_averaging_drifts_away() -> None:
    plain = _rounds_on_two_quadratics({})
    proximal = _rounds_on_two_quadratics({"proximal_mu": 1.0})
    scaffold = _rounds_on_two_quadratics({"control_variates": True})
    assert plain > 0.04  # client drift: the local optima pull the mean off the optimum
    assert proximal < plain  # FedProx shortens each round's drift
    assert scaffold < 1e-3  # SCAFFOLD's corrections remove it


def test_a_model_whose_tensor_names_take_the_swarms_reserved_prefixes_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SWARM_LOOPBACK", "True")
    for prefix in ("openswarm:opt/", "openswarm:scaffold/"):
        model = ArrayModel(1)
        model.arrays[prefix + "w"] = model.arrays.pop("w")
        with pytest.raises(SwarmError, match="rename it"):
            LoopCallback(model, sync_frequency=2, min_peers=2).on_train_begin()


def test_with_torch_the_new_control_variate_is_the_mean_raw_gradient_since_the_merge() -> None:
    rng = np.random.default_rng(3)
    net = _net(4)
    drift = Drift(control_variates=True)  # no step size: the hooks measure the gradients
    assert TorchModel(net).install_drift(drift)
    merged = _numpy(_net(4))
    merged.update({variate_name(n): rng.standard_normal(v.shape).astype(np.float32)
                   for n, v in merged.items()})  # fmt: skip
    drift.loaded(merged)
    reference = _net(4)
    batches = [
        (torch.randn(8, 4, generator=torch.Generator().manual_seed(s)), torch.arange(8) % 2)
        for s in range(3)
    ]
    raw: dict[str, list[torch.Tensor]] = {}
    for x, y in batches:
        for model in (net, reference):
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
        for name, p in reference.named_parameters():
            raw.setdefault(name, []).append(p.grad.clone())
        drift.steps += 1
    offered = drift.offer(_numpy(net))
    for name, grads in raw.items():
        want = torch.stack(grads).mean(0).numpy()
        np.testing.assert_allclose(offered[variate_name(name)], want, rtol=1e-5, atol=1e-7)
    drift.loaded(offered)  # a new merge: the sums start again
    assert drift.gradient_means is not None and drift.gradient_means() == {}
