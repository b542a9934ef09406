"""Names in the swarm's PKI: roles, safe identifiers and SPIFFE ids."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from openswarm.pki.errors import PkiError

ROLES = ("peer", "ledger", "admin", "operator")
"""The roles an identity may hold (an operator runs its site's tasks: openswarm.operator)."""

SPIFFE_SCHEME = "spiffe"

RESERVED_HOST_SUFFIX = ".openswarm.invalid"
"""Host names the CA writes itself (a role's, an identity's); no one may request one."""

ROLE_HOST_SUFFIX = ".role" + RESERVED_HOST_SUFFIX
"""Every identity's certificate also names the DNS host ROLE + this suffix (the `.invalid`
top-level domain never resolves), so a client can demand a role of the server it reaches
(gRPC's `ssl_target_name_override`); no one may ask for such a host by hand."""


def identity_host(role: str, name: str) -> str:
    """The DNS name in the certificate of identity `name` alone, e.g.
    `site-a.peer.id.openswarm.invalid`, so a client can demand one identity of a server."""
    return f"{check_name(name).lower()}.{check_role(role)}.id{RESERVED_HOST_SUFFIX}"


def role_host(role: str) -> str:
    """The DNS name in every certificate of `role`, e.g. `ledger.role.openswarm.invalid`."""
    return check_role(role) + ROLE_HOST_SUFFIX


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def is_safe_name(value: str) -> bool:
    """True if `value` is a safe identifier: [A-Za-z0-9][A-Za-z0-9._-]*, at most 64 characters."""
    return _SAFE_NAME.fullmatch(value) is not None


def check_name(value: str, what: str = "name") -> str:
    """Return `value` if it is a safe identifier, else raise PkiError naming `what`."""
    if not isinstance(value, str) or not is_safe_name(value):
        raise PkiError(
            f"invalid {what} {value!r}: use letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, at most 64 characters"
        )
    return value


def check_role(role: str) -> str:
    """Return `role` if it is one of ROLES, else raise PkiError."""
    if role not in ROLES:
        raise PkiError(f"invalid role {role!r}: must be one of {', '.join(ROLES)}")
    return role


def spiffe_id(swarm: str, role: str | None = None, name: str | None = None) -> str:
    """Build `spiffe://SWARM/ROLE/NAME` (or `spiffe://SWARM` for the swarm itself)."""
    check_name(swarm, "swarm name")
    if role is None and name is None:
        return f"{SPIFFE_SCHEME}://{swarm}"
    if role is None or name is None:
        raise PkiError("a SPIFFE id needs both a role and a name")
    return f"{SPIFFE_SCHEME}://{swarm}/{check_role(role)}/{check_name(name)}"


def parse_spiffe_id(uri: str) -> tuple[str, str, str]:
    """Split `spiffe://SWARM/ROLE/NAME` into (swarm, role, name); PkiError if malformed."""
    parts = urlsplit(uri)
    segments = parts.path.split("/")
    if (
        parts.scheme != SPIFFE_SCHEME
        or parts.query
        or parts.fragment
        or parts.port is not None
        or "@" in parts.netloc
        or len(segments) != 3
        or segments[0] != ""
    ):
        raise PkiError(f"malformed SPIFFE id {uri!r}: expected spiffe://SWARM/ROLE/NAME")
    swarm, role, name = parts.netloc, segments[1], segments[2]
    check_name(swarm, "swarm name")
    check_role(role)
    check_name(name)
    return swarm, role, name


def parse_swarm_id(uri: str) -> str | None:
    """Return SWARM for a bare `spiffe://SWARM` URI, else None."""
    parts = urlsplit(uri)
    if parts.scheme != SPIFFE_SCHEME or parts.path not in ("", "/") or parts.query:
        return None
    return parts.netloc if is_safe_name(parts.netloc) else None
