"""Start and stop a dashboard on a ledger (what `openswarm ui` and `demo --ui` share)."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from openswarm.ledger.client import LedgerClient
from openswarm.pki.ca import IDENTITY_CERT, IDENTITY_KEY
from openswarm.ui.access import Access
from openswarm.ui.experiments import ExperimentStore
from openswarm.ui.server import Dashboard, DashboardServer, mtls_context, serve, stop, url_of


class UiError(ValueError):
    """The dashboard cannot start as asked; the message says why and what to change."""


def default_experiments_file() -> Path:
    """`$OPENSWARM_EXPERIMENTS`, else `$XDG_DATA_HOME/openswarm/experiments.json`."""
    if os.environ.get("OPENSWARM_EXPERIMENTS"):
        return Path(os.environ["OPENSWARM_EXPERIMENTS"])
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "openswarm" / "experiments.json"


def parse_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) → (host, port)."""
    host, sep, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    good = sep and host and port.isascii() and port.isdigit() and int(port) <= 65535
    if not good:
        raise UiError(f"--listen {listen!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return host, int(port)


@dataclass
class RunningDashboard:
    dashboard: Dashboard
    server: DashboardServer
    url: str

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        stop(self.dashboard, self.server)


def start_dashboard(
    client: LedgerClient,
    listen: str = "127.0.0.1:8080",
    *,
    mtls: bool = False,
    experiments: Path | None = None,
    poll_s: float = 0.5,
) -> RunningDashboard:
    """Serve the dashboard for `client`'s ledger on `listen` (port 0: any free one).

    On a loopback address anyone on this machine may look; elsewhere a login token (in the
    returned URL) or, with `mtls`, a client certificate of the swarm is required. Saving
    experiments needs an admin identity.
    """
    host, port = parse_listen(listen)
    access = Access.for_listen(host, mtls=mtls)
    identity = client.identity
    tls: ssl.SSLContext | None = None
    if mtls:
        try:
            tls = mtls_context(
                identity.folder / IDENTITY_CERT,
                identity.folder / IDENTITY_KEY,
                identity.ca_cert_pem,
            )
        except (OSError, ssl.SSLError) as exc:
            raise UiError(f"cannot serve TLS with {identity.folder}: {exc}") from exc
    store = ExperimentStore(experiments or default_experiments_file())
    dashboard = Dashboard(client, store, access, can_write=identity.role == "admin",
                          identity_name=identity.name, poll_s=poll_s)  # fmt: skip
    try:
        server, _ = serve(dashboard, host, port, tls=tls)
    except OSError as exc:
        dashboard.feed.close()
        raise UiError(f"cannot listen on {listen}: {exc.strerror or exc}; pick another "
                      "--listen address or port") from exc  # fmt: skip
    bound = int(server.server_address[1])
    return RunningDashboard(dashboard, server, url_of(host, bound, access))
