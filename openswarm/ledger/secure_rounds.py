"""Secure aggregation's part of the training contract (`secure_aggregation`).

In a round after the first, each participant's `ready` carries a fresh mask public key, a
commitment to a fresh self-mask seed, and Shamir shares of both secrets, each sealed to one
member's share key (registered with `register`, signed like any transaction). The seal
admits, in the order they became ready, the sites whose shares and every other admitted
site's shares reach each other. Each participant then posts `masked` (the digest of its
masked update); the leader pulls them and posts `survivors` (whose masked updates it has, at
least `threshold`), which no later leader of the round can change; every participant posts
`unmask`: its share of each survivor's self-mask seed and of each other participant's mask
key, never both for one site. With `threshold` of them the leader can remove the masks and
posts `merged`, leaving out exactly the participants that are not survivors. Fewer than
`threshold` within half the leader timeout of `survivors`: any participant may post
`secagg_abort`, and the round ends without a merge; so may the leader at any time once the
survivors are fixed (when the shares rebuild no secret its owner committed to: it could as
well stay silent until voted out).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, x25519

from openswarm.ledger.contract_checks import (
    ContractError,
    check_digest,
    check_fields,
    check_int,
    json_copy,
    type_name,
)

#: A P-256 public key as an uncompressed point (hex), an X25519 key or a commitment (hex).
_SHARE_KEY_RE = re.compile(r"04[0-9a-f]{128}")
_HEX32_RE = re.compile(r"[0-9a-f]{64}")
#: A sealed pair of shares (ephemeral point, nonce, x, two field elements, tag) in hex; and
#: one revealed share (x, field element).
SEALED_SHARES_HEX = 2 * (65 + 12 + 2 + 2 * 66 + 16)
REVEALED_SHARE_HEX = 2 * (2 + 66)


def check_share_key(value: Any) -> str:
    """A member's share key as registered (hex of an uncompressed P-256 point on the
    curve: an unusable one would keep every dealer from dealing it a share)."""
    if not isinstance(value, str) or not _SHARE_KEY_RE.fullmatch(value):
        raise ContractError(
            "payload.share_key must be an uncompressed P-256 public key in lowercase hex "
            f"(130 characters starting 04), got {value!r:.40}"
        )
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(value))
    except ValueError:
        raise ContractError("payload.share_key is not a point on P-256") from None
    return value


#: A fixed X25519 key to try each mask public key with: a low-order key gives an all-zero
#: exchange, which would keep every other site from masking against it.
_PROBE = x25519.X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def _check_mask_key(value: str) -> None:
    try:
        _PROBE.exchange(x25519.X25519PublicKey.from_public_bytes(bytes.fromhex(value)))
    except ValueError:
        raise ContractError("payload.secagg.pk is a low-order X25519 key: send a fresh "
                            "key pair's public key") from None  # fmt: skip


def check_ready_secagg(value: Any, members: Mapping[str, Any]) -> dict[str, Any]:
    """A ready's secure-aggregation part: {pk, commit, shares: {member: sealed hex}}, with
    a share for every active member with a share key (a site that dealt to fewer could
    keep the others out of the round's seal)."""
    if not isinstance(value, Mapping):
        raise ContractError(f"payload.secagg must be an object, got {type_name(value)}")
    check_fields(value, "ready secagg", ("pk", "commit", "shares"), ())
    for key in ("pk", "commit"):
        if not isinstance(value[key], str) or not _HEX32_RE.fullmatch(value[key]):
            raise ContractError(f"payload.secagg.{key} must be 64 lowercase hex characters")
    _check_mask_key(value["pk"])
    shares = value["shares"]
    if not isinstance(shares, Mapping) or not shares:
        raise ContractError("payload.secagg.shares must be a non-empty object")
    owed = sorted(n for n, m in members.items() if m.active and m.share_key)
    missing = [n for n in owed if n not in shares]
    if missing:
        raise ContractError(f"payload.secagg.shares must deal a share to every active member "
                            f"with a share key; missing: {', '.join(missing)}")  # fmt: skip
    for name, sealed in shares.items():
        member = members.get(name)
        if member is None or not member.share_key:
            raise ContractError(f"payload.secagg.shares names {name!r}, not a member with a "
                                "share key")  # fmt: skip
        if (
            not isinstance(sealed, str)
            or len(sealed) != SEALED_SHARES_HEX
            or (not all(c in "0123456789abcdef" for c in sealed))
        ):
            raise ContractError(f"payload.secagg.shares[{name!r}] must be "
                                f"{SEALED_SHARES_HEX} lowercase hex characters")  # fmt: skip
    return {"commit": value["commit"], "pk": value["pk"],
            "shares": {n: shares[n] for n in sorted(shares)}}  # fmt: skip


class SecureRounds:
    """Masked updates, survivors, revealed shares; mixed into TrainingContract, whose state
    and helpers it uses."""

    _secagg: dict[str, Any] | None
    # the contract's own, used here
    _settings: Any
    _latest_merged: dict[str, Any] | None
    _participants: list[str]
    _ready: dict[str, dict[str, Any]]
    _round: int
    _shards: list[dict[str, Any]]
    _sealed_at: float | None

    def _event(self, kind: str, call: Any, **fields: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _require_sealed(self, round: int) -> None:
        raise NotImplementedError

    def _abort_round(self, call: Any) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def leader(self) -> str | None:
        raise NotImplementedError

    # --- the round's phases ---

    def _secagg_round(self) -> bool:
        """Whether a round sealed now is masked: the setting, and a merged model to start
        from (the first round hands out its leader's untrained model)."""
        return self._settings.secure_aggregation is not None and self._latest_merged is not None

    def _secagg_admitted(self) -> list[str]:
        """The ready sites a masked round can take, in the order they became ready: each
        one whose shares reach itself and every one admitted before it, and theirs it."""
        admitted: list[str] = []
        for name, entry in self._ready.items():
            shares = (entry.get("secagg") or {}).get("shares", {})
            if name in shares and all(
                other in shares and name in self._ready[other]["secagg"]["shares"]
                for other in admitted
            ):
                admitted.append(name)
        return admitted

    def _open_secagg(self) -> None:
        self._secagg = {"masked": {}, "survivors": None, "survivors_at": None, "unmasked": {}}

    def _secagg_threshold(self) -> int:
        return int(self._settings.secure_aggregation["threshold"])

    def _require_secagg(self, call: Any) -> dict[str, Any]:
        self._require_sealed(call.round)
        if self._secagg is None:
            raise ContractError(f"round {call.round} is not a securely aggregated round")
        if call.sender not in self._participants:
            raise ContractError(f"{call.sender} is not a participant of round {call.round}")
        return self._secagg

    def _on_masked(self, call: Any) -> list[dict[str, Any]]:
        payload = call.payload
        check_fields(payload, "masked", ("digest", "size", "root"), ())
        state = self._require_secagg(call)
        if state["survivors"] is not None:
            raise ContractError(f"round {call.round}'s survivors are fixed already")
        if call.sender in state["masked"]:
            raise ContractError(f"{call.sender} posted its masked update of round "
                                f"{call.round} already")  # fmt: skip
        entry = {
            "digest": check_digest(payload["digest"], "payload.digest"),
            "root": check_digest(payload["root"], "payload.root"),
            "size": check_int(payload["size"], "payload.size", minimum=0),
        }
        state["masked"][call.sender] = entry
        return [self._event("masked", call, round=call.round, member=call.sender,
                            count=len(state["masked"]))]  # fmt: skip

    def _on_survivors(self, call: Any) -> list[dict[str, Any]]:
        payload = call.payload
        check_fields(payload, "survivors", ("names",), ())
        state = self._require_secagg(call)
        if self._shards:  # nobody pulls whole updates: the ledger's record decides
            self._check_sharded_survivors(call, state)
        elif call.sender != self.leader:
            raise ContractError(f"{call.sender} is not the leader of round {call.round}")
        if state["survivors"] is not None:
            raise ContractError(f"round {call.round}'s survivors are fixed already: "
                                f"{', '.join(state['survivors'])}")  # fmt: skip
        names = payload["names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ContractError("payload.names must be a list of participant names")
        if len(set(names)) != len(names) or not set(names) <= set(state["masked"]):
            raise ContractError("payload.names must name distinct participants that posted "
                                "their masked update")  # fmt: skip
        threshold = self._secagg_threshold()
        if len(names) < threshold:
            raise ContractError(
                f"a masked sum needs at least threshold={threshold} updates (so that it "
                f"reveals no single one), got {len(names)}"
            )
        state["survivors"] = sorted(names)
        state["survivors_at"] = call.timestamp
        return [self._event("survivors", call, round=call.round, names=sorted(names))]

    def _check_sharded_survivors(self, call: Any, state: dict[str, Any]) -> None:
        """In a sharded round any participant fixes the survivors: exactly those that
        posted their masked update, once all did or a quarter of the leader timeout after
        the seal passed."""
        names = call.payload["names"]
        if not isinstance(names, list) or sorted(map(str, names)) != sorted(state["masked"]):
            raise ContractError(
                "in a sharded round the survivors are exactly the participants "
                f"that posted their masked update: {sorted(state['masked'])}"
            )
        assert self._sealed_at is not None
        due = self._sealed_at + self._settings.leader_timeout_s / 4
        if len(state["masked"]) < len(self._participants) and call.timestamp < due:
            raise ContractError(f"round {call.round} waits for masked updates another "
                                f"{due - call.timestamp:.3f} s")  # fmt: skip

    def _on_unmask(self, call: Any) -> list[dict[str, Any]]:
        payload = call.payload
        check_fields(payload, "unmask", ("shares",), ())
        state = self._require_secagg(call)
        if state["survivors"] is None:
            raise ContractError(f"round {call.round} has no survivors yet: shares are revealed "
                                "only for the survivors the ledger fixed")  # fmt: skip
        if call.sender in state["unmasked"]:
            raise ContractError(f"{call.sender} revealed its shares of round {call.round} "
                                "already")  # fmt: skip
        shares = payload["shares"]
        if not isinstance(shares, Mapping) or set(shares) != set(self._participants):
            raise ContractError("payload.shares must hold one share for each participant "
                                "of the round")  # fmt: skip
        for name, share in shares.items():
            if (
                not isinstance(share, str)
                or len(share) != REVEALED_SHARE_HEX
                or (not all(c in "0123456789abcdef" for c in share))
            ):
                raise ContractError(f"payload.shares[{name!r}] must be {REVEALED_SHARE_HEX} "
                                    "lowercase hex characters")  # fmt: skip
        state["unmasked"][call.sender] = {n: shares[n] for n in sorted(shares)}
        return [self._event("unmasked", call, round=call.round, member=call.sender,
                            count=len(state["unmasked"]))]  # fmt: skip

    def _on_secagg_abort(self, call: Any) -> list[dict[str, Any]]:
        check_fields(call.payload, "secagg_abort", (), ())
        state = self._require_secagg(call)
        threshold = self._secagg_threshold()
        if state["survivors"] is None:
            raise ContractError(f"round {call.round} has no survivors yet: time out its "
                                "leader instead")  # fmt: skip
        # the leader (or a shard owner) cannot unmask: a dealer's shares open to nothing;
        # silent instead, it would be voted out
        if call.sender == self.leader or call.sender in {s["owner"] for s in self._shards}:
            return [self._abort_round(call)]
        if len(state["unmasked"]) >= threshold:
            raise ContractError(f"round {call.round} has {len(state['unmasked'])} sites' "
                                f"shares, threshold={threshold}: it can be unmasked")  # fmt: skip
        due = state["survivors_at"] + self._settings.leader_timeout_s / 2
        if call.timestamp < due:
            raise ContractError(f"round {call.round} waits for shares another "
                                f"{due - call.timestamp:.3f} s")  # fmt: skip
        return [self._abort_round(call)]

    def _secagg_merged(self, call: Any, excluded: list[dict[str, str]]) -> None:
        """A merged of a masked round: its shares are in, and it leaves out exactly those
        that are not survivors."""
        state = self._secagg
        if state is None:
            return
        threshold = self._secagg_threshold()
        if state["survivors"] is None or len(state["unmasked"]) < threshold:
            raise ContractError(
                f"round {call.round}'s masked sum cannot be unmasked yet (its "
                f"survivors and threshold={threshold} sites' shares first)"
            )
        left_out = {e["name"] for e in excluded}
        if left_out != set(self._participants) - set(state["survivors"]):
            raise ContractError("payload.excluded must name exactly the participants that "
                                "are not survivors")  # fmt: skip

    def _secagg_shard_excluded(self, call: Any, excluded: list[dict[str, str]]) -> None:
        """A masked round's shard leaves out exactly the participants that are not
        survivors (then it may be a majority: the survivors are at least `threshold`)."""
        state = self._secagg
        assert state is not None
        if state["survivors"] is None:
            raise ContractError(f"round {call.round}'s survivors are not fixed yet")
        if {e["name"] for e in excluded} != set(self._participants) - set(state["survivors"]):
            raise ContractError("a masked round's shard must leave out exactly the participants "
                                "that are not survivors")  # fmt: skip

    def _secagg_view(self) -> dict[str, Any] | None:
        return json_copy(self._secagg, "secagg")


def secure_aggregation_setting(value: Any, defaults: Mapping[str, float]) -> dict[str, Any] | None:
    """The contract setting normalised: None (off), or {threshold, bound}; `true` takes the
    defaults."""
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, Mapping):
        raise ContractError("secure_aggregation must be true, false or an object "
                            f"{{threshold, bound}}, got {type_name(value)}")  # fmt: skip
    unknown = sorted(set(value) - set(defaults))
    if unknown:
        raise ContractError(f"secure_aggregation has no option(s) {', '.join(unknown)}; "
                            f"options: threshold, bound")  # fmt: skip
    threshold = value.get("threshold", defaults["threshold"])
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 2:
        raise ContractError(f"secure_aggregation threshold must be an integer ≥ 2, got "
                            f"{threshold!r}")  # fmt: skip
    bound = value.get("bound", defaults["bound"])
    if (
        isinstance(bound, bool)
        or not isinstance(bound, int | float)
        or not (0 < float(bound) <= 2.0**20)
    ):
        raise ContractError(f"secure_aggregation bound must be a number in (0, 2^20], got "
                            f"{bound!r}")  # fmt: skip
    return {"bound": float(bound), "threshold": int(threshold)}
