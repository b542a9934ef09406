"""Shared fixtures: real ledger networks of replica processes on loopback."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import Swarm, running_ledger

from openswarm.ledger.local import LocalLedger

PEERS = ("p1", "p2", "p3")

# tests/backends need TensorFlow, tf-keras and JAX, kept out of the core environment: the
# Makefile runs them in its .venv-keras.
BACKENDS = ("tensorflow", "tf_keras", "jax")
collect_ignore = [] if all(importlib.util.find_spec(m) for m in BACKENDS) else ["backends"]


def _network(root: Path, replicas: int) -> Iterator[LocalLedger]:
    # The default contract exists, with default settings; others are created by the admin.
    yield from running_ledger(root, replicas=replicas, peers=PEERS, contract_settings={})


@pytest.fixture
def ledger1(tmp_path: Path) -> Iterator[LocalLedger]:
    """A single-replica ledger process with peers p1..p3 and an admin."""
    yield from _network(tmp_path / "net", 1)


@pytest.fixture
def ledger3(tmp_path: Path) -> Iterator[LocalLedger]:
    """Three ledger node processes on loopback, each with a managed etcd member."""
    yield from _network(tmp_path / "net", 3)


@pytest.fixture
def swarm_factory(tmp_path: Path) -> Iterator[Callable[..., Swarm]]:
    """Makes swarms (a ledger and N site processes) under this test's folder; closes them."""
    made: list[Swarm] = []

    def make(
        sites: int, *, ledger_nodes: int = 1, cas: dict[str, list[str]] | None = None, **env: str
    ) -> Swarm:
        swarm = Swarm(
            tmp_path / f"swarm{len(made)}", sites, ledger_nodes=ledger_nodes, cas=cas, **env
        )
        made.append(swarm)
        return swarm

    yield make
    for swarm in made:
        swarm.close()
