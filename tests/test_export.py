"""`openswarm export mlflow|tensorboard`: a real swarm's metrics, as the ledger holds them,
read back with MLflow's and TensorBoard's own readers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Swarm, run_cli

from openswarm import DEFAULT_CONTRACT
from openswarm.export import ExportError, export_contract

ALLOW = "MLFLOW_ALLOW_FILE_STORE"


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    """Three sites that trained two epochs on a real ledger (one run for the whole module)."""
    made = Swarm(tmp_path_factory.mktemp("export-swarm"), 3)
    try:
        made.start_all(EPOCHS="2", MIN_PEERS="3")
        made.wait()
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def expected(swarm: Swarm) -> dict[str, dict[int, dict[str, Any]]]:
    """site → round → the loss, metric, epoch and time of its last applied metrics report, read
    from the raw blocks."""
    reports: dict[str, dict[int, dict[str, Any]]] = {}
    for block in swarm.tx_blocks():
        tx = block["tx"]
        if tx["type"] != "metrics" or tx["contract"] != DEFAULT_CONTRACT:
            continue
        if block["outcome"]["status"] != "applied":
            continue
        payload = tx["payload"]
        reports.setdefault(tx["sender"], {})[tx["round"]] = {
            "loss": payload["loss"],
            "metric": payload.get("metric"),
            "epoch": payload["epoch"],
            "time": tx["timestamp"],
        }
    assert sorted(reports) == swarm.names
    assert all(len(rounds) >= 2 for rounds in reports.values()), reports
    assert any(r["metric"] is not None for rounds in reports.values() for r in rounds.values())
    # The sites report the same loss for a round (one merged model, one validation set), but
    # at different times: the times tell whose numbers a run holds.
    common = min(set.intersection(*(set(rounds) for rounds in reports.values())))
    times = [reports[site][common]["time"] for site in swarm.names]
    assert len(set(times)) == len(times)
    return reports


def export(swarm: Swarm, *args: str) -> Any:
    """`openswarm export ARGS…` against the swarm's ledger, as its admin, in a fresh process."""
    return run_cli(
        "export",
        *args,
        "--connect",
        ",".join(swarm.ledger.endpoints),
        "--identity",
        str(swarm.ledger.identity_dir("admin")),
    )


def settings_params(swarm: Swarm) -> dict[str, str]:
    """The contract settings as MLflow parameters: strings as they are, the rest as JSON."""
    settings = swarm.state()["settings"]  # type: ignore[index]
    assert settings, "the contract state holds its settings"
    return {
        k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in settings.items()
    }


def mlflow_runs(uri: str, monkeypatch: pytest.MonkeyPatch, view: str = "active") -> list[Any]:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv(ALLOW, "true")  # MLflow 3 opens a folder only with it
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(f"openswarm/{DEFAULT_CONTRACT}")
    assert experiment is not None
    kind = ViewType.ACTIVE_ONLY if view == "active" else ViewType.DELETED_ONLY
    return list(client.search_runs([experiment.experiment_id], run_view_type=kind))


def check_mlflow(
    uri: str, swarm: Swarm, expected: dict, monkeypatch: pytest.MonkeyPatch
) -> list[Any]:
    """Each site's run holds the ledger's numbers for every round, and the settings."""
    from mlflow.tracking import MlflowClient

    runs = mlflow_runs(uri, monkeypatch)
    assert sorted(r.info.run_name for r in runs) == swarm.names
    client = MlflowClient(tracking_uri=uri)
    swarm_name = swarm.admin.status()["swarm"]
    for run in runs:
        site = run.info.run_name
        tags = run.data.tags
        assert tags["openswarm.contract"] == DEFAULT_CONTRACT
        assert tags["openswarm.site"] == site and tags["openswarm.swarm"] == swarm_name
        assert int(tags["openswarm.ledger_height"]) > 0
        assert run.data.params == settings_params(swarm)
        assert run.info.status == "FINISHED"
        rounds = expected[site]
        for key in ("loss", "metric", "epoch"):
            history = client.get_metric_history(run.info.run_id, key)
            want = {r: v[key] for r, v in rounds.items() if v[key] is not None}
            assert {m.step: m.value for m in history} == pytest.approx(want)
            assert len(history) == len(want)  # one value per round
            times = {m.step: m.timestamp for m in history}
            assert times == {r: int(rounds[r]["time"] * 1000) for r in want}
    return runs


def test_mlflow_export_holds_each_sites_metrics_per_round_and_the_settings(
    swarm: Swarm, expected: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "runs"
    done = export(swarm, "mlflow", DEFAULT_CONTRACT, "--to", str(folder))
    assert done.returncode == 0, done.stderr
    uri = folder.resolve().as_uri()
    assert "wrote 3 MLflow runs (one per site)" in done.stdout and uri in done.stdout
    assert f"openswarm/{DEFAULT_CONTRACT}" in done.stdout
    first = check_mlflow(uri, swarm, expected, monkeypatch)

    # Exported again (a file: URI this time): the earlier runs go to the trash, not doubled.
    again = export(swarm, "mlflow", DEFAULT_CONTRACT, "--to", uri)
    assert again.returncode == 0, again.stderr
    assert "3 run(s) of an earlier export" in again.stdout
    second = check_mlflow(uri, swarm, expected, monkeypatch)
    trashed = mlflow_runs(uri, monkeypatch, view="deleted")
    assert {r.info.run_id for r in trashed} == {r.info.run_id for r in first}
    assert not {r.info.run_id for r in first} & {r.info.run_id for r in second}


def test_tensorboard_export_holds_each_sites_scalars_per_round_and_the_settings(
    swarm: Swarm, expected: dict, tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = tmp_path / "tb"
    for attempt in range(2):  # a second export replaces the first's files
        done = export(swarm, "tensorboard", DEFAULT_CONTRACT, "--to", str(logs))
        assert done.returncode == 0, done.stderr
        assert str(logs.resolve()) in done.stdout and "for 3 sites" in done.stdout
        assert ("replaced 3 event file(s)" in done.stdout) == (attempt == 1)
    assert sorted(p.name for p in logs.iterdir()) == swarm.names
    settings = swarm.state()["settings"]  # type: ignore[index]
    for site in swarm.names:
        assert len(list((logs / site).glob("events.out.tfevents.*"))) == 1
        events = EventAccumulator(str(logs / site))
        events.Reload()
        rounds = expected[site]
        for key in ("loss", "metric", "epoch"):
            scalars = events.Scalars(key)
            want = {r: v[key] for r, v in rounds.items() if v[key] is not None}
            assert [s.step for s in scalars] == sorted(want)
            assert {s.step: s.value for s in scalars} == pytest.approx(want, rel=1e-6)
            assert {s.step: s.wall_time for s in scalars} == {r: rounds[r]["time"] for r in want}
        text = events.Tensors("settings")[0].tensor_proto.string_val[0].decode()
        assert DEFAULT_CONTRACT in text
        assert json.loads(text[text.index("{") :]) == settings


def test_default_places_are_mlruns_and_tb_logs_in_the_working_folder(
    swarm: Swarm, expected: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ALLOW, raising=False)
    done = export_contract(swarm.admin, DEFAULT_CONTRACT, "mlflow", None)
    assert ALLOW not in os.environ  # the export leaves MLflow's settings as they were
    uri = (tmp_path / "mlruns").resolve().as_uri()
    assert uri in done
    check_mlflow(uri, swarm, expected, monkeypatch)
    done = export_contract(swarm.admin, DEFAULT_CONTRACT, "tensorboard", None)
    logs = (tmp_path / "tb-logs" / DEFAULT_CONTRACT).resolve()
    assert str(logs) in done
    assert sorted(p.name for p in logs.iterdir()) == swarm.names


def test_refusals_name_what_is_wrong(swarm: Swarm, tmp_path: Path) -> None:
    unknown = export(swarm, "mlflow", "no-such-study", "--to", str(tmp_path / "runs"))
    assert unknown.returncode == 1
    assert "no-such-study" in unknown.stderr and "openswarm contract list" in unknown.stderr
    assert not (tmp_path / "runs").exists()

    target = export(swarm, "wandb", DEFAULT_CONTRACT)
    assert target.returncode == 1 and "unknown export target 'wandb'" in target.stderr

    occupied = tmp_path / "a-file"
    occupied.write_text("not a log folder")
    for kind in ("tensorboard", "mlflow"):
        refused = export(swarm, kind, DEFAULT_CONTRACT, "--to", str(occupied))
        assert refused.returncode == 1
        assert "is a file, not a folder" in refused.stderr, refused.stderr
    assert occupied.read_text() == "not a log folder"

    with pytest.raises(ExportError, match="unknown export target"):
        export_contract(swarm.admin, DEFAULT_CONTRACT, "csv", None)


def test_a_contract_without_reports_is_refused(swarm: Swarm, tmp_path: Path) -> None:
    swarm.admin.submit("contract_create", contract="quiet-study", payload={}).raise_for_status()
    refused = export(swarm, "tensorboard", "quiet-study", "--to", str(tmp_path / "tb"))
    assert refused.returncode == 1
    assert "'quiet-study' has no metrics yet" in refused.stderr
    assert not (tmp_path / "tb").exists()
