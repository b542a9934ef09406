"""One site's part in securely aggregated rounds (openswarm.ledger.secure_rounds).

A participant's update is its model minus the previous merged one, each coordinate clipped
to ±bound (the contract's), scaled by its weight's share of the round's and encoded in
fixed point in Z_2^64 (openswarm.secagg). To it the site adds a mask from its own fresh
self-mask seed and, for every other participant, a mask from the seed their fresh mask keys
agree on (X25519), added by one and subtracted by the other: in the sum over the round the
pair masks cancel. What the leader pulls is indistinguishable from uniform noise. Both
secrets are dealt, Shamir t-of-n, to every member as shares sealed to its share key (a
P-256 key it registered, signed like every transaction). Once the ledger fixes whose
masked updates the leader has (the survivors), each participant reveals its share of each
survivor's self-mask seed and of each other participant's mask key; from `threshold` of
them the leader removes every mask, checking each secret it rebuilds against what its
owner committed to on the ledger, and learns the sum alone.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from openswarm.codec.tensors import TensorSpec
from openswarm.secagg import (
    SecAggError,
    add_mask,
    clipped_count,
    combine_checked,
    commitment,
    decode,
    encode,
    new_mask_key,
    open_sealed,
    pair_seed,
    pair_sign,
    public_of,
    seal_for,
    split,
    wrapping_add,
)

log = logging.getLogger("openswarm.peer")

#: The name a masked update travels under (int64 bits of the Z_2^64 elements).
MASKED_TENSOR = "openswarm:secagg"
_X_BYTES = 2  # a share's x coordinate
_Y_BYTES = 66  # a share's value (p = 2^521 - 1)
#: What a participant reveals for a dealer whose shares it cannot open: a share at an x no
#: honest dealer uses, which the leader's checked reconstruction skips.
_UNUSABLE = (2**16 - 1).to_bytes(_X_BYTES, "big") + bytes(_Y_BYTES)


@dataclass(frozen=True)
class RoundSecrets:
    """A site's fresh secrets of one round."""

    mask_private: bytes
    mask_public: bytes
    self_seed: bytes


def masked_size(specs: list[TensorSpec]) -> int:
    """How many Z_2^64 elements a masked update of a model with `specs` has."""
    return sum(int(spec.size) for spec in specs)


def weight_shares(ready: Mapping[str, Any], names: list[str]) -> dict[str, float]:
    """Each participant's weight over the round's total (equal if all are zero)."""
    weights = {n: float(ready[n]["weight"]) for n in names}
    total = sum(weights.values())
    if total <= 0:
        return {n: 1.0 / len(names) for n in names}
    return {n: w / total for n, w in weights.items()}


class SecureAggregation:
    """A site's share key, its per-round secrets, masking and revealing; and as leader,
    unmasking a round's sum."""

    def __init__(self, name: str, contract: str) -> None:
        self.name = name
        self.contract = contract
        self._share_private = ec.generate_private_key(ec.SECP256R1())
        self.share_key = (
            self._share_private.public_key()
            .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
            .hex()
        )
        self._secrets: dict[int, RoundSecrets] = {}

    # --- contexts: every secret and seal is bound to the contract, round and sites ---
    def _context(self, round: int, *parts: str) -> bytes:
        return "\0".join([self.contract, str(round), *parts]).encode()

    def _pair_context(self, round: int, a: str, b: str) -> bytes:
        return self._context(round, "pair", *sorted((a, b)))

    # --- a participant ---
    def ready_part(self, state: Mapping[str, Any], round: int) -> dict[str, Any] | None:
        """What this site's ready adds in a masked round: fresh keys, a commitment and the
        sealed shares for every member with a share key; None if the round is not masked
        (or too few members can be dealt a share: then it waits out the round)."""
        setting = state["settings"].get("secure_aggregation")
        if setting is None or state.get("latest_merged") is None:
            return None
        members = state["members"]
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for name, member in sorted(members.items()):
            if not member["active"] or not member.get("share_key"):
                continue
            try:
                point = bytes.fromhex(member["share_key"])
                keys[name] = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            except ValueError as exc:  # a member registered a point off the curve
                log.warning("%s: %s's share key is unusable: %s", self.name, name, exc)
        threshold = int(setting["threshold"])
        if self.name not in keys or len(keys) < threshold:
            log.warning("%s: round %d: %d member(s) with share keys, threshold %d; not "
                        "dealing shares", self.name, round, len(keys), threshold)  # fmt: skip
            return None
        mask_private, mask_public = new_mask_key()
        own = RoundSecrets(mask_private, mask_public, secrets.token_bytes(32))
        xs = list(range(1, len(keys) + 1))
        key_shares = split(own.mask_private, xs, threshold)
        seed_shares = split(own.self_seed, xs, threshold)
        sealed: dict[str, str] = {}
        for (name, recipient), x in zip(keys.items(), xs, strict=True):
            plain = x.to_bytes(_X_BYTES, "big") + key_shares[x] + seed_shares[x]
            context = self._context(round, self.name, name)
            sealed[name] = seal_for(recipient, plain, context).hex()
        self._secrets = {r: s for r, s in self._secrets.items() if r >= round - 2}
        self._secrets[round] = own
        return {"pk": own.mask_public.hex(),
                "commit": commitment(own.self_seed, self._context(round, self.name)),
                "shares": sealed}  # fmt: skip

    def masked(self, state: Mapping[str, Any], round: int, own: Mapping[str, Any],
               previous: Mapping[str, Any], specs: list[TensorSpec]) -> np.ndarray:  # fmt: skip
        """This site's masked update of sealed round `round` (uint64): its model `own` minus
        `previous` (the latest merged), clipped, weighted, encoded and masked."""
        secret = self._secrets.get(round)
        current = state["current"]
        if (
            secret is None
            or secret.mask_public.hex() != current["ready"][self.name]["secagg"]["pk"]
        ):
            raise SecAggError(
                f"this site's secrets of round {round} are not the ones its ready "
                "on the ledger carries (a ready sent again?); not masking"
            )
        participants = list(current["participants"])
        ready = current["ready"]
        bound = float(state["settings"]["secure_aggregation"]["bound"])
        scale = weight_shares(ready, participants)[self.name]
        total = np.empty(masked_size(specs), dtype=np.uint64)
        start, clipped = 0, 0
        for spec in specs:
            delta = np.asarray(own[spec.name], dtype=np.float64).reshape(-1) - np.asarray(
                previous[spec.name], dtype=np.float64
            ).reshape(-1)
            clipped += clipped_count(delta, bound)
            total[start : start + delta.size] = encode(delta, bound, scale)
            start += delta.size
        if clipped:
            log.warning("%s: %d coordinate(s) of the update of round %d lie beyond ±%g; "
                        "clipped", self.name, clipped, round, bound)  # fmt: skip
        add_mask(total, secret.self_seed, self._context(round, "self", self.name), +1)
        for other in participants:
            if other == self.name:
                continue
            their = bytes.fromhex(ready[other]["secagg"]["pk"])
            ctx = self._pair_context(round, self.name, other)
            add_mask(total, pair_seed(secret.mask_private, their, ctx), ctx,
                     pair_sign(self.name, other))  # fmt: skip
        return total

    def reveal(self, state: Mapping[str, Any], round: int) -> dict[str, str]:
        """This site's shares for the round's unmasking: of each survivor's self-mask seed,
        of each other participant's mask key (never both of one site)."""
        current = state["current"]
        survivors = set(current["secagg"]["survivors"])
        revealed: dict[str, str] = {}
        for dealer in current["participants"]:
            sealed = current["ready"][dealer]["secagg"]["shares"].get(self.name, "")
            try:
                plain = open_sealed(self._share_private, bytes.fromhex(sealed),
                                    self._context(round, dealer, self.name))  # fmt: skip
                if len(plain) != _X_BYTES + 2 * _Y_BYTES:
                    raise SecAggError(f"{len(plain)} bytes")
            except (ValueError, SecAggError) as exc:
                log.warning("%s: the shares %s dealt for round %d do not open: %s",
                            self.name, dealer, round, exc)  # fmt: skip
                revealed[dealer] = _UNUSABLE.hex()
                continue
            x, key_share = plain[:_X_BYTES], plain[_X_BYTES : _X_BYTES + _Y_BYTES]
            seed_share = plain[_X_BYTES + _Y_BYTES :]
            revealed[dealer] = (x + (seed_share if dealer in survivors else key_share)).hex()
        return revealed

    # --- the leader ---
    def unmask(self, state: Mapping[str, Any], round: int, total: np.ndarray,
               offset: int = 0) -> np.ndarray:  # fmt: skip
        """The survivors' weighted sum of updates (float64) from the sum of their masked
        updates `total` (uint64, changed in place; elements from `offset` on, for a shard):
        each survivor's self-mask and each dropped participant's pair masks removed with
        the secrets their shares rebuild. SecAggError if one cannot be rebuilt from the
        shares revealed so far."""
        current = state["current"]
        secure = current["secagg"]
        participants = list(current["participants"])
        survivors = list(secure["survivors"])
        ready = current["ready"]
        threshold = int(state["settings"]["secure_aggregation"]["threshold"])
        for dealer in participants:
            entry = ready[dealer]["secagg"]
            shares = self._revealed(entry, secure["unmasked"], dealer)
            if dealer in survivors:
                expected = entry["commit"]
                ctx = self._context(round, dealer)
                seed = combine_checked(
                    shares, threshold, lambda s, c=ctx, e=expected: commitment(s, c) == e
                )
                add_mask(total, seed, self._context(round, "self", dealer), -1, offset)
                continue
            public = bytes.fromhex(entry["pk"])
            key = combine_checked(shares, threshold, lambda s, p=public: public_of(s) == p)
            for survivor in survivors:
                their = bytes.fromhex(ready[survivor]["secagg"]["pk"])
                ctx = self._pair_context(round, dealer, survivor)
                seed = pair_seed(key, their, ctx)
                add_mask(total, seed, ctx, -pair_sign(survivor, dealer), offset)
        return decode(total)

    @staticmethod
    def _revealed(entry: Mapping[str, Any], unmasked: Mapping[str, Mapping[str, str]],
                  dealer: str) -> dict[int, bytes]:  # fmt: skip
        """The shares of `dealer`'s secret revealed so far, each at the x its dealer gave
        the revealer (by the sorted recipients of its ledger entry), whatever x the
        revealer wrote."""
        order = sorted(entry["shares"])
        shares: dict[int, bytes] = {}
        for revealer, revealed in unmasked.items():
            raw = bytes.fromhex(revealed[dealer])
            if revealer not in order or raw == _UNUSABLE:  # (it could not open its share)
                continue
            shares[order.index(revealer) + 1] = raw[_X_BYTES:]
        return shares


def add_masked(total: np.ndarray | None, masked: np.ndarray) -> np.ndarray:
    """`total` plus one masked update in Z_2^64 (the first one is copied)."""
    if total is None:
        return masked.astype(np.uint64, copy=True)
    return wrapping_add(total, masked)


def rebuilt(previous: Mapping[str, Any], mean_delta: np.ndarray,
            specs: list[TensorSpec]) -> dict[str, np.ndarray]:  # fmt: skip
    """The merged model: `previous` plus the mean update, in each tensor's dtype (integer
    tensors rounded)."""
    merged: dict[str, np.ndarray] = {}
    start = 0
    for spec in specs:
        base = np.asarray(previous[spec.name])
        values = base.astype(np.float64).reshape(-1) + mean_delta[start : start + base.size]
        start += base.size
        if np.issubdtype(base.dtype, np.integer) or base.dtype == np.bool_:
            values = np.rint(values)
        merged[spec.name] = values.astype(base.dtype).reshape(base.shape)
    return merged
