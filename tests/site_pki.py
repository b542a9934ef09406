"""In-process swarms of several site CAs for unit tests of the ledger state: each site's CA,
identities issued by it, a genesis naming them, and signed ticks and transactions."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from openswarm.ledger.canonical import canonical_bytes
from openswarm.ledger.genesis import make_genesis
from openswarm.ledger.state import LedgerState
from openswarm.ledger.ticks import make_tick
from openswarm.ledger.tx import make_transaction
from openswarm.pki import Identity, init_ca, issue_identity

SWARM = "sites"


@pytest.fixture(autouse=True)
def ledger_time_now(request: pytest.FixtureRequest) -> None:
    """For a test module that imports it: its ledger time, `NOW`, is the test's own start,
    so certificates issued for the module a while ago (a loaded run can take minutes to get
    there) are valid then, and so are those a test issues itself (each is valid from five
    minutes before its issue)."""
    request.module.NOW = round(time.time(), 3)


@dataclass
class SitePki:
    """CAs and identities of a multi-site swarm; `forge` issues a name from the wrong CA."""

    root: Path
    genesis: dict[str, Any]
    ids: dict[str, Identity] = field(default_factory=dict)

    def ca_dir(self, site: str) -> Path:
        return self.root / f"ca-{site}"

    def forge(self, site: str, name: str, role: str) -> Identity:
        """An identity `name` issued by `site`'s CA (whatever site the ledger has it under)."""
        out = self.root / "forged" / site / name
        return Identity.load(issue_identity(self.ca_dir(site), name, role, out_dir=out))


def build_sites(
    root: Path,
    sites: Mapping[str, Sequence[tuple[str, str]]],
    *,
    admin_quorum: int = 1,
    contracts: Mapping[str, Mapping[str, Any]] | None = None,
) -> SitePki:
    """One CA per site (site -> its (name, role) identities), and a genesis admitting all."""
    cas: dict[str, bytes] = {}
    ids: dict[str, Identity] = {}
    admitted = []
    for site, members in sites.items():
        ca = init_ca(root / f"ca-{site}", SWARM, site=site)
        cas[site] = (ca / "ca.crt").read_bytes()
        for name, role in members:
            ids[name] = Identity.load(issue_identity(ca, name, role))
            admitted.append((name, role, site))
    genesis = make_genesis(
        SWARM, None, admitted, sites=cas, admin_quorum=admin_quorum, contracts=contracts
    )
    return SitePki(root, genesis, ids)


def tick_record(node: Identity, when: float) -> str:
    return canonical_bytes({"tick": make_tick(node, SWARM, when)}).decode("utf-8")


def started(genesis: dict[str, Any], node: Identity, now: float) -> LedgerState:
    """A ledger state whose time is `now` (ticked by `node`, its only ledger node)."""
    state = LedgerState(genesis)
    outcome = state.commit(tick_record(node, now))["outcome"]
    assert outcome["status"] == "applied", outcome
    return state


def tx_record(identity: Identity, tx_type: str, now: float, **fields: Any) -> str:
    """A signed transaction of `identity`, stamped with ledger time `now`."""
    return make_transaction(identity, tx_type, timestamp=now, **fields).to_json()


def commit(state: LedgerState, record: str) -> dict[str, Any]:
    """The outcome of committing `record`."""
    return state.commit(record)["outcome"]
