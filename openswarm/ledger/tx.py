"""Signed transactions: canonical records that every replica checks the same way."""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from openswarm.ledger.canonical import canonical_bytes, sha256_hex
from openswarm.ledger.contract import CALL_TYPES
from openswarm.ledger.contract_checks import NAME_RE
from openswarm.pki import Identity

#: Transaction types and the role a sender must hold for each.
ADMIN_TYPES = frozenset(
    {
        "admit",
        "revoke",
        "contract_create",
        "archive",
        "task_create",
        "task_assign",
        "task_reset",
        "task_logs",
    }
)
#: What a site's operator (openswarm.operator) reports: that it is alive, and its task runs.
OPERATOR_TYPES = frozenset({"operator_heartbeat", "task_report"})
CONTRACT_TYPES = CALL_TYPES
TX_TYPES = ADMIN_TYPES | OPERATOR_TYPES | CONTRACT_TYPES
_FIELDS = ("type", "contract", "round", "sender", "nonce", "payload", "timestamp", "cert")


class TxFormatError(ValueError):
    """A transaction that is not even well formed (before any signature or state check)."""


def required_role(tx_type: str) -> str:
    if tx_type in OPERATOR_TYPES:
        return "operator"
    return "admin" if tx_type in ADMIN_TYPES else "peer"


@dataclass(frozen=True)
class Transaction:
    """One signed ledger record. `cert` is the sender's PEM certificate."""

    type: str
    contract: str
    round: int
    sender: str
    nonce: str
    payload: Mapping[str, Any]
    timestamp: float
    cert: str
    signature: str = ""
    _body: bytes = field(default=b"", repr=False, compare=False)

    def body(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELDS}

    def signed_bytes(self) -> bytes:
        """The canonical bytes the signature covers (everything but the signature)."""
        return self._body or canonical_bytes(self.body())

    @property
    def tx_id(self) -> str:
        return sha256_hex(self.signed_bytes())

    def signature_bytes(self) -> bytes:
        try:
            return base64.b64decode(self.signature, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise TxFormatError("signature is not valid base64") from exc

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "signature": self.signature}

    def to_json(self) -> str:
        return canonical_bytes(self.to_dict()).decode("utf-8")

    @classmethod
    def from_dict(cls, data: Any) -> Transaction:
        """Parse and type-check a transaction; raise TxFormatError naming the bad field."""
        if not isinstance(data, Mapping):
            raise TxFormatError("a transaction must be a JSON object")
        missing = [name for name in (*_FIELDS, "signature") if name not in data]
        if missing:
            raise TxFormatError(f"transaction lacks field(s): {', '.join(missing)}")
        extra = sorted(set(data) - {*_FIELDS, "signature"})
        if extra:
            raise TxFormatError(f"transaction has unknown field(s): {', '.join(extra)}")
        _expect(data, "type", str)
        if data["type"] not in TX_TYPES:
            raise TxFormatError(
                f"unknown transaction type {data['type']!r}; valid: {', '.join(sorted(TX_TYPES))}"
            )
        for name in ("contract", "sender", "nonce", "cert", "signature"):
            _expect(data, name, str)
        if not isinstance(data["round"], int) or isinstance(data["round"], bool):
            raise TxFormatError("field 'round' must be an integer")
        if data["round"] < 0:
            raise TxFormatError("field 'round' must be >= 0")
        _expect(data, "payload", Mapping)
        ts = data["timestamp"]
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
            raise TxFormatError("field 'timestamp' must be a finite number of seconds")
        if not 8 <= len(data["nonce"]) <= 128:
            raise TxFormatError("field 'nonce' must be 8 to 128 characters")
        if data["contract"] and NAME_RE.fullmatch(data["contract"]) is None:
            raise TxFormatError(
                "field 'contract' must be a contract name: 1 to 64 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit"
            )
        tx = cls(**{name: data[name] for name in (*_FIELDS, "signature")})
        try:
            body = canonical_bytes(tx.body())
        except ValueError as exc:
            raise TxFormatError(f"transaction is not canonical JSON: {exc}") from exc
        object.__setattr__(tx, "_body", body)
        return tx

    @classmethod
    def from_json(cls, text: str | bytes) -> Transaction:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TxFormatError(f"transaction is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def _expect(data: Mapping[str, Any], name: str, kind: type) -> None:
    if not isinstance(data[name], kind):
        raise TxFormatError(f"field {name!r} must be a {getattr(kind, '__name__', kind)}")


def make_transaction(
    identity: Identity,
    tx_type: str,
    *,
    contract: str = "",
    round: int = 0,
    payload: Mapping[str, Any] | None = None,
    timestamp: float | None = None,
    nonce: str | None = None,
) -> Transaction:
    """Build and sign a transaction as `identity`."""
    tx = Transaction(
        type=tx_type,
        contract=contract,
        round=round,
        sender=identity.name,
        nonce=nonce or secrets.token_hex(16),
        payload=dict(payload or {}),
        timestamp=time.time() if timestamp is None else timestamp,
        cert=identity.cert_pem.decode("ascii"),
    )
    signature = base64.b64encode(identity.sign(tx.signed_bytes())).decode("ascii")
    return Transaction.from_dict({**tx.body(), "signature": signature})
