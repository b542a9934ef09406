"""A thin `Swci` in the shape of HPE's SWCI Python API, over `openswarm.admin`.

HPE scripts drive their swarm with calls such as `createContext`, `switchContext`,
`createTrainingContract`, `createTaskFrom`, `assignTask` and `isTaskDone`; this class offers
the same names. What differs, by design:

- a context names the ledger nodes and an admin identity folder (HPE's names an API server);
- a task is final once created (`finalizeTask` only checks that it exists), and
  `createTaskFrom` reads openswarm's task file (see `openswarm.admin.tasks`) and uploads its
  program bundle to the ledger nodes;
- `assignTask(task, peers=N)` asks any N operators to run it; without `peers`, every operator
  that has announced itself (HPE's task runner argument is accepted and not needed).

Every method raises `openswarm.admin.AdminError` (or ContextError, TaskError) with the cause.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openswarm.admin import Admin, AdminError, ContextStore


class Swci:
    """An admin session on a swarm, in SWCI's terms."""

    def __init__(self, context: str | None = None) -> None:
        """A session on `context` (None: the current one of the contexts file, see
        openswarm.admin.contexts)."""
        self._store = ContextStore()
        self._context = context

    # --- contexts -------------------------------------------------------------------------
    def createContext(self, ctxName: str, ledger: str, identity: Path | str) -> str:
        """Store a context: the ledger nodes (HOST:PORT[,…]) and an admin identity folder."""
        self._store.add(ctxName, ledger, identity)
        return ctxName

    def switchContext(self, ctxName: str) -> str:
        """Make `ctxName` the context of this session and the current one of the file."""
        self._store.use(ctxName)
        self._context = ctxName
        return ctxName

    def listContexts(self) -> list[str]:
        return self._store.names()

    # --- contracts and tasks --------------------------------------------------------------
    def createTrainingContract(self, ctName: str, **settings: Any) -> bool:
        with self._admin() as admin:
            admin.create_contract(ctName, **settings)
        return True

    def listTrainingContracts(self) -> list[str]:
        with self._admin() as admin:
            return [row["name"] for row in admin.contracts()]

    def createTaskFrom(self, taskFile: Path | str) -> str:
        """Record the task of `taskFile` (its bundle uploaded first); its name."""
        from openswarm.admin.tasks import load_task

        name = load_task(taskFile)["name"]
        with self._admin() as admin:
            admin.create_task(taskFile)
        return name

    def finalizeTask(self, taskName: str) -> bool:
        """Tasks are final once created; True if `taskName` exists."""
        with self._admin() as admin:
            if taskName not in admin.tasks():
                raise AdminError(f"no task named {taskName!r} on this ledger")
        return True

    def assignTask(
        self, taskName: str, taskRunner: str | None = None, peers: int | None = None
    ) -> bool:
        with self._admin() as admin:
            admin.assign_task(taskName, peers=peers)
        return True

    def resetTask(self, taskName: str) -> bool:
        with self._admin() as admin:
            admin.reset_task(taskName)
        return True

    def isTaskDone(self, taskName: str) -> bool:
        with self._admin() as admin:
            return bool(admin.task_status(taskName)["done"])

    def waitForTaskDone(self, taskName: str, timeout: float = 3600.0) -> bool:
        """Wait for `taskName` to be done; True if every run completed."""
        with self._admin() as admin:
            return bool(admin.wait_task(taskName, timeout_s=timeout)["ok"])

    def getTaskStatus(self, taskName: str) -> dict[str, Any]:
        with self._admin() as admin:
            return admin.task_status(taskName)

    def listNodes(self) -> dict[str, Any]:
        with self._admin() as admin:
            return admin.nodes()

    def getPerfData(self, ctName: str) -> dict[str, Any]:
        with self._admin() as admin:
            return admin.perf(ctName)

    def _admin(self) -> Admin:
        return Admin(self._context)


__all__ = ["Swci"]
