"""A process's own identity (certificate, key, CA) and ECDSA signatures with it."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from openswarm.pki.ca import CA_CERT, IDENTITY_CERT, IDENTITY_KEY
from openswarm.pki.certs import CertIdentity, certificate_identity, load_certificate
from openswarm.pki.errors import PkiError
from openswarm.pki.files import read_bytes
from openswarm.pki.keys import load_private_key, same_public_key

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


class Identity:
    """An identity folder loaded into memory: identity.crt, identity.key and ca.crt."""

    __slots__ = ("_key", "ca_cert_pem", "cert_pem", "folder", "info", "key_pem")

    def __init__(self, folder: Path, cert_pem: bytes, key_pem: bytes, ca_cert_pem: bytes) -> None:
        self.folder = Path(folder)
        self.cert_pem = cert_pem
        self.key_pem = key_pem
        self.ca_cert_pem = ca_cert_pem
        self.info: CertIdentity = certificate_identity(cert_pem)
        load_certificate(ca_cert_pem, f"CA certificate in {self.folder}")
        self._key = load_private_key(key_pem, f"identity key in {self.folder}")
        if not same_public_key(self._key.public_key(), load_certificate(cert_pem).public_key()):
            raise PkiError(f"identity key in {self.folder} does not match its certificate")

    @classmethod
    def load(cls, folder: Path | str) -> Identity:
        """Load an identity folder; PkiError if a file is missing or the key doesn't match."""
        folder = Path(folder)
        if not folder.is_dir():
            raise PkiError(f"identity folder not found: {folder}")
        return cls(
            folder,
            cert_pem=read_bytes(folder / IDENTITY_CERT, "identity certificate"),
            key_pem=read_bytes(folder / IDENTITY_KEY, "identity key"),
            ca_cert_pem=read_bytes(folder / CA_CERT, "CA certificate"),
        )

    @property
    def name(self) -> str:
        """The identity's name (the last part of its SPIFFE id)."""
        return self.info.name

    @property
    def role(self) -> str:
        """peer, ledger, admin or operator."""
        return self.info.role

    @property
    def swarm(self) -> str:
        """The swarm the identity belongs to."""
        return self.info.swarm

    @property
    def spiffe_id(self) -> str:
        """`spiffe://SWARM/ROLE/NAME`."""
        return self.info.spiffe_id

    @property
    def fingerprint(self) -> str:
        """sha256 hex digest of the certificate's DER encoding."""
        return self.info.fingerprint

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 / SHA-256 signature of `data`, DER-encoded."""
        return self._key.sign(data, _ECDSA_SHA256)

    def __repr__(self) -> str:
        return f"Identity({self.spiffe_id!r}, folder={str(self.folder)!r})"


def verify_signature(cert_pem: bytes, data: bytes, signature: bytes) -> None:
    """Check an ECDSA/SHA-256 signature by the key of `cert_pem`; PkiError("bad signature")."""
    key = _public_key(bytes(cert_pem))
    try:
        key.verify(bytes(signature), data, _ECDSA_SHA256)
    except (InvalidSignature, ValueError, TypeError):
        raise PkiError("bad signature") from None


@lru_cache(maxsize=2048)
def _public_key(cert_pem: bytes) -> ec.EllipticCurvePublicKey:
    key = load_certificate(cert_pem).public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise PkiError("certificate key is not an ECDSA key")
    return key
