"""The swarm's PKI: a certificate authority, identities (`spiffe://SWARM/ROLE/NAME`), signatures.

`init_ca` creates the CA, `issue_identity` issues an identity folder (identity.crt,
identity.key, ca.crt), `Identity.load` reads one back, `verify_certificate` decides whether
a certificate belongs to the swarm, `Identity.sign` / `verify_signature` sign and check data.
A swarm whose sites bring their own CAs trusts a bundle of them (`trust.py`).
"""

from __future__ import annotations

from openswarm.pki.ca import (
    CA_CERT,
    CA_KEY,
    IDENTITY_CERT,
    IDENTITY_KEY,
    SWARM_FILE,
    init_ca,
    issue_identity,
    load_ca_cert,
)
from openswarm.pki.certs import (
    CertIdentity,
    certificate_identity,
    describe_certificate,
    verify_certificate,
)
from openswarm.pki.errors import PkiError
from openswarm.pki.identity import Identity, verify_signature
from openswarm.pki.names import (
    ROLES,
    check_name,
    check_role,
    identity_host,
    parse_spiffe_id,
    role_host,
    spiffe_id,
)
from openswarm.pki.trust import (
    install_trust,
    make_bundle,
    same_trust,
    split_bundle,
    verify_in_bundle,
)

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "IDENTITY_CERT",
    "IDENTITY_KEY",
    "ROLES",
    "SWARM_FILE",
    "CertIdentity",
    "Identity",
    "PkiError",
    "certificate_identity",
    "check_name",
    "check_role",
    "describe_certificate",
    "identity_host",
    "init_ca",
    "install_trust",
    "issue_identity",
    "load_ca_cert",
    "make_bundle",
    "parse_spiffe_id",
    "role_host",
    "same_trust",
    "spiffe_id",
    "split_bundle",
    "verify_certificate",
    "verify_in_bundle",
    "verify_signature",
]
