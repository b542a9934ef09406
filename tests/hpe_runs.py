"""Runs an HPE-style program under the real `openswarm run` command, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "hpe"


@dataclass
class CliRun:
    run_dir: Path
    final_digests: dict[str, str]  # site name -> the final model the run reported
    logs: dict[str, str]

    def model_file(self, site: str, name: str) -> Path:
        return self.run_dir / site / "model" / name


def openswarm_run(
    program: str, data_dirs: list[Path], workdir: Path, *, epochs: int, **env: str
) -> CliRun:
    """`openswarm run examples/hpe/PROGRAM --peers N --data-dir ...` with this environment's
    console script; asserts that it succeeded and that every site reported one final model."""
    command = [
        str(Path(sys.executable).with_name("openswarm")), "run", str(EXAMPLES / program),
        "--peers", str(len(data_dirs)), "--data-dir", *map(str, data_dirs),
        "--workdir", str(workdir), "--epochs", str(epochs),
    ]  # fmt: skip
    done = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=600
    )
    logs = {p.stem: p.read_text(errors="replace") for p in sorted(workdir.glob("site-*.log"))}
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:], _tails(logs))
    assert "every peer holds the same final model" in done.stdout, done.stdout
    digests = {}
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[0].startswith("site-"):
            digests[fields[0]] = fields[3]
    assert len(digests) == len(data_dirs) and len(set(digests.values())) == 1, done.stdout
    return CliRun(run_dir=workdir, final_digests=digests, logs=logs)


def _tails(logs: dict[str, str]) -> dict[str, str]:
    return {name: log[-2000:] for name, log in logs.items()}
