"""What a task asks a host to run, as the ledger nodes agree on it.

An operator does not take one ledger node's word for a task: it asks every node it knows,
keeps the definition a majority of them give identically, and checks it again with the
ledger's own rules (openswarm.ledger.tasks.check_task), so a node that invents or changes a
task (its arguments, variables, data or entry point) is outvoted, and a definition no
honest ledger would have recorded is refused.
"""

from __future__ import annotations

import json
from typing import Any

from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.ledger.tasks import TaskError, check_task


class SpecError(RuntimeError):
    """No task definition this site can trust; the message says why."""


def agreed_spec(client: LedgerClient, name: str) -> dict[str, Any]:
    """Task `name`'s definition as a majority of `client`'s ledger nodes give it, checked.
    LedgerError when too few nodes answer now (try again later); SpecError when they
    disagree or give a definition the ledger's rules refuse."""
    answers: dict[str, int] = {}
    failures = []
    for endpoint in client.endpoints:
        try:
            with LedgerClient([endpoint], client.identity, timeout_s=client.timeout_s) as one:
                spec = one.call("Tasks", {"task": name}).get("spec")
        except LedgerError as exc:
            failures.append(f"{endpoint}: {exc}")
            continue
        text = json.dumps(spec, sort_keys=True)
        answers[text] = answers.get(text, 0) + 1
    needed = len(client.endpoints) // 2 + 1
    best, votes = max(answers.items(), key=lambda item: item[1], default=("null", 0))
    if votes < needed:
        if sum(answers.values()) < needed:
            raise LedgerError(f"task {name}: only {sum(answers.values())} of "
                              f"{len(client.endpoints)} ledger nodes answered: "
                              + "; ".join(failures), transient=True)  # fmt: skip
        raise SpecError(
            f"task {name}: the ledger nodes disagree about its definition ({len(answers)} "
            f"versions, {votes} of {len(client.endpoints)} at most)"
        )
    spec = json.loads(best)
    if spec is None:
        raise SpecError(f"task {name}: the ledger nodes know no such task")
    try:
        checked = check_task(spec)
    except TaskError as exc:
        raise SpecError(f"task {name}: its definition breaks the ledger's rules: {exc}") from exc
    if checked["name"] != name:
        raise SpecError(f"task {name}: the ledger nodes gave the definition of {checked['name']}")
    return checked


__all__ = ["SpecError", "agreed_spec"]
