"""Task files: what `openswarm task create -f task.yaml` reads, checked before it is sent.

A task file is YAML::

    name: mnist-run-1
    contract: study              # the training contract the sites join
    program: ./program           # a folder, relative to this file: becomes the bundle
    entrypoint: train.py         # a file of the program folder
    args: ["--epochs", "10"]
    env: {LEARNING_RATE: "0.01"}
    private_data: mnist          # the name each host's operator maps to its data folder
    requirements: ["scikit-learn>=1.4"]
    description: "..."

It is checked with the very rules the ledger applies (openswarm.ledger.tasks), so a mistake
is named here, before anything is signed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from openswarm.admin.bundles import BundleError, bundle_of
from openswarm.ledger.tasks import TASK_FIELDS, TaskError, check_task

FILE_FIELDS = tuple(sorted({*TASK_FIELDS, "program"} - {"bundle"}))


def load_task(path: Path | str) -> dict[str, Any]:
    """The task that task file `path` defines, with its program folder's bundle; TaskError
    names what is wrong and where."""
    return read_task(path)[0]


def read_task(path: Path | str) -> tuple[dict[str, Any], Path]:
    """The task that task file `path` defines, and its program folder."""
    source = Path(path)
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TaskError(f"cannot read task file {source}: {exc}") from None
    if not isinstance(raw, dict):
        raise TaskError(f"task file {source} must be a mapping of {', '.join(FILE_FIELDS)}")
    unknown = sorted(str(k) for k in raw if k not in FILE_FIELDS)
    if unknown:
        raise TaskError(f"task file {source}: unknown field(s) {', '.join(unknown)}; known: "
                        f"{', '.join(FILE_FIELDS)}")  # fmt: skip
    program = raw.pop("program", None)
    if not isinstance(program, str) or not program:
        raise TaskError(f"task file {source}: 'program' must name the program folder")
    folder = Path(program) if Path(program).is_absolute() else source.parent / program
    try:
        raw["bundle"] = bundle_of(folder)
    except BundleError as exc:
        raise TaskError(f"task file {source}: {exc}") from None
    try:
        return check_task(raw), folder
    except TaskError as exc:
        raise TaskError(f"task file {source}: {exc}") from None


__all__ = ["FILE_FIELDS", "load_task", "read_task"]
