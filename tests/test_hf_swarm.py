"""The Hugging Face binding: Trainer swarms of real processes, PEFT mode, the HPE API."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")
os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from safetensors.numpy import load_file

from openswarm.hf import SwarmCallback
from openswarm.launch import run_swarm
from openswarm.node.peer import SwarmError
from openswarm.node.settings import NetworkConfig

# peft 0.21 calls an accessor transformers 5 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

TESTS = Path(__file__).parent
ROOT = TESTS.parent
SCRIPT = TESTS / "hf_swarm_script.py"
HPE_EXAMPLE = ROOT / "examples" / "hpe" / "hf_digits.py"
NAMES = ["site-1", "site-2", "site-3"]
sys.path.insert(0, str(TESTS))  # the site script, imported for its in-process baselines
import hf_swarm_script as site  # noqa: E402
from harness import Swarm  # noqa: E402


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[Swarm]:
    made = Swarm(tmp_path / "swarm", len(NAMES), script=SCRIPT)
    yield made
    made.close()


def _offline_network(tmp_path: Path) -> NetworkConfig:
    """Enough configuration to build a callback; nothing here connects."""
    return NetworkConfig(ledger=("127.0.0.1:1",), identity=tmp_path / "none")


@pytest.mark.slow
def test_trainer_swarm_ends_identical_and_beats_local_only(sites: Swarm) -> None:
    sites.start_all(EPOCHS="6", SYNC_FREQUENCY="10", MIN_PEERS="3")
    torch.set_num_threads(1)
    local_acc = [site.local_only_accuracy(rank, len(NAMES), epochs=6) for rank in range(3)]
    sites.wait()
    swarm = [sites.result(name) for name in NAMES]
    final = {r["final_digest"] for r in swarm}
    assert len(final) == 1 and None not in final
    assert {r["model_digest"] for r in swarm} == final  # full mode: the whole state_dict
    state = sites.state()
    assert state["latest_merged"]["digest"] in final
    assert len(state["history"]) >= 5 and all(r["rounds"] >= 5 for r in swarm)
    assert all(len(r["exchanged"]) > 30 for r in swarm)  # every state_dict entry
    swarm_acc = swarm[0]["accuracy"]
    assert swarm[0]["val"][1] == pytest.approx(swarm_acc)
    assert swarm_acc > max(local_acc) + 0.1, (swarm_acc, local_acc)


@pytest.mark.slow
def test_peft_mode_syncs_only_the_adapters(sites: Swarm) -> None:
    sites.start_all(HF_MODE="peft", EPOCHS="3", SYNC_FREQUENCY="10", MIN_PEERS="3")
    sites.wait()
    results = [sites.result(name) for name in NAMES]
    final = {r["final_digest"] for r in results}
    assert len(final) == 1 and None not in final
    assert sites.state()["latest_merged"]["digest"] in final  # the merged set is the adapters
    assert len({r["model_digest"] for r in results}) == 1  # and the whole model is identical
    for r in results:
        exchanged = r["exchanged"]
        assert any("lora_A" in n for n in exchanged) and any("lora_B" in n for n in exchanged)
        assert all("lora_" in n or ".classifier." in n for n in exchanged), exchanged
        assert r["base_compared"] and r["base_unchanged"], r["name"]


@pytest.mark.slow
def test_hpe_program_runs_unmodified_under_run_swarm(tmp_path: Path) -> None:
    # until pyproject packages swarmlearning, the peers find it at the repository root
    x, y = site.load_digits(return_X_y=True)
    dirs = []
    for rank in range(3):  # a non-IID shard per site, as the example reads it
        keep = (y % 3 == rank) | (np.arange(len(y)) % 10 == 0)
        d = tmp_path / f"data{rank}"
        d.mkdir()
        np.savez(d / "digits.npz", x=x[keep], y=y[keep])
        dirs.append(d)
    result = run_swarm(HPE_EXAMPLE, 3, data_dirs=dirs, workdir=tmp_path / "run", epochs=2,
                       poll_s=0.2)  # fmt: skip
    logs = "\n".join(p.log_path.read_text(errors="replace")[-2000:] for p in result.peers)
    assert result.ok, logs
    assert result.rounds >= 3
    saved = [load_file(tmp_path / "run" / n / "model" / "model.safetensors") for n in NAMES]
    assert saved[0] and all(s.keys() == saved[0].keys() for s in saved)
    for key in saved[0]:
        assert all(np.array_equal(s[key], saved[0][key]) for s in saved[1:]), key


def test_hpe_keywords_map_or_fail_clearly(tmp_path: Path, monkeypatch) -> None:
    from swarmlearning.hf_transformers import SwarmCallback as HpeCallback

    monkeypatch.setenv("OPENSWARM_LEDGER", "127.0.0.1:1")  # enough to build; nothing connects
    monkeypatch.setenv("OPENSWARM_IDENTITY", str(tmp_path / "none"))
    model = site.tiny_bert(0)
    val = site.Examples(*site.digit_tokens())
    cb = HpeCallback(syncFrequency=7, minPeers=3, model=site.with_lora(site.tiny_bert(1)),
                     hfMode="peft", nodeWeightage=5, mergeMethod="coordmedian", adsValData=val,
                     adsValBatchSize=64, useAdaptiveSync=True, checkinModelOnTrainEnd="active",
                     totalEpochs=4, mlPlatform="HF")  # fmt: skip
    assert (cb.adapter.hf_mode, cb.sync_frequency, cb.adapter.val_batch_size, cb.total_epochs) == (
        "peft",
        7,
        64,
        4,
    )
    settings = cb.settings
    assert (settings.min_peers, settings.weight, settings.merge_method) == (3, 5.0, "coordmedian")
    assert settings.contribution == "active" and settings.adaptive_sync is not None
    refused = [
        ({"bogusOption": 1}, TypeError, "bogusOption"),
        ({"lossFunction": "MSELoss"}, ValueError, "lossFunction"),
        ({"nodeWeightage": 0}, ValueError, "nodeWeightage"),
        ({"checkinModelOnTrainEnd": "all"}, ValueError, "checkinModelOnTrainEnd"),
        ({"mlPlatform": "TF"}, ValueError, "mlPlatform"),
        ({"hfMode": "lora"}, ValueError, "hfMode"),
        ({"useAdaptiveSync": True}, ValueError, "adsValData"),
        ({"hfMode": "peft"}, SwarmError, r"peft\.PeftModel"),
    ]
    for kwargs, error, named in refused:
        with pytest.raises(error, match=named):
            HpeCallback(syncFrequency=5, minPeers=2, model=model, **kwargs)
    with pytest.raises(TypeError, match="needs model"):
        HpeCallback(syncFrequency=5, minPeers=2)


def test_evaluate_and_peft_params(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    tokens, labels = site.digit_tokens()
    val = site.Examples(tokens[:100], labels[:100])
    model = site.tiny_bert(0)
    cb = SwarmCallback(model, 5, 2, val_data=val, val_batch_size=16,
                       network=_offline_network(tmp_path))  # fmt: skip
    loss, accuracy = cb.evaluate()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(tokens[:100]), labels=torch.tensor(labels[:100]))
    assert loss == pytest.approx(float(out.loss), rel=1e-5)
    assert accuracy == pytest.approx(float((out.logits.argmax(-1).numpy() == labels[:100]).mean()))
    loader = torch.utils.data.DataLoader(val, batch_size=50)
    assert SwarmCallback(model, 5, 2, val_data=loader, network=cb.session.network).evaluate() == (
        pytest.approx(loss, rel=1e-5),
        pytest.approx(accuracy),
    )

    peft_model = site.with_lora(site.tiny_bert(1))
    pcb = SwarmCallback(peft_model, 5, 2, hf_mode="peft", network=cb.session.network)
    params = {k: v.numpy() + 1.0 for k, v in pcb.get_params().items()}
    assert all("lora_" in k or ".classifier." in k for k in params)
    pcb.set_params(params)
    assert all(np.array_equal(v.numpy(), params[k]) for k, v in pcb.get_params().items())
    with pytest.raises(SwarmError, match="missing"):
        pcb.set_params(dict(list(params.items())[1:]))
