"""Offline verification of a stored chain: hashes, links, signatures and outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openswarm.ledger.block import GENESIS_PREV_HASH, block_hash, genesis_block
from openswarm.ledger.canonical import canonical_bytes
from openswarm.ledger.genesis import GenesisError, check_genesis
from openswarm.ledger.state import LedgerState
from openswarm.ledger.store import StoreError, read_chain
from openswarm.ledger.tx import Transaction, TxFormatError


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    blocks: int
    bad_height: int | None = None
    problem: str | None = None
    head_hash: str | None = None


def verify_chain_dir(data_dir: Path | str) -> VerifyReport:
    """Re-check every block of the chain stored in data_dir (or a chain file)."""
    try:
        blocks = read_chain(data_dir)
    except StoreError as exc:
        return VerifyReport(False, 0, None, str(exc))
    return verify_blocks(blocks)


def verify_blocks(blocks: list[dict[str, Any]]) -> VerifyReport:
    """Hashes and links, then replay: each signature and outcome must come out the same."""
    if not blocks:
        return VerifyReport(False, 0, None, "the chain is empty (no genesis block)")

    def bad(height: int, problem: str) -> VerifyReport:
        return VerifyReport(False, len(blocks), height, problem)

    genesis = blocks[0]
    if genesis.get("height") != 0 or genesis.get("prev_hash") != GENESIS_PREV_HASH:
        return bad(0, "the first block is not a genesis block")
    try:
        check_genesis(genesis.get("genesis"))
    except GenesisError as exc:
        return bad(0, str(exc))
    if genesis_block(genesis["genesis"]) != genesis:
        return bad(0, "genesis block hash does not match its content")
    state = LedgerState(genesis["genesis"])
    for expected_height, block in enumerate(blocks[1:], start=1):
        height = block.get("height")
        if height != expected_height:
            return bad(expected_height, f"block at position {expected_height} says height {height}")
        if block_hash(block) != block.get("hash"):
            return bad(height, "block hash does not match its content (altered)")
        if block.get("prev_hash") != state.last_hash:
            return bad(height, "prev_hash does not link to the previous block")
        tx = block.get("tx")
        if not isinstance(tx, dict):
            return bad(height, "block carries no transaction")
        try:
            text = tx["raw"] if set(tx) == {"raw"} else Transaction.from_dict(tx).to_json()
        except TxFormatError as exc:
            return bad(height, f"malformed transaction: {exc}")
        replayed = state.commit(text)
        if canonical_bytes(replayed) != canonical_bytes(block):
            why = "outcome differs on replay (signature, admission or contract result altered)"
            if replayed.get("tx_id") != block.get("tx_id"):
                why = "transaction id does not match its content"
            elif replayed["outcome"]["status"] != block.get("outcome", {}).get("status"):
                why = (
                    f"recorded {block.get('outcome', {}).get('status')!r} but replay says "
                    f"{replayed['outcome']['status']!r}: {replayed['outcome'].get('reason')}"
                )
            return bad(height, why)
    return VerifyReport(True, len(blocks), None, None, state.last_hash)
