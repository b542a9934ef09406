"""Runs `keras_swarm_script.py` as a 3-site swarm on one Keras flavour and checks the end."""

from __future__ import annotations

from pathlib import Path

from openswarm.launch import run_swarm

SCRIPT = Path(__file__).with_name("keras_swarm_script.py")


def check_keras_swarm(workdir: Path, flavour: str) -> None:
    """Three sites on skewed shards end with one model, which beats each site alone.

    The caller sets KERAS_BACKEND (or TF_USE_LEGACY_KERAS=1 for "tf-keras") in os.environ."""
    run = run_swarm(SCRIPT, 3, workdir=workdir, epochs=4, min_peers=3)
    assert run.ok, [p.log_path.read_text()[-2000:] for p in run.peers]
    results = [p.result for p in run.peers]
    assert all(r is not None for r in results)
    assert {r["flavour"] for r in results} == {flavour}  # the Keras asked for, not a fallback
    finals = {r["final_digest"] for r in results}
    assert len(finals) == 1 and finals == set(run.final_digests.values())  # one model
    assert {r["model_digest"] for r in results} == finals  # and fit left it in every model
    assert all(r["rounds"] >= 5 and r["total_epochs"] == 4 for r in results), results
    swarm = results[0]["swarm_accuracy"]
    best_alone = max(r["local_accuracy"] for r in results)
    assert swarm > best_alone + 0.2, results  # each site alone barely knows 7 of 10 digits
