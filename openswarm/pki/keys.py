"""ECDSA P-256 keys: generation, PEM encoding and loading."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from openswarm.pki.errors import PkiError

CURVE = ec.SECP256R1()


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key."""
    return ec.generate_private_key(CURVE)


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM, as gRPC expects it."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(key_pem: bytes, what: str = "private key") -> ec.EllipticCurvePrivateKey:
    """Parse an unencrypted PEM ECDSA P-256 private key; PkiError naming `what` otherwise."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise PkiError(f"{what} is not a valid unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != CURVE.name:
        raise PkiError(f"{what} is not an ECDSA P-256 key")
    return key


def same_public_key(a: ec.EllipticCurvePublicKey, b: object) -> bool:
    """True if `b` is the same public key as `a`."""
    if not isinstance(b, ec.EllipticCurvePublicKey):
        return False
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return a.public_bytes(der, fmt) == b.public_bytes(der, fmt)
