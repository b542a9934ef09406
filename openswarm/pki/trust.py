"""Trust bundles: the CA certificates of every site of a swarm, in one PEM file.

A swarm whose sites each bring their own CA trusts all of them at the TLS layer: each
identity folder's ca.crt then holds the bundle (see `install_trust`). Which CA may vouch
for which identity is not decided here but by the ledger (an identity counts only from
its own site's CA); this module only splits, compares and checks against bundles.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from openswarm.pki.ca import CA_CERT
from openswarm.pki.certs import CertIdentity, fingerprint, is_ca, load_certificate
from openswarm.pki.certs import verify_certificate as verify_one
from openswarm.pki.errors import PkiError
from openswarm.pki.files import write_atomic

_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


def split_bundle(bundle_pem: bytes) -> list[bytes]:
    """The PEM certificates in `bundle_pem`, in order; PkiError if it holds none."""
    blocks = [m.group(0) + b"\n" for m in _PEM_BLOCK.finditer(bytes(bundle_pem))]
    if not blocks:
        raise PkiError("the trust bundle holds no PEM certificate")
    return blocks


def make_bundle(ca_certs: Iterable[bytes]) -> bytes:
    """One PEM bundle of CA certificates (each checked to be a CA), in the given order."""
    blocks = []
    for pem in ca_certs:
        for block in split_bundle(pem):
            if not is_ca(load_certificate(block, "CA certificate")):
                raise PkiError("a trust bundle may hold only CA certificates")
            blocks.append(block)
    return b"".join(blocks)


def bundle_fingerprints(bundle_pem: bytes) -> frozenset[str]:
    """The sha256 fingerprints of a bundle's certificates (order and layout ignored)."""
    return frozenset(fingerprint(load_certificate(b)) for b in split_bundle(bundle_pem))


def same_trust(first: bytes, second: bytes) -> bool:
    """True if both bundles hold the same certificates."""
    try:
        return bundle_fingerprints(first) == bundle_fingerprints(second)
    except PkiError:
        return False


def verify_in_bundle(
    cert_pem: bytes, bundle_pem: bytes, *, at: datetime | None = None
) -> CertIdentity:
    """`verify_certificate` against whichever CA of the bundle issued `cert_pem`."""
    reasons = []
    for ca in split_bundle(bundle_pem):
        try:
            return verify_one(cert_pem, ca, at=at)
        except PkiError as exc:
            reasons.append(str(exc))
    raise PkiError(reasons[0] if len(reasons) == 1 else "; ".join(reasons))


def install_trust(folder: Path, bundle_pem: bytes) -> Path:
    """Replace an identity folder's ca.crt with `bundle_pem` (the swarm's site CAs)."""
    target = Path(folder) / CA_CERT
    if not Path(folder).is_dir():
        raise PkiError(f"identity folder not found: {folder}")
    write_atomic(target, make_bundle([bundle_pem]))
    return target
