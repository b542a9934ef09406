"""The scikit-learn binding, a model adapter under LoopCallback: a swarm of real processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skewed_digits
from sklearn.linear_model import SGDClassifier, SGDRegressor
from sklearn.metrics import hinge_loss, log_loss

from openswarm.codec import decode, digest, encode
from openswarm.launch import run_swarm
from openswarm.node.peer import SwarmError
from openswarm.node.settings import NetworkConfig
from openswarm.sklearn import SwarmCallback

SCRIPT = Path(__file__).with_name("sklearn_swarm_script.py")
CLASSES = np.arange(10)


@pytest.fixture
def network(tmp_path: Path) -> NetworkConfig:
    return NetworkConfig(ledger=("127.0.0.1:1",), identity=tmp_path)  # never contacted here


def _fitted(loss: str = "log_loss", seed: int = 0) -> SGDClassifier:
    x, y = skewed_digits.shard(0, 1)
    clf = SGDClassifier(loss=loss, random_state=seed)
    clf.partial_fit(x[:64], y[:64], classes=CLASSES)
    return clf


@pytest.mark.slow
def test_three_sklearn_sites_agree_and_beat_training_alone(tmp_path: Path) -> None:
    run = run_swarm(SCRIPT, 3, workdir=tmp_path / "run", epochs=5, min_peers=3)
    assert run.ok, [p.log_path.read_text()[-2000:] for p in run.peers]
    results = [p.result for p in run.peers]
    assert all(r is not None for r in results)
    assert len({r["final_digest"] for r in results}) == 1
    assert {r["final_digest"] for r in results} == set(run.final_digests.values())
    assert all(r["rounds"] >= 5 for r in results), results
    swarm = results[0]["swarm_accuracy"]
    assert swarm > max(r["local_accuracy"] for r in results) + 0.2, results
    assert results[0]["evaluated"][1] == pytest.approx(swarm)  # evaluate(): (log-loss, accuracy)


def test_params_round_trip_exactly_and_training_goes_on_from_them(network) -> None:
    a, b = _fitted(), _fitted()
    b.coef_ += 1.0  # b now differs from a
    cb = SwarmCallback(b, sync_frequency=2, min_peers=1, network=network)
    params = decode(encode({"coef_": a.coef_, "intercept_": a.intercept_}))
    cb.set_params(params)
    assert digest(cb.get_params()) == digest(params)
    assert b.coef_.flags.writeable and b.coef_ is not params["coef_"]
    x, y = skewed_digits.shard(0, 1)
    a.partial_fit(x[64:96], y[64:96])
    b.partial_fit(x[64:96], y[64:96])
    np.testing.assert_allclose(b.coef_, a.coef_)  # b trained on from the loaded values
    with pytest.raises(SwarmError, match="shape"):
        cb.set_params({"coef_": np.zeros((3, 64)), "intercept_": np.zeros(10)})
    with pytest.raises(SwarmError, match="do not match"):
        cb.set_params({"coef_": a.coef_})


def test_unfitted_or_averaging_estimators_are_refused_with_the_fix(network) -> None:
    cb = SwarmCallback(SGDClassifier(), sync_frequency=2, min_peers=1, network=network)
    with pytest.raises(SwarmError, match="call partial_fit once"):
        cb.get_params()
    with pytest.raises(SwarmError, match="average=True"):
        SwarmCallback(SGDClassifier(average=True), 2, 1, network=network)
    with pytest.raises(SwarmError, match="partial_fit"):
        SwarmCallback(object(), 2, 1, network=network)  # type: ignore[arg-type]


def test_evaluate_by_kind_of_estimator(network) -> None:
    x, y = skewed_digits.held_out()
    probabilistic = _fitted("log_loss")
    cb = SwarmCallback(probabilistic, 2, 1, val_data=(x, y), network=network)
    loss, accuracy = cb.evaluate()
    assert loss == pytest.approx(log_loss(y, probabilistic.predict_proba(x), labels=CLASSES))
    assert accuracy == pytest.approx(probabilistic.score(x, y))
    margin = _fitted("hinge")
    loss, accuracy = SwarmCallback(margin, 2, 1, val_data=(x, y), network=network).evaluate()
    assert loss == pytest.approx(hinge_loss(y, margin.decision_function(x), labels=CLASSES))
    assert accuracy == pytest.approx(margin.score(x, y))
    regressor = SGDRegressor().partial_fit(x, y.astype(float))
    mse, r2 = SwarmCallback(regressor, 2, 1, val_data=(x, y), network=network).evaluate()
    assert mse > 0 and r2 == pytest.approx(regressor.score(x, y))
    assert SwarmCallback(margin, 2, 1, network=network).evaluate() == (None, None)
