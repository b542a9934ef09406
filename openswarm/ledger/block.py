"""Hash-chained blocks: one ordered record (a transaction or a tick), one block."""

from __future__ import annotations

from typing import Any

from openswarm.ledger.canonical import canonical_bytes, sha256_hex

GENESIS_PREV_HASH = "0" * 64


def block_hash(block: dict[str, Any]) -> str:
    """sha256 of the canonical block without its own hash field."""
    return sha256_hex(canonical_bytes({k: v for k, v in block.items() if k != "hash"}))


def make_block(height: int, prev_hash: str, **content: Any) -> dict[str, Any]:
    block: dict[str, Any] = {"height": height, "prev_hash": prev_hash, **content}
    block["hash"] = block_hash(block)
    return block


def genesis_block(genesis: dict[str, Any]) -> dict[str, Any]:
    return make_block(0, GENESIS_PREV_HASH, genesis=genesis)


def tx_block(
    height: int, prev_hash: str, tx: dict[str, Any], tx_id: str, outcome: dict[str, Any]
) -> dict[str, Any]:
    return make_block(height, prev_hash, tx=tx, tx_id=tx_id, outcome=outcome)


def record_of(block: dict[str, Any]) -> str:
    """The ordered record a (non-genesis) block was made from: applying it again to the
    state before the block yields the block again."""
    if "tick" in block:
        return canonical_bytes({"tick": block["tick"]}).decode("utf-8")
    tx = block.get("tx")
    if not isinstance(tx, dict):
        raise ValueError(f"block {block.get('height')} holds neither a transaction nor a tick")
    if set(tx) == {"raw"} and isinstance(tx["raw"], str):
        return tx["raw"]
    return canonical_bytes(tx).decode("utf-8")
