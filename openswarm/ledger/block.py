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


#: How a block refers to a certificate stored in full in an earlier block.
CERT_REF = "sha256:"


def cert_ref(cert_pem: str) -> str:
    return CERT_REF + sha256_hex(cert_pem.encode("ascii", "replace"))


def record_of(block: dict[str, Any], certs: dict[str, str]) -> str:
    """The ordered record a (non-genesis) block was made from: applying it again to the
    state before the block yields the block again. `certs` maps certificate references to
    the certificates of earlier blocks (see `Certificates`)."""
    if "tick" in block:
        tick = block["tick"]
        return canonical_bytes({"tick": {**tick, "cert": _expand(tick, certs)}}).decode("utf-8")
    tx = block.get("tx")
    if not isinstance(tx, dict):
        raise ValueError(f"block {block.get('height')} holds neither a transaction nor a tick")
    if set(tx) == {"raw"} and isinstance(tx["raw"], str):
        return tx["raw"]
    return canonical_bytes({**tx, "cert": _expand(tx, certs)}).decode("utf-8")


def _expand(item: dict[str, Any], certs: dict[str, str]) -> Any:
    cert = item.get("cert")
    if isinstance(cert, str) and cert.startswith(CERT_REF):
        if cert not in certs:
            raise ValueError(f"certificate {cert[:23]}… is not stored in any earlier block")
        return certs[cert]
    return cert


class Certificates:
    """Each certificate is stored in full in the first block that carries it; later blocks
    refer to it by digest. Every node keeps the same table, built from the chain."""

    def __init__(self) -> None:
        self.by_ref: dict[str, str] = {}

    def compact(self, cert: Any) -> Any:
        """What a new block stores for `cert` (and remember it)."""
        if not isinstance(cert, str) or cert.startswith(CERT_REF):
            return cert
        ref = cert_ref(cert)
        if ref in self.by_ref:
            return ref
        self.by_ref[ref] = cert
        return cert
