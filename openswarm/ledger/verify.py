"""Offline verification of a stored chain: hashes, links, signatures, outcomes and the
replica's signed head (which shows whether the chain was cut short)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openswarm.ledger.block import GENESIS_PREV_HASH, block_hash, genesis_block
from openswarm.ledger.canonical import canonical_bytes
from openswarm.ledger.genesis import GenesisError, check_genesis
from openswarm.ledger.head import HEAD_FILE, HeadError, check_head, read_head
from openswarm.ledger.state import LedgerState
from openswarm.ledger.store import CHAIN_FILE, StoreError, read_chain
from openswarm.ledger.tx import Transaction, TxFormatError


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    blocks: int
    bad_height: int | None = None
    problem: str | None = None
    head_hash: str | None = None
    signed_height: int | None = None
    """The height of the replica's signed head (None when not checked)."""


def chain_dirs(path: Path | str) -> list[Path]:
    """The replica data folders at `path`: itself if it holds a chain, else its subfolders
    that do (a LEDGER_DIR of `openswarm run`)."""
    path = Path(path)
    if path.is_file() or (path / CHAIN_FILE).exists():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.is_dir() and (p / CHAIN_FILE).is_file())


def verify_chain_dir(data_dir: Path | str, *, require_head: bool = True) -> VerifyReport:
    """Re-check every block of the chain stored in data_dir (or a chain file), and that the
    chain reaches the replica's signed head (unless `require_head` is False)."""
    folder = Path(data_dir)
    folder = folder.parent if folder.is_file() else folder
    try:
        # The head first: a running replica writes it after the block, so never ahead of it.
        head = read_head(folder) if require_head else None
        blocks = read_chain(data_dir)
    except (StoreError, HeadError) as exc:
        return VerifyReport(False, 0, None, str(exc))
    except OSError as exc:
        return VerifyReport(False, 0, None, f"cannot read {folder}: {exc.strerror or exc}")
    report = verify_blocks(blocks)
    if not report.ok or not require_head:
        return report
    if head is None:
        return VerifyReport(
            False, report.blocks, None,
            f"no signed head ({HEAD_FILE}) in {folder}: truncation cannot be ruled out; "
            "pass --no-head to check the chain alone",
        )  # fmt: skip
    return _check_against_head(report, blocks, head)


def _check_against_head(
    report: VerifyReport, blocks: list[dict[str, Any]], head: dict[str, Any]
) -> VerifyReport:
    genesis = blocks[0]["genesis"]
    try:
        signer = check_head(head, genesis["swarm"], genesis["ca_cert"].encode("ascii"))
    except HeadError as exc:
        return VerifyReport(False, report.blocks, None, str(exc))
    height = head["height"]
    last = len(blocks) - 1
    if height > last:
        return VerifyReport(
            False, report.blocks, None,
            f"chain ends at block {last} but the signed head of {signer.name} is at {height} "
            "(the chain was truncated)",
        )  # fmt: skip
    if blocks[height]["hash"] != head["hash"]:
        return VerifyReport(
            False, report.blocks, height,
            f"block {height} differs from the one the signed head of {signer.name} names",
        )  # fmt: skip
    return VerifyReport(True, report.blocks, None, None, report.head_hash, height)


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
        if "tick" not in block and not isinstance(tx, dict):
            return bad(height, "block carries neither a transaction nor a tick")
        try:
            text = state.record_of(block)
            if isinstance(tx, dict) and set(tx) != {"raw"}:
                Transaction.from_json(text)
        except (TxFormatError, ValueError) as exc:
            return bad(height, f"malformed record: {exc}")
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
