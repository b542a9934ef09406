"""The secure-aggregation core: fixed point, masks, Shamir sharing, agreement and their sum."""

from __future__ import annotations

import itertools
import secrets
import time

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from openswarm.secagg import (
    FRACTION_BITS,
    MAX_BOUND,
    MAX_PARTIES,
    SecAggError,
    add_mask,
    clipped_count,
    combine,
    combine_checked,
    commitment,
    decode,
    encode,
    expand,
    max_error,
    new_mask_key,
    open_sealed,
    pair_seed,
    pair_sign,
    public_of,
    seal_for,
    split,
    wrapping_add,
    wrapping_sub,
)
from openswarm.secagg.shamir import PRIME, _interpolate_at_zero

CTX = b"contract-a/round-7"
# chi2.isf(1e-6, 255) from scipy: a uniform histogram of 256 bins exceeds it with p = 1e-6.
CHI2_CRITICAL_255_DOF_1E6 = 377.078


def _seed(tag: int) -> bytes:
    return bytes([tag]) * 32


# --- fixed point -------------------------------------------------------------------------------


def test_limits_keep_every_honest_sum_in_the_signed_range() -> None:
    assert MAX_PARTIES * MAX_BOUND * 2**FRACTION_BITS <= 2**62


def test_encode_decode_round_trip_within_half_a_step() -> None:
    values = np.random.default_rng(0).normal(scale=50.0, size=(40, 25)).astype(np.float32)
    encoded = encode(values, bound=1000.0)
    assert encoded.dtype == np.uint64 and encoded.shape == (1000,)
    assert np.max(np.abs(decode(encoded) - values.ravel().astype(np.float64))) <= 2.0**-33


def test_negative_values_round_trip() -> None:
    values = np.array([-1.5, -1e-6, -123.25, 0.0, 7.0])
    assert np.all(encode(values, 200.0)[:3] >= np.uint64(2**63))  # two's complement
    np.testing.assert_allclose(decode(encode(values, 200.0)), values, atol=2.0**-33, rtol=0)


def test_out_of_range_and_non_finite_values_are_clipped() -> None:
    values = np.array([5.0, -5.0, np.inf, -np.inf, np.nan, 1.5])
    assert decode(encode(values, bound=2.0)).tolist() == [2.0, -2.0, 2.0, -2.0, 0.0, 1.5]
    assert clipped_count(values, 2.0) == 5
    assert clipped_count(np.array([2.0, -2.0, 0.0]), 2.0) == 0


def test_scale_multiplies_after_clipping() -> None:
    values = np.array([1.0, -3.0, 10.0])
    assert decode(encode(values, bound=4.0, scale=0.25)).tolist() == [0.25, -0.75, 1.0]
    assert not np.any(encode(values, bound=4.0, scale=0.0))


def test_sum_of_encodings_decodes_to_the_float_sum_within_max_error() -> None:
    rng = np.random.default_rng(1)
    parties = [rng.uniform(-10, 10, size=5000) for _ in range(9)]
    weights = rng.dirichlet(np.ones(len(parties)))
    total = np.zeros(5000, dtype=np.uint64)
    for x, w in zip(parties, weights, strict=True):
        wrapping_add(total, encode(x, bound=10.0, scale=float(w)))
    expected = sum(w * x for x, w in zip(parties, weights, strict=True))
    error = np.max(np.abs(decode(total) - expected))
    assert error <= max_error(len(parties)) + 1e-12  # slack: float64 rounding of `expected`
    assert error > 0  # the bound is not vacuous: rounding really happened


def test_wrapping_arithmetic_wraps_silently() -> None:
    total = np.array([2**64 - 1, 0], dtype=np.uint64)
    with np.errstate(all="raise"):
        wrapping_add(total, np.array([2, 0], dtype=np.uint64))
        assert total.tolist() == [1, 0]
        wrapping_sub(total, np.array([3, 1], dtype=np.uint64))
    assert total.tolist() == [2**64 - 2, 2**64 - 1]
    with pytest.raises(SecAggError, match="shapes"):
        wrapping_add(total, np.zeros(3, dtype=np.uint64))
    with pytest.raises(SecAggError, match="uint64"):
        wrapping_add(total, np.zeros(2, dtype=np.int64))


@pytest.mark.parametrize("bound", [0.0, -1.0, MAX_BOUND * 2, float("nan"), float("inf")])
def test_bad_bound_is_refused(bound: float) -> None:
    with pytest.raises(SecAggError, match="bound"):
        encode(np.zeros(3), bound)


@pytest.mark.parametrize("scale", [-0.1, 1.01, float("nan")])
def test_bad_scale_is_refused(scale: float) -> None:
    with pytest.raises(SecAggError, match="weight"):
        encode(np.zeros(3), 1.0, scale)


def test_max_error_is_half_a_step_per_party() -> None:
    assert max_error(1) == 2.0**-33
    assert max_error(8) == 8 * 2.0**-33


# --- masks -------------------------------------------------------------------------------------


def test_expand_is_deterministic_and_separated_by_seed_and_label() -> None:
    mask = expand(_seed(1), 1000, b"self")
    assert mask.dtype == np.uint64 and mask.shape == (1000,)
    assert np.array_equal(mask, expand(_seed(1), 1000, b"self"))
    assert np.array_equal(mask[:10], expand(_seed(1), 10, b"self"))  # a prefix of one stream
    assert not np.any(mask == expand(_seed(1), 1000, b"pair"))
    assert not np.any(mask == expand(_seed(2), 1000, b"self"))


def test_expand_crosses_chunk_boundaries_consistently() -> None:
    count = (1 << 17) * 2 + 3  # two full 1 MiB chunks and a tail
    mask = expand(_seed(3), count, b"x")
    total = np.zeros(count, dtype=np.uint64)
    add_mask(total, _seed(3), b"x", 1)
    assert np.array_equal(total, mask)
    add_mask(total, _seed(3), b"x", -1)
    assert not np.any(total)


def test_expand_ten_million_values_is_fast() -> None:
    start = time.perf_counter()
    mask = expand(_seed(4), 10_000_000, b"speed")
    assert time.perf_counter() - start < 1.0
    assert mask.shape == (10_000_000,)


def test_add_mask_refuses_bad_sign_seed_and_array() -> None:
    total = np.zeros(4, dtype=np.uint64)
    with pytest.raises(SecAggError, match="sign"):
        add_mask(total, _seed(1), b"x", 2)
    with pytest.raises(SecAggError, match="32 bytes"):
        add_mask(total, b"short", b"x", 1)
    with pytest.raises(SecAggError, match="uint64"):
        add_mask(np.zeros(4, dtype=np.int64), _seed(1), b"x", 1)


def test_pair_sign_is_antisymmetric() -> None:
    assert pair_sign("alice", "bob") == 1
    assert pair_sign("bob", "alice") == -1
    with pytest.raises(SecAggError):
        pair_sign("alice", "alice")


def test_pair_masks_cancel_exactly_in_the_sum() -> None:
    names = ["site-a", "site-b", "site-c", "site-d"]
    keys = {name: new_mask_key() for name in names}
    rng = np.random.default_rng(2)
    encodings = {name: encode(rng.normal(size=3000), 5.0) for name in names}
    masked_sum = np.zeros(3000, dtype=np.uint64)
    for own in names:
        masked = encodings[own].copy()
        for other in names:
            if other != own:
                seed = pair_seed(keys[own][0], keys[other][1], CTX)
                add_mask(masked, seed, b"pair", pair_sign(own, other))
        assert not np.array_equal(masked, encodings[own])
        wrapping_add(masked_sum, masked)
    plain_sum = np.zeros(3000, dtype=np.uint64)
    for encoding in encodings.values():
        wrapping_add(plain_sum, encoding)
    assert np.array_equal(masked_sum, plain_sum)


def _chi_square_byte(values: np.ndarray, shift: int) -> float:
    counts = np.bincount(
        ((values >> np.uint64(shift)) & np.uint64(0xFF)).astype(np.int64), None, 256
    )
    expected = len(values) / 256
    return float(np.sum((counts - expected) ** 2 / expected))


@pytest.mark.parametrize("shift", [56, 0], ids=["top-byte", "low-byte"])
def test_masked_encoding_looks_uniform_but_plain_encoding_does_not(shift: int) -> None:
    count = 200_000
    plain = encode(np.full(count, 0.3), bound=1.0)
    masked = plain.copy()
    add_mask(masked, _seed(9), b"round-1/self", 1)
    assert _chi_square_byte(masked, shift) < CHI2_CRITICAL_255_DOF_1E6
    assert _chi_square_byte(plain, shift) > CHI2_CRITICAL_255_DOF_1E6
    rng = np.random.default_rng(3)  # realistic updates leave the top byte skewed too
    if shift == 56:
        skewed = encode(rng.normal(size=count), bound=4.0)
        assert _chi_square_byte(skewed, shift) > CHI2_CRITICAL_255_DOF_1E6


def test_chi_square_critical_value_matches_scipy() -> None:
    special = pytest.importorskip("scipy.special")
    assert special.chdtrc(255, CHI2_CRITICAL_255_DOF_1E6) == pytest.approx(1e-6, rel=1e-3)


# --- shamir ------------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [1, 2, 3])
def test_every_threshold_subset_recovers_the_secret(threshold: int) -> None:
    secret = secrets.token_bytes(32)
    shares = split(secret, [1, 2, 3, 4, 5], threshold)
    assert set(shares) == {1, 2, 3, 4, 5}
    assert all(len(share) == 66 for share in shares.values())
    for subset in itertools.combinations(shares, threshold):
        assert combine({x: shares[x] for x in subset}, threshold) == secret
    assert combine(shares, threshold) == secret  # extra shares: the first `threshold` are used


def test_fewer_than_threshold_shares_do_not_give_the_secret() -> None:
    secret = secrets.token_bytes(32)
    shares = split(secret, [1, 2, 3, 4, 5], 3)
    pair = {1: shares[1], 4: shares[4]}
    with pytest.raises(SecAggError, match="only 2 given"):
        combine(pair, 3)
    points = [(x, int.from_bytes(y, "big")) for x, y in pair.items()]
    assert _interpolate_at_zero(points) != int.from_bytes(secret, "big")
    with pytest.raises(SecAggError, match="32-byte secret"):
        combine(pair, 2)  # a degree-1 guess lands on a random field element


def test_split_refuses_bad_inputs() -> None:
    with pytest.raises(SecAggError, match="32-byte"):
        split(b"short", [1, 2], 1)
    with pytest.raises(SecAggError, match="repeat"):
        split(_seed(1), [1, 1, 2], 2)
    with pytest.raises(SecAggError, match="index"):
        split(_seed(1), [0, 1], 1)
    with pytest.raises(SecAggError, match="threshold"):
        split(_seed(1), [1, 2], 3)
    with pytest.raises(SecAggError, match="threshold"):
        split(_seed(1), [1, 2], 0)


def test_malformed_shares_are_refused() -> None:
    shares = split(_seed(5), [1, 2, 3], 2)
    with pytest.raises(SecAggError, match="66 bytes"):
        combine({1: shares[1], 2: shares[2][:-1]}, 2)
    with pytest.raises(SecAggError, match="field element"):
        combine({1: shares[1], 2: PRIME.to_bytes(66, "big")}, 2)
    with pytest.raises(SecAggError, match="index"):
        combine({0: shares[1], 2: shares[2]}, 2)
    with pytest.raises(SecAggError, match="index"):
        combine({PRIME: shares[1], 2: shares[2]}, 2)


def test_combine_checked_skips_a_bogus_share() -> None:
    secret = secrets.token_bytes(32)
    committed = commitment(secret, CTX)
    shares = split(secret, [1, 2, 3, 4], 2)
    shares[1] = secrets.token_bytes(65).rjust(66, b"\0")  # the first subset tried is now bogus
    with pytest.raises(SecAggError, match="32-byte secret"):
        combine(shares, 2)  # plain combine trusts the first two shares
    found = combine_checked(shares, 2, lambda s: commitment(s, CTX) == committed)
    assert found == secret


def test_combine_checked_gives_up_when_every_share_is_bogus() -> None:
    secret = secrets.token_bytes(32)
    committed = commitment(secret, CTX)
    bogus = {x: secrets.token_bytes(65).rjust(66, b"\0") for x in [1, 2, 3, 4]}
    bogus[5] = b"malformed"
    with pytest.raises(SecAggError, match="matches its commitment") as raised:
        combine_checked(bogus, 2, lambda s: commitment(s, CTX) == committed)
    assert "1 malformed" in str(raised.value)


def test_combine_checked_finds_a_secret_that_interpolates_from_a_later_subset() -> None:
    # Bogus shares that still interpolate to a 32-byte value are rejected by the check alone.
    secret, decoy = secrets.token_bytes(32), secrets.token_bytes(32)
    decoys = split(decoy, [1, 2, 3], 2)
    shares = {1: decoys[1], 2: decoys[2], **{x: y for x, y in split(secret, [3, 4], 2).items()}}
    committed = commitment(secret, CTX)
    assert combine(shares, 2) == decoy
    assert combine_checked(shares, 2, lambda s: commitment(s, CTX) == committed) == secret


# --- agreement ---------------------------------------------------------------------------------


def test_pair_seed_is_symmetric_and_separated_by_context() -> None:
    (a_private, a_public), (b_private, b_public) = new_mask_key(), new_mask_key()
    seed = pair_seed(a_private, b_public, CTX)
    assert len(seed) == 32
    assert seed == pair_seed(b_private, a_public, CTX)
    assert seed != pair_seed(a_private, b_public, CTX + b"!")
    assert seed != pair_seed(a_private, new_mask_key()[1], CTX)


def test_public_of_matches_the_published_key() -> None:
    private, public = new_mask_key()
    assert public_of(private) == public
    assert public_of(new_mask_key()[0]) != public
    with pytest.raises(SecAggError):
        public_of(b"short")


@pytest.mark.parametrize(
    "public",
    [
        bytes(32),
        b"\x01" + bytes(31),
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    ],
    ids=["zero", "one", "order-8"],
)
def test_low_order_mask_keys_are_refused(public: bytes) -> None:
    with pytest.raises(SecAggError, match="low-order"):
        pair_seed(new_mask_key()[0], public, CTX)


def test_malformed_mask_key_is_refused() -> None:
    with pytest.raises(SecAggError, match="32 raw bytes"):
        pair_seed(new_mask_key()[0], b"\x09" * 31, CTX)


def test_commitment_binds_secret_and_context() -> None:
    value = commitment(_seed(1), CTX)
    assert len(value) == 64 and value == commitment(_seed(1), CTX)
    assert value != commitment(_seed(2), CTX)
    assert value != commitment(_seed(1), CTX + b"x")


def test_sealed_share_opens_only_for_its_recipient_and_context() -> None:
    recipient = ec.generate_private_key(ec.SECP256R1())
    share = secrets.token_bytes(66)
    sealed = seal_for(recipient.public_key(), share, CTX)
    assert len(sealed) == 65 + 12 + len(share) + 16
    assert share not in sealed
    assert open_sealed(recipient, sealed, CTX) == share
    with pytest.raises(SecAggError, match="authentication"):
        open_sealed(ec.generate_private_key(ec.SECP256R1()), sealed, CTX)
    with pytest.raises(SecAggError, match="authentication"):
        open_sealed(recipient, sealed, CTX + b"x")
    for position in (70, len(sealed) - 1, 65 + 12):
        tampered = bytearray(sealed)
        tampered[position] ^= 1
        with pytest.raises(SecAggError, match="authentication"):
            open_sealed(recipient, bytes(tampered), CTX)


def test_malformed_sealed_shares_are_refused() -> None:
    recipient = ec.generate_private_key(ec.SECP256R1())
    sealed = seal_for(recipient.public_key(), b"share", CTX)
    with pytest.raises(SecAggError, match="truncated"):
        open_sealed(recipient, sealed[:80], CTX)
    off_curve = bytearray(sealed)
    off_curve[10] ^= 1  # the ephemeral point's x coordinate: no longer on P-256
    with pytest.raises(SecAggError, match="not a P-256 point"):
        open_sealed(recipient, bytes(off_curve), CTX)
    with pytest.raises(SecAggError, match="P-256"):
        seal_for(ec.generate_private_key(ec.SECP384R1()).public_key(), b"share", CTX)


# --- the whole masked sum ----------------------------------------------------------------------


def test_masked_sum_with_a_dropout_recovers_the_weighted_sum_of_survivors() -> None:
    rng = np.random.default_rng(4)
    names = [f"site{i}" for i in range(5)]
    xs = {name: i + 1 for i, name in enumerate(names)}  # each site's Shamir x
    threshold, size, bound = 3, 4000, 8.0
    updates = {name: rng.normal(size=(40, 100)).astype(np.float32) for name in names}
    weights = dict(zip(names, rng.dirichlet(np.ones(5)), strict=True))
    mask_keys = {name: new_mask_key() for name in names}
    self_seeds = {name: secrets.token_bytes(32) for name in names}
    committed = {name: commitment(self_seeds[name], CTX) for name in names}
    # Each site shares its self-mask seed and mask private key; share x goes to the site at x.
    seed_shares = {n: split(self_seeds[n], list(xs.values()), threshold) for n in names}
    key_shares = {n: split(mask_keys[n][0], list(xs.values()), threshold) for n in names}

    def masked_update(own: str) -> np.ndarray:
        masked = encode(updates[own], bound, float(weights[own]))
        add_mask(masked, self_seeds[own], CTX + b"/self", 1)
        for other in names:
            if other != own:
                seed = pair_seed(mask_keys[own][0], mask_keys[other][1], CTX)
                add_mask(masked, seed, CTX + b"/pair", pair_sign(own, other))
        return masked

    dropped, survivors = "site4", names[:4]
    total = np.zeros(size, dtype=np.uint64)
    for name in survivors:  # site4 drops before sending: its masked update is never summed
        wrapping_add(total, masked_update(name))

    holders = [xs["site1"], xs["site2"], xs["site3"]]  # three survivors answer the unmasking
    for name in survivors:
        revealed = {x: seed_shares[name][x] for x in holders}
        seed = combine_checked(
            revealed, threshold, lambda s, n=name: commitment(s, CTX) == committed[n]
        )
        add_mask(total, seed, CTX + b"/self", -1)
    revealed = {x: key_shares[dropped][x] for x in holders}
    dropped_private = combine_checked(
        revealed, threshold, lambda s: public_of(s) == mask_keys[dropped][1]
    )
    for name in survivors:  # cancel the pair masks survivors shared with the dropped site
        seed = pair_seed(dropped_private, mask_keys[name][1], CTX)
        add_mask(total, seed, CTX + b"/pair", -pair_sign(name, dropped))

    expected = sum(float(weights[n]) * updates[n].ravel().astype(np.float64) for n in survivors)
    error = np.max(np.abs(decode(total) - expected))
    assert error <= max_error(len(survivors)) + 1e-12  # slack: float64 rounding of `expected`

    with pytest.raises(SecAggError, match="only 2 given"):
        combine({x: key_shares[dropped][x] for x in holders[:2]}, threshold)


def test_a_mask_added_from_an_offset_is_that_slice_of_the_stream() -> None:
    # a shard owner unmasks elements [lo, hi) of the sum: the stream must be seekable
    seed, label = bytes(range(32)), b"shard"
    full = expand(seed, 3000, label)
    for lo, hi in ((0, 7), (3, 2000), (8, 9), (1001, 3000)):
        part = np.zeros(hi - lo, dtype=np.uint64)
        add_mask(part, seed, label, +1, offset=lo)
        assert np.array_equal(part, full[lo:hi]), (lo, hi)
        add_mask(part, seed, label, -1, offset=lo)
        assert not part.any()
