"""HPE-style TensorFlow programs from examples/hpe, unchanged, under the real `openswarm run`:
a Keras 2 program (AUC, `model.save` without extension) and a Keras 3 one on TensorFlow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skewed_digits
from hpe_runs import EXAMPLES, openswarm_run
from sklearn.datasets import load_breast_cancer

from openswarm.client.keras_common import named_weights
from openswarm.codec import digest


def _cancer_shards(out: Path, sites: int) -> list[Path]:
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(3).permutation(len(y))
    folders = []
    for site in range(sites):
        folder = out / f"site-{site + 1}"
        folder.mkdir(parents=True)
        rows = order[site::sites]
        np.savez(folder / "cancer.npz", x=x[rows], y=y[rows])
        folders.append(folder)
    return folders


@pytest.mark.slow
def test_keras2_program_with_auc_saving_without_extension(tmp_path: Path) -> None:
    import tf_keras

    folders = _cancer_shards(tmp_path / "data", 3)
    run = openswarm_run(
        "keras2_cancer.py", folders, tmp_path / "run", epochs=4, TF_USE_LEGACY_KERAS="1"
    )
    for site, final in run.final_digests.items():
        saved = run.model_file(site, "cancer_keras2")
        assert (saved / "saved_model.pb").is_file()  # TensorFlow's SavedModel: Keras 2's save
        model = tf_keras.models.load_model(saved)
        assert digest(named_weights(model)) == final, site
        auc = float(re.search(r"validation data: loss \S+, AUC (\S+)", run.logs[site])[1])
        assert auc > 0.9, run.logs[site][-1000:]


LOAD_KERAS3 = """
import sys, keras
from openswarm.client.keras_common import named_weights
from openswarm.codec import digest
model = keras.saving.load_model(sys.argv[1])
print(keras.backend.backend(), digest(named_weights(model)))
"""


@pytest.mark.slow
def test_keras3_program_on_tensorflow(tmp_path: Path) -> None:
    folders = skewed_digits.write_site_dirs(tmp_path / "data", 3)
    run = openswarm_run("tf_digits.py", folders, tmp_path / "run", epochs=2,
                        KERAS_BACKEND="tensorflow")  # fmt: skip
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    for site, final in run.final_digests.items():
        saved = run.model_file(site, "digits_tf.keras")
        done = subprocess.run([sys.executable, "-c", LOAD_KERAS3, str(saved)], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split()[-2:] == ["tensorflow", final], site


def test_keras2_program_runs_alone_with_swarm_loopback(tmp_path: Path) -> None:
    env = {**os.environ, "SWARM_LOOPBACK": "True", "TF_USE_LEGACY_KERAS": "1",
           "MAX_EPOCHS": "1", "MODEL_DIR": str(tmp_path / "model")}  # fmt: skip
    env.pop("OPENSWARM_LEDGER", None)
    done = subprocess.run([sys.executable, str(EXAMPLES / "keras2_cancer.py")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "saved the final swarm model" in done.stdout
    assert (tmp_path / "model" / "cancer_keras2" / "saved_model.pb").is_file()
