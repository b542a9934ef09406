"""Reading certificates: who they name (CertIdentity) and whether a swarm's CA vouches for them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from openswarm.pki.errors import PkiError
from openswarm.pki.names import SPIFFE_SCHEME, parse_spiffe_id, parse_swarm_id


@dataclass(frozen=True)
class CertIdentity:
    """Who a certificate names: its SPIFFE id `spiffe://SWARM/ROLE/NAME` and validity."""

    swarm: str
    role: str
    name: str
    spiffe_id: str
    not_before: datetime
    not_after: datetime
    fingerprint: str
    """sha256 hex digest of the certificate's DER encoding."""


def load_certificate(data: bytes, what: str = "certificate") -> x509.Certificate:
    """Parse one PEM (or DER) certificate; PkiError naming `what` if it is not one."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise PkiError(f"{what} must be bytes, got {type(data).__name__}")
    try:
        return _parse_certificate(bytes(data))
    except ValueError:
        raise PkiError(f"{what} is not a valid PEM or DER X.509 certificate") from None


@lru_cache(maxsize=2048)
def _parse_certificate(data: bytes) -> x509.Certificate:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def fingerprint(cert: x509.Certificate) -> str:
    """sha256 hex digest of a certificate's DER encoding."""
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def uri_names(cert: x509.Certificate) -> list[str]:
    """The certificate's URI subject alternative names."""
    return _san_values(cert, x509.UniformResourceIdentifier)


def is_ca(cert: x509.Certificate) -> bool:
    """True if the certificate carries basicConstraints CA:true."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def ca_swarm(ca_cert: x509.Certificate) -> str | None:
    """The swarm a CA certificate serves: its `spiffe://SWARM` URI SAN, else its subject O."""
    for uri in uri_names(ca_cert):
        swarm = parse_swarm_id(uri)
        if swarm is not None:
            return swarm
    orgs = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(orgs[0].value) if orgs else None


def certificate_identity(cert_pem: bytes) -> CertIdentity:
    """Read the identity of a certificate from its `spiffe://SWARM/ROLE/NAME` URI SAN.

    Raises PkiError if the data is not a certificate or carries no valid SPIFFE id.
    Checks neither the issuer nor the validity period: see `verify_certificate`.
    """
    cert = load_certificate(cert_pem)
    return _identity_of(cert)


@lru_cache(maxsize=2048)
def _identity_of(cert: x509.Certificate) -> CertIdentity:
    spiffe = [u for u in uri_names(cert) if u.lower().startswith(f"{SPIFFE_SCHEME}://")]
    subject = cert.subject.rfc4514_string() or "(empty subject)"
    if not spiffe:
        raise PkiError(f"certificate {subject} has no spiffe://SWARM/ROLE/NAME identity")
    if len(spiffe) > 1:
        raise PkiError(f"certificate {subject} has more than one SPIFFE id: {', '.join(spiffe)}")
    try:
        swarm, role, name = parse_spiffe_id(spiffe[0])
    except PkiError as exc:
        raise PkiError(f"certificate {subject}: {exc}") from None
    return CertIdentity(
        swarm=swarm,
        role=role,
        name=name,
        spiffe_id=spiffe[0],
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=fingerprint(cert),
    )


def verify_certificate(
    cert_pem: bytes, ca_cert_pem: bytes, *, at: datetime | None = None
) -> CertIdentity:
    """Check that `cert_pem` is a valid identity of the swarm whose CA is `ca_cert_pem`.

    Verifies the CA's signature on the certificate, the validity period at `at` (default:
    now; naive datetimes are taken as UTC) for both certificates, and that the certificate's
    swarm is the CA's swarm. Returns the identity; raises PkiError naming the reason.
    Pure: the result depends only on the arguments (and the clock when `at` is None).
    """
    cert = load_certificate(cert_pem)
    ca = load_certificate(ca_cert_pem, "CA certificate")
    ident = _identity_of(cert)
    when = as_utc(at) if at is not None else datetime.now(UTC)
    if not is_ca(ca):
        raise PkiError(f"{ca.subject.rfc4514_string()} is not a CA certificate")
    if is_ca(cert):
        raise PkiError(f"certificate of {ident.spiffe_id} is a CA certificate, not an identity")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        raise PkiError(
            f"certificate of {ident.spiffe_id} is not issued by this swarm's CA "
            f"({ca.subject.rfc4514_string()})"
        ) from None
    if when < ident.not_before:
        raise PkiError(
            f"certificate of {ident.spiffe_id} is not yet valid "
            f"(valid from {ident.not_before.isoformat()})"
        )
    if when > ident.not_after:
        raise PkiError(f"certificate of {ident.spiffe_id} expired on {ident.not_after.isoformat()}")
    if when > ca.not_valid_after_utc:
        expiry = ca.not_valid_after_utc.isoformat()
        raise PkiError(f"the swarm's CA certificate expired on {expiry}")
    swarm = ca_swarm(ca)
    if swarm != ident.swarm:
        raise PkiError(
            f"certificate of {ident.spiffe_id} belongs to swarm {ident.swarm!r}, "
            f"but this CA serves swarm {swarm!r}"
        )
    return ident


def describe_certificate(cert_pem: bytes, *, at: datetime | None = None) -> dict[str, Any]:
    """A JSON-ready description of any certificate (identity or CA), for humans and tools."""
    cert = load_certificate(cert_pem)
    when = as_utc(at) if at is not None else datetime.now(UTC)
    ca = is_ca(cert)
    swarm = role = name = spiffe = None
    problem = None
    if ca:
        swarm = ca_swarm(cert)
        spiffe = f"{SPIFFE_SCHEME}://{swarm}" if swarm else None
    else:
        try:
            ident = _identity_of(cert)
            swarm, role, name, spiffe = ident.swarm, ident.role, ident.name, ident.spiffe_id
        except PkiError as exc:
            problem = str(exc)
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    status = "EXPIRED" if when > not_after else "NOT YET VALID" if when < not_before else "valid"
    return {
        "kind": "ca" if ca else "identity",
        "swarm": swarm,
        "role": role,
        "name": name,
        "spiffe_id": spiffe,
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:x}",
        "not_before": not_before.isoformat(),
        "not_after": not_after.isoformat(),
        "status": status,
        "expired": when > not_after,
        "dns_names": _san_values(cert, x509.DNSName),
        "ip_addresses": [str(ip) for ip in _san_values(cert, x509.IPAddress)],
        "uris": uri_names(cert),
        "fingerprint_sha256": fingerprint(cert),
        "problem": problem,
    }


def _san_values(cert: x509.Certificate, kind: type) -> list[Any]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(kind))


def as_utc(when: datetime) -> datetime:
    """`when` as an aware UTC datetime; naive datetimes are taken to be UTC."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
