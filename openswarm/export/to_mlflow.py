"""A contract's metrics as MLflow runs: one run per site in the experiment
`openswarm/CONTRACT`, the contract settings as its parameters, loss, metric and epoch per round
as its metrics (step = round, timestamp = the report's ledger time)."""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from openswarm.export import INSTALL_HINT, ContractExport, ExportError, setting_text

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: MLflow 3 refuses its file store (a local folder) unless this is true.
ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"
#: MLflow's limits: characters of a parameter value; metrics and parameters per log_batch.
MAX_PARAM_CHARS, METRICS_PER_BATCH, PARAMS_PER_BATCH = 6000, 1000, 100
#: URI schemes of MLflow's database stores.
DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
#: The tags of a run: they mark it as this export's and say what it holds.
CONTRACT_TAG, SITE_TAG, SWARM_TAG = "openswarm.contract", "openswarm.site", "openswarm.swarm"
HEIGHT_TAG, ROUNDS_TAG = "openswarm.ledger_height", "openswarm.rounds"
#: The metrics of a run, each a value per round.
METRICS = ("loss", "metric", "epoch")


def tracking_uri(to: str | None) -> str:
    """`to` as a tracking URI: one with a scheme as it is, a folder (default ./mlruns) as its
    file: URI."""
    if to is not None and len(urlsplit(to).scheme) > 1:  # not a Windows drive letter
        return to
    folder = Path("mlruns" if to is None else to).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"{folder} is a file, not a folder for MLflow runs")
    return folder.resolve().as_uri()


@contextmanager
def file_store_allowed(uri: str) -> Iterator[None]:
    """Let MLflow 3 use its file store for a file: URI while the export runs."""
    if urlsplit(uri).scheme != "file":
        yield
        return
    before = os.environ.get(ALLOW_FILE_STORE)
    os.environ[ALLOW_FILE_STORE] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ALLOW_FILE_STORE, None)
        else:
            os.environ[ALLOW_FILE_STORE] = before


def export_mlflow(data: ContractExport, to: str | None) -> str:
    """Write `data` to the MLflow tracking store at `to`; returns what was written where."""
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise ExportError(f"exporting to MLflow needs mlflow: {INSTALL_HINT}") from exc
    uri = tracking_uri(to)
    database = urlsplit(uri).scheme.split("+")[0] in DATABASES
    if database and importlib.util.find_spec("sqlalchemy") is None:
        raise ExportError(
            f"MLflow's database stores ({uri}) need SQLAlchemy, which mlflow-skinny leaves out: "
            "pip install mlflow, or export to a folder or an http(s) tracking server"
        )
    experiment = f"openswarm/{data.contract}"
    try:
        with file_store_allowed(uri):
            replaced = _write(MlflowClient(tracking_uri=uri), experiment, data)
    except (MlflowException, OSError) as exc:
        raise ExportError(f"exporting to MLflow at {uri} failed: {exc}") from exc
    sites = len(data.reports)
    done = (
        f"wrote {sites} MLflow run{'s' if sites != 1 else ''} (one per site) of contract "
        f"{data.contract!r} to experiment {experiment!r} at {uri}"
    )
    if replaced:
        done += f"; {replaced} run(s) of an earlier export of it moved to MLflow's trash"
    if urlsplit(uri).scheme == "file":
        done += (
            f"\nview them: {ALLOW_FILE_STORE}=true mlflow ui --backend-store-uri {uri} "
            "(MLflow 3 keeps its file store behind that variable)"
        )
    return done


def _write(client: MlflowClient, name: str, data: ContractExport) -> int:
    """Create the experiment if needed, trash this swarm's earlier export of the contract,
    write one run per site; returns how many runs were trashed."""
    from mlflow.entities import Metric, Param, ViewType

    found = client.get_experiment_by_name(name)
    if found is None:
        experiment_id = client.create_experiment(name)
    else:
        experiment_id = found.experiment_id
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(experiment_id)
    earlier = [
        run.info.run_id
        for run in _runs(client, experiment_id, ViewType.ACTIVE_ONLY)
        if run.data.tags.get(CONTRACT_TAG) == data.contract
        and run.data.tags.get(SWARM_TAG) == data.swarm
    ]
    now_ms = int(time.time() * 1000)
    params = [
        Param(key, setting_text(value)[:MAX_PARAM_CHARS])
        for key, value in sorted(data.settings.items())
    ]
    for site in data.sites():
        reports = data.reports[site]
        stamps = [now_ms if r.time is None else int(r.time * 1000) for r in reports]
        tags = {
            CONTRACT_TAG: data.contract,
            SITE_TAG: site,
            SWARM_TAG: data.swarm,
            HEIGHT_TAG: str(data.height),
            ROUNDS_TAG: str(len(reports)),
        }
        run_id = client.create_run(
            experiment_id, start_time=min(stamps), tags=tags, run_name=site
        ).info.run_id
        metrics = [
            Metric(key, float(value), stamp, report.round)
            for report, stamp in zip(reports, stamps, strict=True)
            for key, value in zip(METRICS, (report.loss, report.metric, report.epoch), strict=True)
            if value is not None
        ]
        for i in range(0, len(params), PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[i : i + PARAMS_PER_BATCH])
        for i in range(0, len(metrics), METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics[i : i + METRICS_PER_BATCH])
        client.set_terminated(run_id, "FINISHED", end_time=max(stamps))
    for run_id in earlier:  # only once the new runs are all written
        client.delete_run(run_id)
    return len(earlier)


def _runs(client: MlflowClient, experiment_id: str, view: int) -> Iterator[Any]:
    """Every run of the experiment, page by page."""
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], run_view_type=view, max_results=1000, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return
