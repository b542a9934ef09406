"""Running one task on this host: fetch and check its bundle, make its environment, start
it as this site's peer in a supervised subprocess, stop it on request.

Each run lives in `WORK_DIR/tasks/TASK/run-N/`: `program/` (the bundle's files), `venv/`,
`scratch/`, `model/`, `result.json` and `run.log` (pip's and the program's output). The
process runner isolates a run by folder and environment only, not by a sandbox: a site
that needs more confinement runs the operator itself in a container or a separate account.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openswarm.admin.bundles import BundleError, fetch_bundle
from openswarm.ledger.client import LedgerClient
from openswarm.operator.config import OperatorConfig
from openswarm.operator.environment import EnvironmentFailed, make_environment

log = logging.getLogger(__name__)
STOP_GRACE_S = 10.0
PGID_FILE = "pgid"  # the run's process group, for an operator that restarts after a crash
TAIL_CHARS = 4000
#: Variables of the operator's own environment a run keeps (locale, temp, math threads).
KEPT_VARIABLES = (
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "TZ",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TORCH_NUM_THREADS",
    "KERAS_BACKEND",
)

Report = Callable[..., None]


class RunRefused(RuntimeError):
    """This site will not run the task; the message says why (it goes on the ledger)."""


@dataclass
class TaskRun:
    """One run of a task on this host, supervised in its own thread."""

    task: str
    run: int
    spec: dict[str, Any]
    config: OperatorConfig
    client: LedgerClient
    report: Report  # report(state, exit_code=…, detail=…, log_tail=…)
    folder: Path = field(init=False)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    logs_sent: int = field(default=0, init=False)  # log requests of the ledger answered
    finished: threading.Event = field(default_factory=threading.Event, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)

    def __post_init__(self) -> None:
        self.folder = run_folder(self.config, self.task, self.run)

    @property
    def log_path(self) -> Path:
        return self.folder / "run.log"

    def check(self) -> None:
        """RunRefused unless this site runs the task: its bundle allowed here, and any
        private data it asks for configured."""
        digest = self.spec["bundle"]["digest"]
        if not self.config.allows(digest):
            raise RunRefused(f"bundle {digest} is not on this site's allow-list")
        wanted = self.spec.get("private_data")
        if wanted is not None and wanted not in self.config.private_data:
            raise RunRefused(
                f"the task reads private data {wanted!r}, which this site has not "
                "configured (private_data in the operator config)"
            )

    def start(self) -> None:
        threading.Thread(target=self._supervise, name=f"run-{self.task}", daemon=True).start()

    @property
    def active(self) -> bool:
        """True until the run's thread is done (its process ended, or stopped)."""
        return not self.finished.is_set()

    def stop(self) -> None:
        """Ask the run to stop (its process group: SIGTERM, then SIGKILL); returns at once,
        `finished` is set once it has."""
        self._stop.set()

    def _supervise(self) -> None:
        try:
            self._run()
        except RunRefused as exc:
            self.report("refused", detail=str(exc))
        except (BundleError, EnvironmentFailed, OSError, subprocess.SubprocessError) as exc:
            self.report("failed", detail=str(exc)[:400], log_tail=self.tail())
        except Exception as exc:  # whatever it was, the ledger hears of it
            log.exception("task %s run %d", self.task, self.run)
            self.report("failed", detail=f"the operator failed: {type(exc).__name__}: {exc}",
                        log_tail=self.tail())  # fmt: skip
        finally:
            (self.folder / PGID_FILE).unlink(missing_ok=True)
            self.finished.set()

    def _run(self) -> None:
        self.check()
        program = self.folder / "program"
        try:
            fetch_bundle(self.client, self.spec["bundle"], program)
        except BundleError as exc:
            raise RunRefused(
                f"bundle {self.spec['bundle']['digest'][:12]}… refused: {exc}"
            ) from exc
        for sub in ("scratch", "model"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            python = make_environment(
                self.folder / "venv",
                self.spec["requirements"],
                log,
                package_index=self.config.package_index,
                find_links=self.config.find_links,
            )
            if self._stop.is_set():
                return
            argv = [str(python), str(program / self.spec["entrypoint"]), *self.spec["args"]]
            self.process = subprocess.Popen(
                argv,
                cwd=program,
                env=self.environment(python),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            (self.folder / PGID_FILE).write_text(str(self.process.pid))
        self.report("running", log_tail="")
        while not self._stop.is_set():
            try:
                code = self.process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
            if code == 0:
                self.report("completed", exit_code=0, log_tail=self.tail())
            else:
                self.report("failed", exit_code=max(-255, min(255, code)), log_tail=self.tail())
            return
        self._terminate()

    def _terminate(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def environment(self, python: Path) -> dict[str, str]:
        """What the run sees: the task's variables, then what `openswarm run` would set
        for this site (its peer identity, ledger, data, folders), which a task cannot change."""
        config, spec = self.config, self.spec
        env = {k: v for k, v in os.environ.items() if k in KEPT_VARIABLES}
        env.update(spec["env"])
        env.update(
            {
                "PATH": os.pathsep.join(
                    [str(python.parent), os.environ.get("PATH", "/usr/bin:/bin")]
                ),
                "OPENSWARM_LEDGER": ",".join(config.ledger),
                "OPENSWARM_IDENTITY": str(config.peer_identity.folder),
                "OPENSWARM_LISTEN": config.listen,
                "OPENSWARM_CONTRACT": spec["contract"],
                "OPENSWARM_PEER_NAME": config.peer_identity.name,
                "OPENSWARM_RESULT": str(self.folder / "result.json"),
                "OPENSWARM_TASK": self.task,
                "OPENSWARM_TASK_RUN": str(self.run),
                "SCRATCH_DIR": str(self.folder / "scratch"),
                "MODEL_DIR": str(self.folder / "model"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if config.advertise:
            env["OPENSWARM_ADVERTISE"] = config.advertise
        wanted = spec.get("private_data")
        if wanted is not None:
            env["DATA_DIR"] = env["OPENSWARM_DATA_DIR"] = str(config.private_data[wanted])
        return env

    def tail(self) -> str:
        """The end of the run's log (what goes on the ledger)."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - TAIL_CHARS * 4))
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return text[-TAIL_CHARS:]


def run_folder(config: OperatorConfig, task: str, run: int) -> Path:
    """Where run `run` of `task` keeps its files on this host."""
    return config.work_dir / "tasks" / task / f"run-{run}"


def printable(text: str, keep: str = "") -> str:
    """`text` with control characters (but those in `keep`) shown as '?': what the ledger
    accepts in a report, and what an admin's terminal prints safely."""
    return "".join(c if not _is_control(c) or c in keep else "?" for c in text)


def _is_control(char: str) -> bool:
    return char < " " or "\x7f" <= char <= "\x9f"


def stop_orphan(folder: Path) -> bool:
    """Kill the process group of a run in `folder` left behind by an operator that died
    (its pgid file names it; the group must still be that run's: its command line names
    the folder). True if one was stopped."""
    try:
        pgid = int((folder / PGID_FILE).read_text())
        command = Path(f"/proc/{pgid}/cmdline").read_bytes().replace(b"\0", b" ")
    except (OSError, ValueError):
        return False
    if str(folder).encode() not in command:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    (folder / PGID_FILE).unlink(missing_ok=True)
    return True


__all__ = ["RunRefused", "TaskRun", "printable", "run_folder", "stop_orphan"]
