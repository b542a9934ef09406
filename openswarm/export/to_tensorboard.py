"""A contract's metrics as TensorBoard event files, written with the tensorboard package alone
(no TensorFlow, no PyTorch): one run folder per site, scalars loss, metric and epoch per round
(step = round, wall time = the report's ledger time) and the settings as a text summary."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from openswarm.export import INSTALL_HINT, ContractExport, ExportError, Report

#: The end of this exporter's event file names: an export replaces only its own files.
SUFFIX = ".openswarm"
#: The scalars of a run, each a value per round.
SCALARS = ("loss", "metric", "epoch")


def log_root(data: ContractExport, to: str | None) -> Path:
    """The log folder: `to`, or ./tb-logs/CONTRACT; never an existing file."""
    if to is None:
        _check_component(data.contract, "contract")
        root = Path("tb-logs") / data.contract
    else:
        root = Path(to).expanduser()
    if root.exists() and not root.is_dir():
        raise ExportError(f"{root} is a file, not a folder for TensorBoard logs")
    return root


def _check_component(name: str, what: str) -> None:
    if name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise ExportError(f"the {what} name {name!r} cannot name a folder")


def settings_markdown(data: ContractExport) -> str:
    """The contract settings as Markdown: a line naming the contract, the JSON as code."""
    text = json.dumps(data.settings, indent=2, sort_keys=True)
    code = "\n".join("    " + line for line in text.splitlines())
    return f"contract `{data.contract}` of swarm `{data.swarm}`, settings:\n\n{code}"


def export_tensorboard(data: ContractExport, to: str | None) -> str:
    """Write `data` as event files under `to`; returns what was written where."""
    try:
        from tensorboard.plugins.text.summary_v2 import text_pb
    except ImportError as exc:
        raise ExportError(f"exporting to TensorBoard needs tensorboard: {INSTALL_HINT}") from exc
    root = log_root(data, to)
    settings = text_pb("settings", settings_markdown(data))
    replaced = 0
    for site in data.sites():
        _check_component(site, "site")
        folder = root / site
        if folder.exists() and not folder.is_dir():
            raise ExportError(f"{folder} is a file, not a folder for TensorBoard logs")
        try:
            replaced += _write_site(folder, data.reports[site], settings)
        except OSError as exc:
            raise ExportError(f"writing TensorBoard logs to {folder} failed: {exc}") from exc
    sites = len(data.reports)
    done = (
        f"wrote TensorBoard logs of contract {data.contract!r} for {sites} site"
        f"{'s' if sites != 1 else ''} (one run folder each) to {root.resolve()}"
    )
    if replaced:
        done += f"; replaced {replaced} event file(s) of an earlier export"
    return done + f"\nview them: tensorboard --logdir {root.resolve()}"


def _write_site(folder: Path, reports: list[Report], settings: Any) -> int:
    """One site's event file (replacing this exporter's earlier ones); returns how many
    earlier files it replaced."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    replaced = 0
    for old in folder.glob(f"events.out.tfevents.*{SUFFIX}"):
        old.unlink()
        replaced += 1
    writer = EventFileWriter(str(folder), max_queue_size=1000, filename_suffix=SUFFIX)
    try:
        first = reports[0]
        when = time.time() if first.time is None else first.time
        writer.add_event(event_pb2.Event(wall_time=when, step=first.round, summary=settings))
        for report in reports:
            values = [
                summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
                for tag, value in zip(
                    SCALARS, (report.loss, report.metric, report.epoch), strict=True
                )
                if value is not None
            ]
            writer.add_event(
                event_pb2.Event(
                    wall_time=time.time() if report.time is None else report.time,
                    step=report.round,
                    summary=summary_pb2.Summary(value=values),
                )
            )
    finally:
        writer.close()
    return replaced
