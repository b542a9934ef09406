"""HPE compatibility: `swarmlearning.pyt` / `swarmlearning.tf` keywords, and HPE-style
programs that run unmodified under the launcher."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import skewed_digits
import torch

from openswarm.codec import digest
from openswarm.launch import run_swarm
from swarmlearning._compat import hpe_options, map_hpe_kwargs

os.environ.setdefault("KERAS_BACKEND", "torch")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "hpe"
HPE_DEFAULTS = {
    "use_adaptive_sync": False,
    "contribution": "snapshot",
    "node_weight": 1,
    "merge_method": "mean",
}


@pytest.fixture
def network_env(monkeypatch, tmp_path: Path) -> None:
    """Where a callback would find the swarm (never contacted by these tests)."""
    monkeypatch.setenv("OPENSWARM_LEDGER", "127.0.0.1:1")
    monkeypatch.setenv("OPENSWARM_IDENTITY", str(tmp_path))
    monkeypatch.delenv("OPENSWARM_CONTRACT", raising=False)


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(64, 10))


# --- keyword mapping ----------------------------------------------------------------------
def test_defaults_are_hpe_defaults() -> None:
    assert map_hpe_kwargs({}, "pyt") == HPE_DEFAULTS
    assert map_hpe_kwargs({}, "tf") == HPE_DEFAULTS
    assert map_hpe_kwargs({}, "hf") == {**HPE_DEFAULTS, "hf_mode": "full"}
    options = hpe_options(10, 2, "defaultbb.cqdb.sml.hpe", {}, "pyt")
    assert options.pop("logger").name == "swarmlearning"  # HPE's: INFO to standard output
    assert options == {**HPE_DEFAULTS, "sync_frequency": 10, "min_peers": 2,
                       "training_contract": None}  # fmt: skip
    assert hpe_options(10, 2, "mnist", {}, "tf")["training_contract"] == "mnist"
    # None means "not given", as in HPE's own signature
    assert map_hpe_kwargs({"checkinModelOnTrainEnd": None, "adsValData": None}, "pyt") == (
        HPE_DEFAULTS
    )


def test_camel_case_keywords_become_openswarm_options() -> None:
    logger = logging.getLogger("site")
    given = {
        "useAdaptiveSync": True, "adsValData": [1], "adsValBatchSize": 64,
        "checkinModelOnTrainEnd": "active", "nodeWeightage": 100, "mergeMethod": "geomedian",
        "totalEpochs": 7, "model": "m", "logger": logger, "mlPlatform": "pytorch",
        "lossFunction": "MSELoss", "lossFunctionArgs": {"reduction": "sum"},
        "metricFunction": "MeanAbsoluteError", "metricFunctionArgs": {},
    }  # fmt: skip
    assert map_hpe_kwargs(given, "pyt") == {
        "use_adaptive_sync": True, "val_data": [1], "val_batch_size": 64,
        "contribution": "active", "node_weight": 100, "merge_method": "geomedian",
        "total_epochs": 7, "model": "m", "logger": logger, "loss_fn": "MSELoss",
        "loss_args": {"reduction": "sum"}, "metric_fn": "MeanAbsoluteError", "metric_args": {},
    }  # fmt: skip
    assert map_hpe_kwargs({"hfMode": "peft", "ml_platform": "HF"}, "hf")["hf_mode"] == "peft"


def test_unknown_keywords_are_named() -> None:
    with pytest.raises(TypeError, match=r"'fooBar', 'learningRate'.*swarmlearning\.tf accepts"):
        map_hpe_kwargs({"fooBar": 1, "learningRate": 2, "nodeWeightage": 3}, "tf")


@pytest.mark.parametrize(
    ("kwargs", "platform", "named"),
    [
        ({"lossFunction": "MSELoss"}, "tf", r"'lossFunction' is for swarmlearning\.pyt only"),
        ({"hfMode": "peft"}, "pyt", r"'hfMode' is for swarmlearning\.hf_transformers only"),
        ({"mlPlatform": "TF"}, "pyt", r"mlPlatform='TF' does not match swarmlearning\.pyt"),
        ({"ml_platform": "PYTORCH"}, "tf", "ml_platform='PYTORCH'"),
        ({"nodeWeightage": 0}, "pyt", "nodeWeightage must be an integer from 1 to 100"),
        ({"nodeWeightage": 101}, "pyt", "nodeWeightage"),
        ({"nodeWeightage": 2.5}, "pyt", "nodeWeightage"),
        ({"nodeWeightage": True}, "pyt", "nodeWeightage"),
        ({"checkinModelOnTrainEnd": "all"}, "tf", "checkinModelOnTrainEnd must be one of"),
        ({"useAdaptiveSync": "yes"}, "tf", "useAdaptiveSync"),
        ({"totalEpochs": 0}, "tf", "totalEpochs"),
        ({"lossFunctionArgs": [1]}, "pyt", "lossFunctionArgs must be a dict"),
        ({"logger": "me"}, "pyt", "logging.Logger"),
        ({"hfMode": "lora"}, "hf", "hfMode must be one of"),
    ],
)
def test_bad_keywords_are_named(kwargs: dict, platform: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        map_hpe_kwargs(kwargs, platform)


def test_bad_positional_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="syncFrequency"):
        hpe_options(0, 2, "c", {}, "pyt")
    with pytest.raises(ValueError, match="minPeers"):
        hpe_options(1, "2", "c", {}, "pyt")
    with pytest.raises(ValueError, match="trainingContract"):
        hpe_options(1, 2, "", {}, "pyt")


# --- swarmlearning.pyt --------------------------------------------------------------------
def test_pyt_callback_maps_hpe_keywords(network_env) -> None:
    from openswarm.torch import SwarmCallback as OpenSwarmCallback
    from swarmlearning.pyt import SwarmCallback

    x, y = skewed_digits.held_out()
    val = torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y))
    model = _mlp()
    cb = SwarmCallback(
        8, 3, "digits", model=model, adsValData=val, adsValBatchSize=100, nodeWeightage=5,
        mergeMethod="coordmedian", checkinModelOnTrainEnd="inactive", totalEpochs=4,
        lossFunction="CrossEntropyLoss", lossFunctionArgs={"label_smoothing": 0.1},
        metricFunction="MulticlassAccuracy", metricFunctionArgs={"num_classes": 10,
        "average": "micro"}, mlPlatform="PYTORCH",
    )  # fmt: skip
    assert isinstance(cb, OpenSwarmCallback)
    assert (cb.sync_frequency, cb.settings.min_peers, cb.settings.contract) == (8, 3, "digits")
    assert (cb.settings.weight, cb.settings.merge_method, cb.settings.contribution) == (
        5, "coordmedian", "inactive",
    )  # fmt: skip
    assert cb.total_epochs == 4 and cb.adapter.val_data.batch_size == 100
    assert (
        isinstance(cb.adapter.loss_fn, torch.nn.CrossEntropyLoss)
        and cb.adapter.loss_fn.label_smoothing == 0.1
    )
    loss, accuracy = cb.evaluate()
    with torch.no_grad():
        out = model(torch.tensor(x))
    assert accuracy == pytest.approx(float((out.argmax(1) == torch.tensor(y)).float().mean()))
    assert loss == pytest.approx(float(cb.adapter.loss_fn(out, torch.tensor(y))), rel=1e-5)
    cb.logger.setLevel(logging.DEBUG)  # HPE programs do this
    assert cb.logger.isEnabledFor(logging.DEBUG)


def test_pyt_callback_refuses_with_a_clear_error(network_env) -> None:
    from swarmlearning.pyt import SwarmCallback

    with pytest.raises(TypeError, match="'learningRate'"):
        SwarmCallback(5, 2, model=_mlp(), learningRate=0.1)
    with pytest.raises(TypeError, match="needs model="):
        SwarmCallback(5, 2)
    with pytest.raises(ValueError, match="adsValData and lossFunction"):
        SwarmCallback(5, 2, model=_mlp(), useAdaptiveSync=True)
    with pytest.raises(ValueError, match="not a torchmetrics metric"):
        SwarmCallback(5, 2, model=_mlp(), metricFunction="NoSuchMetric")
    with pytest.raises(ValueError, match="must be a DataLoader"):
        SwarmCallback(5, 2, model=_mlp(), adsValData=[1, 2])


# --- swarmlearning.tf ---------------------------------------------------------------------
def test_tf_callback_is_a_keras_callback_with_hpe_keywords(network_env) -> None:
    keras = pytest.importorskip("keras")
    from swarmlearning.tf import SwarmCallback

    x, y = skewed_digits.held_out()
    cb = SwarmCallback(4, 2, adsValData=(x, y), adsValBatchSize=50, nodeWeightage=7,
                       useAdaptiveSync=True, mlPlatform="TF")  # fmt: skip
    assert isinstance(cb, keras.callbacks.Callback)
    assert cb.val_batch_size == 50 and cb.settings.weight == 7
    assert cb.settings.adaptive_sync == {"start": 4, "min": 1, "max": 16}
    cb.logger.setLevel(logging.WARNING)
    with pytest.raises(TypeError, match="'epochs'"):
        SwarmCallback(4, 2, epochs=3)
    with pytest.raises(ValueError, match="give adsValData"):
        SwarmCallback(4, 2, useAdaptiveSync=True)


def test_tf_picks_the_keras_generation_the_program_uses(monkeypatch) -> None:
    import importlib.metadata
    import importlib.util

    from swarmlearning.tf import keras_generation

    installed = {"tensorflow"}
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: object() if name in installed else real_find_spec(name, *a),
    )  # fmt: skip
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    monkeypatch.setattr(importlib.metadata, "version", lambda dist: "2.15.1")
    assert keras_generation() == 2  # TensorFlow < 2.16 ships Keras 2 as tf.keras
    monkeypatch.setattr(importlib.metadata, "version", lambda dist: "2.21.0")
    assert keras_generation() == 3
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")
    with pytest.raises(ImportError, match="pip install tf-keras"):
        keras_generation()
    installed.add("tf_keras")
    assert keras_generation() == 2  # the TensorFlow programs of HPE's era, unchanged


# --- HPE-style programs under the launcher ------------------------------------------------
def _run_example(tmp_path: Path, monkeypatch, name: str, epochs: int):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    dirs = skewed_digits.write_site_dirs(tmp_path / "data", 3)
    run = run_swarm(
        EXAMPLES / name, 3, data_dirs=dirs, workdir=tmp_path / "run", epochs=epochs, min_peers=3
    )
    logs = {p.name: p.log_path.read_text(errors="replace") for p in run.peers}
    assert run.ok, {n: log[-2000:] for n, log in logs.items()}
    for log in logs.values():
        assert "swarm model on local validation data" in log
        assert "final model" in log  # the INFO level set by cb.logger.setLevel took effect
    latest = set(run.final_digests.values())  # the ledger's last merged model
    assert len(latest) == 1 and None not in latest and run.rounds >= 3
    return run, latest.pop()


@pytest.mark.slow
def test_pyt_program_runs_unmodified_under_the_launcher(tmp_path: Path, monkeypatch) -> None:
    run, latest = _run_example(tmp_path, monkeypatch, "pyt_digits.py", epochs=2)
    for peer in run.peers:
        saved = torch.load(run.run_dir / peer.name / "model" / "digits_pyt.pt", weights_only=True)
        assert digest(saved) == latest, peer.name


@pytest.mark.slow
def test_tf_program_runs_unmodified_under_the_launcher(tmp_path: Path, monkeypatch) -> None:
    keras = pytest.importorskip("keras")
    from openswarm.client.keras import named_weights

    run, latest = _run_example(tmp_path, monkeypatch, "tf_digits.py", epochs=2)
    for peer in run.peers:
        saved = keras.saving.load_model(run.run_dir / peer.name / "model" / "digits_tf.keras")
        assert digest(named_weights(saved)) == latest, peer.name


LOGGER_PROGRAM = """
import logging, sys
from swarmlearning._compat import hpe_options
if sys.argv[1] == "configured":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="PROGRAM %(message)s")
logger = hpe_options(10, 2, "c", {}, "pyt")["logger"]
logger.info("accuracy %.2f", 0.93)
logger.debug("not shown")
"""


@pytest.mark.parametrize("how", ["default", "configured"])
def test_the_callback_logger_prints_info_as_hpes_does(how: str) -> None:
    done = subprocess.run([sys.executable, "-c", LOGGER_PROGRAM, how], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    if how == "default":  # HPE's examples print their results through it: standard output
        assert "accuracy 0.93" in done.stdout and "not shown" not in done.stdout
    else:  # a program that configured logging gets the records where it said
        assert "PROGRAM accuracy 0.93" in done.stderr and "accuracy" not in done.stdout
