"""A replica's signed head: the height and hash of its last block, signed by the replica.

Kept as DATA_DIR/head.json next to the chain, so that an offline check can tell a chain that
was cut short from one that is complete: the chain must hold the block the head names.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any

from openswarm.ledger.canonical import canonical_bytes
from openswarm.pki import (
    CertIdentity,
    Identity,
    PkiError,
    certificate_identity,
    verify_in_bundle,
    verify_signature,
)

HEAD_FILE = "head.json"
_KIND = "openswarm-ledger-head"


class HeadError(ValueError):
    """A head that cannot be read or does not check out; str() says why."""


def _signed_bytes(swarm: str, height: int, block_hash: str) -> bytes:
    return canonical_bytes({"kind": _KIND, "swarm": swarm, "height": height, "hash": block_hash})


def sign_head(identity: Identity, swarm: str, block: dict[str, Any]) -> dict[str, Any]:
    """The signed head for `block`, as `identity` (a ledger replica)."""
    height, block_hash = block["height"], block["hash"]
    signature = identity.sign(_signed_bytes(swarm, height, block_hash))
    return {
        "swarm": swarm,
        "height": height,
        "hash": block_hash,
        "signer": identity.cert_pem.decode("ascii"),
        "signature": base64.b64encode(signature).decode("ascii"),
    }


def write_head(data_dir: Path, head: dict[str, Any]) -> None:
    """Replace DATA_DIR/head.json atomically (a reader sees the old or the new head)."""
    path = Path(data_dir) / HEAD_FILE
    tmp = path.with_name(f".{HEAD_FILE}.tmp")
    tmp.write_bytes(canonical_bytes(head) + b"\n")
    os.replace(tmp, path)


def read_head(data_dir: Path) -> dict[str, Any] | None:
    """The head stored in `data_dir`, or None if there is none; HeadError if unreadable."""
    path = Path(data_dir) / HEAD_FILE
    try:
        head = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise HeadError(f"{path} cannot be read as a signed head ({exc})") from exc
    if not isinstance(head, dict):
        raise HeadError(f"{path} is not a signed head")
    return head


def check_head(head: dict[str, Any], swarm: str, ca_cert_pem: bytes) -> CertIdentity:
    """Check a head's form, its signer (a ledger identity of the CA, or of one of the CAs of
    the bundle `ca_cert_pem`) and signature."""
    height = head.get("height")
    if isinstance(height, bool) or not isinstance(height, int) or height < 0:
        raise HeadError("signed head: 'height' is not a non-negative integer")
    texts = {name: head.get(name) for name in ("hash", "signer", "signature")}
    for name, value in texts.items():
        if not isinstance(value, str):
            raise HeadError(f"signed head: {name!r} is missing or not a string")
    if head.get("swarm") != swarm:
        raise HeadError(f"signed head is of swarm {head.get('swarm')!r}, not {swarm!r}")
    try:
        cert = str(texts["signer"]).encode("ascii")
        # Chain check only: a head signed before the certificate expired stays valid evidence.
        who = verify_in_bundle(cert, ca_cert_pem, at=certificate_identity(cert).not_before)
        raw = base64.b64decode(str(texts["signature"]), validate=True)
        verify_signature(cert, _signed_bytes(swarm, height, str(texts["hash"])), raw)
    except (PkiError, UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise HeadError(f"signed head does not check out: {exc}") from exc
    if who.role != "ledger":
        raise HeadError(f"signed head is signed by {who.name!r}, role {who.role!r}, not a ledger")
    return who
