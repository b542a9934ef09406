"""The Keras binding on TensorFlow, JAX and Keras 2 (`tf-keras`); torch is in the core suite.

Runs where TensorFlow, tf-keras and JAX are installed: the Makefile's `.venv-keras`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from keras_runs import check_keras_swarm

TESTS = Path(__file__).resolve().parents[1]
FLAVOURS = {
    "tensorflow": {"KERAS_BACKEND": "tensorflow"},
    "jax": {"KERAS_BACKEND": "jax"},
    "tf-keras": {"TF_USE_LEGACY_KERAS": "1"},
}


def _set(monkeypatch: pytest.MonkeyPatch, flavour: str) -> dict[str, str]:
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    for key, value in FLAVOURS[flavour].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    return FLAVOURS[flavour]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_binding_evaluates_and_loads_exactly(flavour: str, monkeypatch) -> None:
    _set(monkeypatch, flavour)
    done = subprocess.run([sys.executable, str(TESTS / "keras_unit_script.py")],
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_three_sites_agree_and_beat_training_alone(flavour: str, tmp_path, monkeypatch) -> None:
    _set(monkeypatch, flavour)
    check_keras_swarm(tmp_path / "run", flavour)


SWARMLEARNING_TF = """
import sys
import keras, tf_keras
from swarmlearning.tf import SwarmCallback
legacy = issubclass(SwarmCallback, tf_keras.callbacks.Callback)
modern = issubclass(SwarmCallback, keras.callbacks.Callback)
print("keras2" if legacy and not modern else "keras3" if modern and not legacy else "both")
"""


@pytest.mark.parametrize("legacy", ["1", ""])
def test_swarmlearning_tf_takes_the_keras_the_program_uses(legacy: str, monkeypatch) -> None:
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", legacy)
    done = subprocess.run([sys.executable, "-c", SWARMLEARNING_TF], capture_output=True,
                          text=True, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == ("keras2" if legacy else "keras3")
