"""Who may use the dashboard: anyone on this machine when it listens on a loopback address;
elsewhere only a client with the login token printed at start, or (with --mtls) a client
certificate of the swarm that the ledger vouches for."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie

COOKIE = "openswarm_ui"
#: The header a page's own writes carry: a cross-site form cannot send it, so another site
#: open in the same browser cannot save or change experiments through a local dashboard.
WRITE_HEADER = "X-OpenSwarm-UI"


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or name) is reachable only from this machine."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """How requests are let in: `open` (loopback only), `token` or `mtls`."""

    mode: str
    token: str | None = None

    @classmethod
    def for_listen(cls, host: str, *, mtls: bool = False) -> Access:
        if mtls:
            return cls("mtls")
        if is_loopback(host):
            return cls("open")
        return cls("token", secrets.token_urlsafe(24))

    def token_matches(self, headers: Mapping[str, str], query_token: str | None) -> bool:
        """Whether the request carries the login token (header, cookie or ?token=)."""
        if self.mode != "token" or not self.token:
            return False
        offered = []
        auth = headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            offered.append(auth[len("Bearer ") :].strip())
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("Cookie") or "")
        except Exception:  # a malformed cookie header is no credential
            cookie = SimpleCookie()
        if COOKIE in cookie:
            offered.append(cookie[COOKIE].value)
        if query_token:
            offered.append(query_token)
        return any(hmac.compare_digest(t.encode(), self.token.encode()) for t in offered)


def allowed_hosts(host: str, port: int) -> set[str]:
    """The Host headers a loopback dashboard answers (a page from another site that made the
    browser resolve its own name to 127.0.0.1 sends its own name, and is refused)."""
    names = {"localhost", "127.0.0.1", "[::1]", host}
    return {n for name in names for n in (name, f"{name}:{port}")}
