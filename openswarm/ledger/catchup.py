"""Catch-up, backup and restore of one ledger node's chain.

A new node, or one that was down while records were archived from etcd, copies another
node's chain (a checkpoint: the blocks up to that node's signed head, each with its
position in the order) and then follows etcd from there. Nothing is taken on trust: the
head must be signed by a ledger node of the swarm, and `openswarm ledger start` replays
every copied block through the state machine before it serves.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from openswarm.ledger.canonical import canonical_bytes
from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.ledger.head import HEAD_FILE, HeadError, check_head, read_head, write_head
from openswarm.ledger.store import CHAIN_FILE, POSITION, read_chain
from openswarm.pki import Identity, same_trust

PAGE = 2000
MANIFEST = "backup.json"


class CatchUpError(RuntimeError):
    """A checkpoint that cannot be taken or used; str() says why and what to do."""


def catch_up(data_dir: Path, identity: Identity, source: str) -> dict[str, Any]:
    """Copy the chain of the node at `source` (HOST:PORT) into the empty `data_dir`."""
    chain = Path(data_dir) / CHAIN_FILE
    if chain.exists() and chain.stat().st_size > 0:
        raise CatchUpError(
            f"{chain} exists: catch-up fills an empty data folder; move the old one away"
        )
    with LedgerClient([source], identity, timeout_s=60) as client:
        status = client.status()
        head = status.get("head")
        if not isinstance(head, dict):
            raise CatchUpError(f"{source} has no signed head to check its chain against")
        genesis = client.blocks(0, 0)[0]["genesis"]
        try:
            signer = check_head(head, genesis["swarm"], identity.ca_cert_pem)
        except HeadError as exc:
            raise CatchUpError(f"{source}: {exc}") from exc
        if not same_trust(genesis["ca_cert"].encode("ascii"), identity.ca_cert_pem):
            raise CatchUpError(f"{source} serves a ledger of another CA than {identity.name}'s")
        blocks, positions = [], []
        while len(blocks) <= head["height"]:
            stop = min(len(blocks) + PAGE - 1, head["height"])
            answer = client.call("Blocks", {"from": len(blocks), "to": stop, "positions": True})
            blocks.extend(answer["blocks"])
            positions.extend(answer.get("positions") or [])
    if len(positions) != len(blocks) or blocks[head["height"]]["hash"] != head["hash"]:
        raise CatchUpError(f"{source} sent a chain that does not end at its signed head")
    _write_chain(Path(data_dir), blocks[: head["height"] + 1], positions)
    write_head(Path(data_dir), head)
    return {"height": head["height"], "position": positions[head["height"]],
            "signed_by": signer.name}  # fmt: skip


def _write_chain(data_dir: Path, blocks: list[dict], positions: list[int]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{CHAIN_FILE}.tmp"
    with open(tmp, "wb") as handle:
        for block, position in zip(blocks, positions, strict=False):
            handle.write(canonical_bytes({**block, POSITION: position}) + b"\n")
    tmp.chmod(0o600)
    tmp.replace(data_dir / CHAIN_FILE)


def backup(data_dir: Path, out: Path, *, etcd_snapshot: bytes | None = None) -> dict[str, Any]:
    """Copy a node's chain and signed head (and an etcd snapshot, if given) into `out`."""
    data_dir, out = Path(data_dir), Path(out)
    if out.exists() and any(out.iterdir()):
        raise CatchUpError(f"{out} is not empty; back up into a new folder")
    head = read_head(data_dir)
    if head is None:
        raise CatchUpError(f"{data_dir} has no signed head ({HEAD_FILE}): is it a ledger node?")
    out.mkdir(parents=True, exist_ok=True)
    # A running node goes on committing (clock ticks at least) while this copies: the copy
    # ends at the signed head, whose blocks were on disk before it was signed.
    _copy_chain_upto(data_dir / CHAIN_FILE, out / CHAIN_FILE, head)
    shutil.copy2(data_dir / HEAD_FILE, out / HEAD_FILE)
    files = {name: _sha256(out / name) for name in (CHAIN_FILE, HEAD_FILE)}
    if etcd_snapshot is not None:
        (out / "etcd.snapshot").write_bytes(etcd_snapshot)
        files["etcd.snapshot"] = _sha256(out / "etcd.snapshot")
    manifest = {"height": head["height"], "hash": head["hash"], "files": files}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def restore(backup_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Put a backed-up chain into an empty data folder (the node verifies it at start)."""
    backup_dir, data_dir = Path(backup_dir), Path(data_dir)
    try:
        manifest = json.loads((backup_dir / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise CatchUpError(f"{backup_dir} is not an openswarm ledger backup ({exc})") from exc
    for name, digest in manifest["files"].items():
        if _sha256(backup_dir / name) != digest:
            raise CatchUpError(f"{backup_dir / name} differs from the backup's manifest")
    chain = data_dir / CHAIN_FILE
    if chain.exists() and chain.stat().st_size > 0:
        raise CatchUpError(f"{chain} exists: restore into an empty data folder")
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in (CHAIN_FILE, HEAD_FILE):
        shutil.copy2(backup_dir / name, data_dir / name)
    blocks = read_chain(data_dir)
    if not blocks or blocks[-1]["hash"] != manifest["hash"]:
        raise CatchUpError(f"{backup_dir}: the chain does not end at the backed-up head")
    return manifest


def _copy_chain_upto(source: Path, target: Path, head: dict[str, Any]) -> None:
    """Copy the chain file's lines up to and including the block of `head`."""
    height = int(head["height"])
    with open(source, "rb") as chain, open(target, "wb") as copy:
        for line in chain:
            if not line.strip():
                continue
            copy.write(line)
            block = json.loads(line)
            if block.get("height") == height:
                if block.get("hash") != head["hash"]:
                    raise CatchUpError(f"{source}: block {height} is not the signed head's")
                return
    raise CatchUpError(f"{source} ends before the signed head's block {height}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["CatchUpError", "LedgerError", "backup", "catch_up", "restore"]


def import_chain(chain_path: Path, orderer: Any, genesis: dict[str, Any]) -> list[dict]:
    """Put every record of a stored chain (e.g. an embedded ledger's) into etcd, in order,
    before anything else is ordered; etcd-backed nodes then rebuild the identical chain.
    Returns the imported blocks."""
    from openswarm.ledger.block import Certificates, genesis_block, record_of

    blocks = read_chain(chain_path)
    if not blocks or blocks[0] != genesis_block(genesis):
        raise CatchUpError(f"{chain_path} does not start from this node's genesis")
    certs, records = Certificates(), []
    for block in blocks[1:]:
        try:
            records.append(record_of(block, certs.by_ref))
        except ValueError as exc:
            raise CatchUpError(f"{chain_path}: block {block.get('height')}: {exc}") from exc
        item = block.get("tick") or block.get("tx") or {}
        certs.compact(item.get("cert"))
    if len(set(records)) != len(records):
        raise CatchUpError(
            f"{chain_path} holds the same record twice (a resubmission recorded as rejected); "
            "etcd keeps each record once, so this chain cannot be carried over identically"
        )
    # Idempotent, so several nodes may import at once: each record is written only once,
    # and only after the one before it exists, so etcd holds them in the chain's order.
    for record in records:
        orderer.append(record, 30.0)
    return blocks
