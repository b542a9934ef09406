"""Shamir t-of-n secret sharing of 32-byte secrets over the prime field GF(2**521 - 1).

2**521 - 1 is a Mersenne prime, larger than any 32-byte secret, so a secret is the constant
term of a random polynomial of degree t - 1 and any t shares determine it while t - 1 reveal
nothing. Shares are the polynomial's values y = f(x), as fixed 66-byte big-endian strings.
Secrets are exactly 32 bytes (seeds and X25519 keys), which makes the round trip exact and lets
combine reject an interpolation that is not a 32-byte value.
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections.abc import Callable, Mapping, Sequence

from openswarm.secagg.errors import SecAggError

PRIME = 2**521 - 1
SECRET_BYTES = 32
SHARE_BYTES = 66  # ceil(521 / 8)
MAX_SUBSETS = 20_000


def _check_x(x: int) -> None:
    if isinstance(x, bool) or not isinstance(x, int) or not 0 < x < PRIME:
        raise SecAggError(f"share index {x!r} is out of range: use distinct integers 1..p-1")


def _check_threshold(threshold: int, available: int) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise SecAggError(f"threshold {threshold!r} is out of range: it must be at least 1")
    if threshold > available:
        raise SecAggError(
            f"threshold {threshold} needs {threshold} shares, only {available} given: "
            "collect more shares or lower the threshold"
        )


def _share_value(x: int, share: bytes) -> int:
    _check_x(x)
    if not isinstance(share, bytes) or len(share) != SHARE_BYTES:
        raise SecAggError(f"share at x={x} is not {SHARE_BYTES} bytes: it is malformed, drop it")
    y = int.from_bytes(share, "big")
    if y >= PRIME:
        raise SecAggError(f"share at x={x} is not a field element: it is malformed, drop it")
    return y


def split(secret: bytes, xs: Sequence[int], threshold: int) -> dict[int, bytes]:
    """Split a 32-byte secret into one share per x; any `threshold` of them recover it."""
    if not isinstance(secret, bytes) or len(secret) != SECRET_BYTES:
        raise SecAggError(f"only {SECRET_BYTES}-byte secrets are shared: pass a seed or key")
    for x in xs:
        _check_x(x)
    if len(set(xs)) != len(xs):
        raise SecAggError("share indexes repeat: give each shareholder its own x")
    _check_threshold(threshold, len(xs))
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = {}
    for x in xs:
        y = 0
        for coefficient in reversed(coefficients):
            y = (y * x + coefficient) % PRIME
        shares[x] = y.to_bytes(SHARE_BYTES, "big")
    return shares


def _interpolate_at_zero(points: Sequence[tuple[int, int]]) -> int:
    total = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                numerator = numerator * xj % PRIME
                denominator = denominator * (xj - xi) % PRIME
        total = (total + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    return total


def _to_secret(value: int) -> bytes:
    if value >= 2 ** (8 * SECRET_BYTES):
        raise SecAggError(
            "the shares do not interpolate to a 32-byte secret: a share is bogus or the "
            "threshold is wrong; use combine_checked against the secret's commitment"
        )
    return value.to_bytes(SECRET_BYTES, "big")


def combine(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """Recover the secret from the first `threshold` shares in increasing x order."""
    points = sorted((x, _share_value(x, share)) for x, share in shares.items())
    _check_threshold(threshold, len(points))
    return _to_secret(_interpolate_at_zero(points[:threshold]))


def combine_checked(
    shares: Mapping[int, bytes], threshold: int, check: Callable[[bytes], bool]
) -> bytes:
    """Recover the secret despite bogus shares: the first threshold-subset whose secret passes.

    Subsets are tried in lexicographic order of sorted x, at most MAX_SUBSETS of them. Shares
    that are not well-formed field elements are skipped as bogus.
    """
    for x in shares:
        _check_x(x)
    points = []
    for x, share in sorted(shares.items()):
        try:
            points.append((x, _share_value(x, share)))
        except SecAggError:
            continue
    malformed = len(shares) - len(points)
    _check_threshold(threshold, len(points))
    subsets = math.comb(len(points), threshold)
    for subset in itertools.islice(itertools.combinations(points, threshold), MAX_SUBSETS):
        value = _interpolate_at_zero(subset)
        if value < 2 ** (8 * SECRET_BYTES):
            secret = value.to_bytes(SECRET_BYTES, "big")
            if check(secret):
                return secret
    tried = min(subsets, MAX_SUBSETS)
    raise SecAggError(
        f"no subset of {threshold} of the {len(points)} well-formed shares "
        f"({malformed} malformed skipped) reconstructs a secret that matches its commitment "
        f"(tried {tried} of {subsets} subsets, cap {MAX_SUBSETS}): too many shares are bogus; "
        "exclude the participants who sent them"
    )
