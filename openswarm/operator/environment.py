"""A task run's Python environment: a virtual environment of its own that sees the
operator's packages (openswarm and what the host installed) beneath the ones the task's
requirements add, installed with pip from the host's own package index."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path
from typing import IO

PIP_TIMEOUT_S = 1800.0


class EnvironmentFailed(RuntimeError):
    """The environment could not be made (pip failed); the run's log holds pip's output."""


def make_environment(
    folder: Path,
    requirements: list[str],
    log: IO[bytes],
    *,
    package_index: str | None = None,
    find_links: Path | None = None,
) -> Path:
    """Create the environment in `folder`, install `requirements` there (pip's output goes
    to `log`) and return its python."""
    venv.EnvBuilder(with_pip=False, clear=True, symlinks=True).create(folder)
    python = folder / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The operator's own site folders come after the run's, their .pth files honoured
    # (editable installs included), so the run imports openswarm as the operator does.
    lines = [f"import site; site.addsitedir({d!r})" for d in _site_dirs()]
    (purelib / "_openswarm_operator.pth").write_text("\n".join(lines) + "\n")
    if not requirements:
        return python
    # wheels only: installing must not run a package's own build code on this host
    argv = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
            "--only-binary", ":all:"]  # fmt: skip
    if package_index is not None:
        argv += ["--index-url", package_index]
    if find_links is not None:
        argv += ["--no-index", "--find-links", str(find_links)]
    log.write(f"$ pip install {' '.join(requirements)}\n".encode())
    log.flush()
    done = subprocess.run(
        [*argv, "--", *requirements],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        timeout=PIP_TIMEOUT_S,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    )
    if done.returncode != 0:
        raise EnvironmentFailed(
            f"pip could not install the task's requirements (exit "
            f"{done.returncode}); see the run's log"
        )
    return python


def _site_dirs() -> list[str]:
    found = [sysconfig.get_path("purelib"), sysconfig.get_path("platlib"), *site.getsitepackages()]
    if sys.flags.no_user_site == 0 and site.ENABLE_USER_SITE:
        found.append(site.getusersitepackages())
    return list(dict.fromkeys(d for d in found if d and Path(d).is_dir()))


__all__ = ["EnvironmentFailed", "make_environment"]
