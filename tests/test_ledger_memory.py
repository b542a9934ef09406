"""A ledger node keeps only its latest blocks in memory and reads older ones from its chain
file: the answers are the same, and memory does not grow with the chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from openswarm.ledger import replica as replica_module
from openswarm.ledger.genesis import load_genesis
from openswarm.ledger.local import LocalLedger
from openswarm.ledger.ordering import EmbeddedOrderer
from openswarm.ledger.replica import LedgerReplica
from openswarm.ledger.store import read_chain
from openswarm.ledger.tx import make_transaction


def test_old_blocks_come_from_the_chain_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(replica_module, "WINDOW_BLOCKS", 4)
    net = LocalLedger.create(tmp_path / "net")
    genesis, admin = load_genesis(net.genesis_path), net.identity("admin")
    data = tmp_path / "node"
    # No signer, so no clock ticks: only the blocks ordered here (refused for want of ledger
    # time, which makes them no less blocks).
    node = LedgerReplica(genesis, data, EmbeddedOrderer())
    try:
        for i in range(30):
            tx = make_transaction(admin, "admit", payload={"name": f"x{i}", "role": "peer"})
            assert node.order(tx, 10)["height"] == i + 1
        assert len(node._window) <= 2 * 4  # the rest is on disk only
        on_disk = read_chain(data)
        assert len(on_disk) == 31 and node.blocks(0) == on_disk
        assert [node.block(h) for h in range(31)] == on_disk
        assert node.blocks(3, 9) == on_disk[3:9] and node.blocks(25) == on_disk[25:]
        assert node.block(31) is None and node.blocks(40) == []
    finally:
        node.close()
    again = LedgerReplica(genesis, data, EmbeddedOrderer())  # replayed from the file
    try:
        assert again.blocks(0) == on_disk and len(again._window) <= 8
        tx = make_transaction(admin, "admit", payload={"name": "late", "role": "peer"})
        assert again.order(tx, 10)["height"] == 31
        assert again.blocks(0) == read_chain(data)
    finally:
        again.close()


@pytest.mark.parametrize("blank", [False, True])
def test_the_store_reads_back_what_it_wrote(tmp_path: Path, blank: bool) -> None:
    from openswarm.ledger.store import ChainStore

    store = ChainStore(tmp_path)
    blocks = [{"height": h, "hash": f"{h:064x}", "n": "é" * h} for h in range(5)]
    for h, block in enumerate(blocks):
        store.append(block, position=10 + h)
    assert store.read(1, 4) == blocks[1:4] and store.read(3, 99) == blocks[3:]
    store.close()
    if blank:  # an empty line in the file (never written by a node) is skipped
        path = tmp_path / "chain.jsonl"
        path.write_bytes(path.read_bytes().replace(b"\n", b"\n\n", 1))
    reopened = ChainStore(tmp_path)
    assert reopened.stored_height == 4 and reopened.read(0, 5) == blocks
    reopened.close()
