"""Key agreement, commitments and sealed shares for secure aggregation.

X25519 mask keys give each pair of participants a shared mask seed; sha256 commitments bind a
self-mask seed before its shares are revealed; ECIES (P-256 ECDH, HKDF-SHA256, AES-256-GCM) seals
a share to a participant's certificate key so only that participant can read it.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from openswarm.secagg.errors import SecAggError

KEY_BYTES = 32
POINT_BYTES = 65  # X9.62 uncompressed P-256 point
NONCE_BYTES = 12
TAG_BYTES = 16

_PAIR_INFO = b"openswarm-secagg-pair\0"
_SHARE_INFO = b"openswarm-secagg-share\0"
_COMMIT_DOMAIN = b"openswarm-secagg-commit\0"


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(secret)


def _x25519_private(private: bytes) -> x25519.X25519PrivateKey:
    if not isinstance(private, bytes) or len(private) != KEY_BYTES:
        raise SecAggError(f"an X25519 private key is {KEY_BYTES} raw bytes: use new_mask_key")
    return x25519.X25519PrivateKey.from_private_bytes(private)


def new_mask_key() -> tuple[bytes, bytes]:
    """A fresh X25519 mask key pair as (private raw 32 bytes, public raw 32 bytes)."""
    key = x25519.X25519PrivateKey.generate()
    return key.private_bytes_raw(), key.public_key().public_bytes_raw()


def public_of(private: bytes) -> bytes:
    """The raw X25519 public key of a raw private key."""
    return _x25519_private(private).public_key().public_bytes_raw()


def pair_seed(own_private: bytes, their_public: bytes, context: bytes) -> bytes:
    """The 32-byte mask seed a pair shares: X25519, then HKDF-SHA256 bound to `context`."""
    own = _x25519_private(own_private)
    if not isinstance(their_public, bytes) or len(their_public) != KEY_BYTES:
        raise SecAggError(
            f"an X25519 public key is {KEY_BYTES} raw bytes: the peer's published key is malformed"
        )
    try:
        shared = own.exchange(x25519.X25519PublicKey.from_public_bytes(their_public))
    except ValueError as error:
        raise SecAggError(
            "the peer's X25519 public key is a low-order point (all-zero shared secret): "
            "refuse its mask key and exclude it from the round"
        ) from error
    return _hkdf(shared, _PAIR_INFO + context)


def commitment(secret: bytes, context: bytes) -> str:
    """Hex sha256 commitment to a secret, domain-separated and bound to `context`."""
    framed = _COMMIT_DOMAIN + len(context).to_bytes(4, "big") + context + secret
    return hashlib.sha256(framed).hexdigest()


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _share_key(shared: bytes, ephemeral: bytes, recipient: bytes, context: bytes) -> bytes:
    # Both points are fixed-length and follow the context, so the encoding is unambiguous.
    return _hkdf(shared, _SHARE_INFO + context + ephemeral + recipient)


def seal_for(recipient: ec.EllipticCurvePublicKey, plaintext: bytes, context: bytes) -> bytes:
    """Encrypt to a P-256 public key: ephemeral point (65) + nonce (12) + AES-GCM ciphertext."""
    if not isinstance(recipient, ec.EllipticCurvePublicKey) or not isinstance(
        recipient.curve, ec.SECP256R1
    ):
        raise SecAggError("shares are sealed to P-256 certificate keys: pass a SECP256R1 key")
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    ephemeral_point = _point(ephemeral.public_key())
    shared = ephemeral.exchange(ec.ECDH(), recipient)
    key = _share_key(shared, ephemeral_point, _point(recipient), context)
    nonce = os.urandom(NONCE_BYTES)
    return ephemeral_point + nonce + AESGCM(key).encrypt(nonce, plaintext, context)


def open_sealed(private: ec.EllipticCurvePrivateKey, sealed: bytes, context: bytes) -> bytes:
    """Decrypt what seal_for sealed to this key under the same context."""
    if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(
        private.curve, ec.SECP256R1
    ):
        raise SecAggError("sealed shares open with a P-256 private key: pass the site's key")
    if len(sealed) < POINT_BYTES + NONCE_BYTES + TAG_BYTES:
        raise SecAggError(f"sealed share of {len(sealed)} bytes is truncated: ask for it again")
    ephemeral_point = sealed[:POINT_BYTES]
    nonce = sealed[POINT_BYTES : POINT_BYTES + NONCE_BYTES]
    if ephemeral_point[0] != 0x04:
        raise SecAggError("sealed share does not start with an uncompressed point: it is malformed")
    try:
        ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ephemeral_point)
    except ValueError as error:
        raise SecAggError(
            "sealed share's ephemeral key is not a P-256 point: it is malformed or hostile"
        ) from error
    shared = private.exchange(ec.ECDH(), ephemeral)
    key = _share_key(shared, ephemeral_point, _point(private.public_key()), context)
    try:
        return AESGCM(key).decrypt(nonce, sealed[POINT_BYTES + NONCE_BYTES :], context)
    except InvalidTag as error:
        raise SecAggError(
            "sealed share failed authentication: it was sealed to another key, for another "
            "context, or tampered with; do not use it"
        ) from error
