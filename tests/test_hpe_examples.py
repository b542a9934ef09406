"""HPE-style PyTorch programs from examples/hpe, unchanged, under the real `openswarm run`.

The TensorFlow ones (Keras 2 and Keras 3) run in tests/backends, where TensorFlow is."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from hpe_runs import EXAMPLES, openswarm_run

from openswarm.codec import digest


def _image_folders(out: Path, sites: int, per_site: int) -> list[Path]:
    spec = importlib.util.spec_from_file_location(
        "make_image_folders", EXAMPLES / "make_image_folders.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_site_folders(out, sites, per_site)


@pytest.mark.slow
def test_pytorch_program_trains_on_image_files_from_a_folder(tmp_path: Path) -> None:
    folders = _image_folders(tmp_path / "images", 3, 600)
    assert len(list(folders[0].glob("*/*.png"))) == 600  # real files: what the program reads
    run = openswarm_run("pyt_images.py", folders, tmp_path / "run", epochs=2)
    for site, final in run.final_digests.items():
        saved = torch.load(run.model_file(site, "images_pyt.pt"), weights_only=True)
        assert digest(saved) == final, site  # every site saved the swarm's final model
        log = run.logs[site]
        assert "600 images of 10 classes" in log  # through swarmCallback.logger, to stdout
        accuracy = float(re.search(r"validation data: loss \S+, accuracy (\S+)", log)[1])
        assert accuracy > 0.5, log[-1000:]  # ten classes: far above chance after two epochs
