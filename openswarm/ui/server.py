"""The dashboard's HTTP server: the pages, their JSON, and a server-sent event stream per
page that pushes fresh JSON whenever the ledger moves (standard library only)."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.ledger.verify import VerifyReport, verify_blocks
from openswarm.pki.certs import certificate_identity
from openswarm.ui.access import COOKIE, WRITE_HEADER, Access, allowed_hosts
from openswarm.ui.chain import read_blocks
from openswarm.ui.experiments import ExperimentError, ExperimentStore
from openswarm.ui.feed import LedgerFeed
from openswarm.ui.views import contract_view, experiments_view, run_record, swarm_view

log = logging.getLogger(__name__)

PAGES = ("swarm", "contract", "ledger", "experiments")
STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
MAX_BODY = 64 * 1024
KEEPALIVE_S = 15.0
VOUCH_CACHE_S = 5.0
#: A verification serves every asker for this long; others wait this long for one under way.
REVERIFY_S, VERIFY_WAIT_S = 10.0, 30.0
#: Connections served at once; more are closed at once (each holds a thread).
MAX_CONNECTIONS = 256
IDLE_TIMEOUT_S = 60.0
#: Live pages served at once (each holds a thread while it is open).
MAX_STREAMS = 64
#: Pushes to one page come at most this often, however fast the ledger moves.
MIN_PUSH_S = 0.25
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class Dashboard:
    """Everything the handlers need: the feed, the experiments, who may do what."""

    def __init__(
        self,
        client: LedgerClient,
        store: ExperimentStore,
        access: Access,
        *,
        can_write: bool,
        identity_name: str,
        poll_s: float = 0.5,
    ) -> None:
        self.client = client
        self.feed = LedgerFeed(client, poll_s=poll_s)
        self.store = store
        self.access = access
        self.can_write = can_write
        self.identity_name = identity_name
        self._verified: tuple[int, dict[str, Any]] | None = None
        self._verify_lock = threading.Lock()
        self._vouched: dict[str, tuple[float, str | None, str | None]] = {}
        self.streams = threading.BoundedSemaphore(MAX_STREAMS)

    # --- page data ---

    def page_data(self, page: str, query: dict[str, str]) -> dict[str, Any]:
        saved = self._saved() if page == "experiments" else []  # file I/O: not under the lock
        with self.feed.read() as feed:
            state, nodes, error, index = feed.state, feed.nodes, feed.error, feed.index
            if page == "swarm":
                return swarm_view(state, nodes, error)
            if page == "contract":
                name = query.get("name") or ""
                contract = (state.get("contracts") or {}).get(name)
                return {**contract_view(name, contract, index, nodes, state), "error": error}
            if page == "ledger":
                return {
                    "error": error,
                    "height": index.next_height - 1,
                    "blocks": index.search(**_filters(query)),
                    "verified": self._verified[1] if self._verified else None,
                }
            if page == "experiments":
                return {
                    **experiments_view(index, state, self._visible(saved, state.get("swarm"))),
                    "error": error,
                    "can_write": self.can_write,
                }
        raise RequestError(HTTPStatus.NOT_FOUND, f"no page {page!r}; pages: {', '.join(PAGES)}")

    def _saved(self) -> list[dict[str, Any]]:
        try:
            return self.store.list()
        except ExperimentError as exc:
            return [{"id": "", "title": "(unreadable)", "note": str(exc), "record": None}]

    def _visible(self, saved: list[dict[str, Any]], swarm: Any) -> list[dict[str, Any]]:
        """Experiments of every swarm for a viewer on this machine; a remote viewer (token
        or certificate) sees only this swarm's."""
        if self.access.mode == "open":
            return saved
        return [entry for entry in saved if entry.get("swarm") == swarm]

    def _own_experiment(self, experiment_id: str) -> None:
        """A remote writer may change only this swarm's experiments."""
        if self.access.mode == "open":
            return
        with self.feed.read() as feed:
            swarm = feed.state.get("swarm")
        if not any(e.get("id") == experiment_id for e in self._visible(self._saved(), swarm)):
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"no saved experiment with id {experiment_id!r}"
            )

    def block(self, height: int) -> dict[str, Any]:
        try:
            found = self.client.blocks(height, height)
        except LedgerError as exc:
            raise RequestError(HTTPStatus.BAD_GATEWAY, f"the ledger did not answer: {exc}") from exc
        if not found:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no block at height {height} yet")
        return found[0]

    def verify(self) -> dict[str, Any]:
        """Re-check the whole chain as `openswarm ledger verify` does: hashes, links,
        signatures and every outcome, replayed."""
        if not self._verify_lock.acquire(timeout=VERIFY_WAIT_S):
            raise RequestError(
                HTTPStatus.SERVICE_UNAVAILABLE, "the chain is being verified; ask again soon"
            )
        try:
            return self._verify()
        finally:
            self._verify_lock.release()

    def _verify(self) -> dict[str, Any]:
        last = self._verified
        if last is not None and time.time() - last[1]["checked_at"] < REVERIFY_S:
            return last[1]  # checked moments ago: one replay serves everyone
        blocks: list[dict[str, Any]] = []
        try:
            height = int(self.client.status()["height"])
            for chunk in read_blocks(self.client, 0, height):
                blocks.extend(chunk)
        except LedgerError as exc:
            raise RequestError(HTTPStatus.BAD_GATEWAY, f"the ledger did not answer: {exc}") from exc
        report = verify_blocks(blocks)
        if report.ok and len(blocks) != height + 1:
            problem = f"the ledger gave {len(blocks)} of its {height + 1} blocks"
            report = VerifyReport(False, len(blocks), len(blocks), problem)
        result = {
            "ok": report.ok,
            "blocks": report.blocks,
            "bad_height": report.bad_height,
            "problem": report.problem,
            "head_hash": report.head_hash,
            "checked_at": time.time(),
        }
        self._verified = (height, result)
        return result

    # --- experiments ---

    def save_experiment(self, body: dict[str, Any]) -> dict[str, Any]:
        contract = body.get("contract")
        with self.feed.read() as feed:
            run = feed.index.runs.get(contract) if isinstance(contract, str) else None
            if run is None:
                raise RequestError(
                    HTTPStatus.NOT_FOUND, f"no training run named {contract!r} on this ledger"
                )
            record = run_record(run, (feed.state.get("contracts") or {}).get(contract))
            swarm = feed.state.get("swarm")
        try:
            entry = self.store.save(
                record, title=body.get("title", ""), note=body.get("note", ""), swarm=swarm
            )
        except ExperimentError as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from exc
        self.feed.touch()
        return entry

    def annotate_experiment(self, experiment_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self._own_experiment(experiment_id)
        try:
            if body.get("delete") is True:
                self.store.delete(experiment_id)
                entry: dict[str, Any] = {"id": experiment_id, "deleted": True}
            else:
                entry = self.store.annotate(
                    experiment_id, title=body.get("title"), note=body.get("note")
                )
        except ExperimentError as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from exc
        self.feed.touch()
        return entry

    def check_writable(self, client_may_write: bool) -> None:
        """Saving needs an admin dashboard identity, and with mTLS an admin client too."""
        if not self.can_write:
            raise RequestError(
                HTTPStatus.FORBIDDEN,
                f"read-only: the dashboard's identity {self.identity_name!r} is not an admin; "
                "start `openswarm ui` with an admin identity to save experiments",
            )
        if not client_may_write:
            raise RequestError(
                HTTPStatus.FORBIDDEN, "read-only: your certificate is not an admin's"
            )

    def vouched_admin(self, cert_pem: bytes) -> bool:
        """Whether a client certificate is an admin's (RequestError unless the ledger vouches
        for it now: admitted with its role, issued by its own site's CA, not revoked)."""
        key = hashlib.sha256(cert_pem).hexdigest()
        cached = self._vouched.get(key)
        if cached is None or time.monotonic() - cached[0] > VOUCH_CACHE_S:
            try:
                reason = self.client.vouch(cert_pem)
            except LedgerError as exc:
                raise RequestError(
                    HTTPStatus.BAD_GATEWAY, f"the ledger did not answer: {exc}"
                ) from exc
            role = certificate_identity(cert_pem).role if reason is None else None
            cached = (time.monotonic(), reason, role)
            self._vouched[key] = cached
        if cached[1] is not None:
            raise RequestError(
                HTTPStatus.FORBIDDEN, f"the ledger does not vouch for your certificate: {cached[1]}"
            )
        return cached[2] == "admin"


def _filters(query: dict[str, str]) -> dict[str, Any]:
    def number(key: str) -> int | None:
        text = (query.get(key) or "").strip()
        if not text:
            return None
        if not _whole_number(text):
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"{key} must be a whole number, got {text!r}"
            )
        return int(text)

    return {
        "height": number("height"),
        "kind": query.get("type") or None,
        "sender": query.get("sender") or None,
        "round": number("round"),
        "contract": query.get("contract") or None,
    }


def _whole_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 18


def _shell(page: str, name: str) -> bytes:
    title = {
        "swarm": "Swarm",
        "contract": f"Contract {name}",
        "ledger": "Ledger",
        "experiments": "Experiments",
    }[page]
    safe = quote(name, safe="")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>openswarm · {_html(title)}</title>
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>
</head><body data-page="{page}" data-name="{safe}">
<nav><span class="brand">openswarm</span>
<a href="/" id="nav-swarm">Swarm</a><a href="/ledger" id="nav-ledger">Ledger</a>
<a href="/experiments" id="nav-experiments">Experiments</a>
<span id="live" class="live off">connecting…</span></nav>
<main id="main"><p>loading…</p></main>
</body></html>
""".encode()


def _html(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def handler_for(dashboard: Dashboard, host: str, port: int) -> type[BaseHTTPRequestHandler]:
    hosts = allowed_hosts(host, port)

    class Handler(BaseHTTPRequestHandler):
        server_version = "openswarm-ui"
        sys_version = ""
        protocol_version = "HTTP/1.1"
        may_write = True  # the client's own rights, beyond the dashboard identity's (mTLS)
        client_cert: bytes | None = None  # the client's certificate (mTLS)
        body_read = False
        timeout = IDLE_TIMEOUT_S  # an idle or stalled connection does not hold a thread for ever

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        # --- routing ---

        def do_GET(self) -> None:
            self._handle(self._get)

        def do_POST(self) -> None:
            self._handle(self._post)

        def _handle(self, route: Callable[[str, dict[str, str]], None]) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            self.body_read = False
            try:
                if self._admit(parts.path, query):
                    route(parts.path, query)
            except RequestError as exc:
                self._json({"error": str(exc)}, exc.status)
            except (BrokenPipeError, ConnectionResetError, TimeoutError, ssl.SSLError):
                self.close_connection = True
            except Exception:  # a bug: the client hears of it, the log gets the traceback
                log.exception("the dashboard failed to answer %s %s", self.command, parts.path)
                self._json(
                    {"error": "the dashboard failed; its log says why"},
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                )

        def _admit(self, path: str, query: dict[str, str]) -> bool:
            access = dashboard.access
            if access.mode == "open":
                if self.headers.get("Sec-Fetch-Site") == "cross-site":
                    # another web site's page, making the browser ask a local dashboard
                    raise RequestError(HTTPStatus.FORBIDDEN, "no answers to other web sites")
                if (self.headers.get("Host") or "") not in hosts:
                    raise RequestError(
                        HTTPStatus.FORBIDDEN, "this dashboard answers only to localhost"
                    )
                return True
            if access.mode == "mtls":  # the handshake demanded a certificate of the swarm's CA
                der = self.connection.getpeercert(binary_form=True)  # type: ignore[attr-defined]
                self.client_cert = ssl.DER_cert_to_PEM_cert(der).encode()
                self.may_write = dashboard.vouched_admin(self.client_cert)
                return True
            if access.token_matches(self.headers, None):
                return True
            if access.token_matches({}, query.get("token")) and self.command == "GET":
                # the login link: keep the token in a cookie and drop it from the address
                self.send_response(HTTPStatus.SEE_OTHER)
                rest = urlencode({k: v for k, v in query.items() if k != "token"})
                self.send_header("Location", (path or "/") + (f"?{rest}" if rest else ""))
                self.send_header("Connection", "close")
                self.close_connection = True
                self.send_header(
                    "Set-Cookie", f"{COOKIE}={access.token}; HttpOnly; SameSite=Strict; Path=/"
                )
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False
            raise RequestError(
                HTTPStatus.UNAUTHORIZED,
                "this dashboard needs its login token: open the link `openswarm ui` printed "
                "(…?token=…), or send 'Authorization: Bearer TOKEN'",
            )

        def _get(self, path: str, query: dict[str, str]) -> None:
            if path in ("/", "/swarm"):
                return self._send(_shell("swarm", ""), "text/html; charset=utf-8")
            if path.startswith("/contract/"):
                return self._send(
                    _shell("contract", unquote(path[len("/contract/") :])),
                    "text/html; charset=utf-8",
                )
            if path in ("/ledger", "/experiments"):
                return self._send(_shell(path[1:], ""), "text/html; charset=utf-8")
            if path.startswith("/static/") and path[len("/static/") :] in STATIC:
                name = path[len("/static/") :]
                body = resources.files("openswarm.ui").joinpath("static", name).read_bytes()
                return self._send(body, STATIC[name])
            if path == "/favicon.ico":
                self.send_response(HTTPStatus.NO_CONTENT)
                self.send_header("Content-Length", "0")
                return self.end_headers()
            if path == "/api/whoami":
                return self._json(
                    {
                        "identity": dashboard.identity_name,
                        "can_write": dashboard.can_write,
                        "access": dashboard.access.mode,
                    }
                )
            if path.startswith("/api/block/"):
                text = path[len("/api/block/") :]
                if not _whole_number(text):
                    raise RequestError(HTTPStatus.BAD_REQUEST, "a block's height is a whole number")
                return self._json(dashboard.block(int(text)))
            if path == "/api/verify":
                return self._json(dashboard.verify())
            if path.startswith("/api/"):
                page = path[len("/api/") :]
                if page.startswith("contract/"):
                    page, query = "contract", {**query, "name": unquote(page[len("contract/") :])}
                return self._json(dashboard.page_data(page, query))
            if path == "/events":
                return self._events(query)
            raise RequestError(HTTPStatus.NOT_FOUND, f"nothing at {path}")

        def _post(self, path: str, query: dict[str, str]) -> None:
            if self.headers.get(WRITE_HEADER) != "1":
                raise RequestError(
                    HTTPStatus.FORBIDDEN, f"writes must carry the {WRITE_HEADER}: 1 header"
                )
            body = self._body()
            if path == "/api/experiments":
                dashboard.check_writable(self.may_write)
                return self._json(dashboard.save_experiment(body), HTTPStatus.CREATED)
            if path.startswith("/api/experiments/"):
                dashboard.check_writable(self.may_write)
                return self._json(
                    dashboard.annotate_experiment(path[len("/api/experiments/") :], body)
                )
            raise RequestError(HTTPStatus.NOT_FOUND, f"nothing to post at {path}")

        def _body(self) -> dict[str, Any]:
            try:
                length = int(self.headers.get("Content-Length") or "0")
            except ValueError as exc:
                raise RequestError(
                    HTTPStatus.BAD_REQUEST, "Content-Length is not a number"
                ) from exc
            if length < 0 or length > MAX_BODY:
                raise RequestError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"a request body may hold at most {MAX_BODY} bytes",
                )
            raw = self.rfile.read(length)
            self.body_read = True
            try:
                body = json.loads(raw or b"{}")
            except ValueError as exc:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {exc}") from exc
            if not isinstance(body, dict):
                raise RequestError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
            return body

        # --- answers ---

        def _events(self, query: dict[str, str]) -> None:
            page = query.get("page") or ""
            dashboard.page_data(page, query)  # a bad page or filter fails here, as JSON
            if not dashboard.streams.acquire(blocking=False):
                raise RequestError(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    f"{MAX_STREAMS} pages are already open on this dashboard; close some",
                )
            try:
                self._stream(page, query)
            finally:
                dashboard.streams.release()

        def _stream(self, page: str, query: dict[str, str]) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            for key, value in SECURITY_HEADERS.items():
                self.send_header(key, value)
            self.end_headers()
            self.close_connection = True
            version, sent = -1, 0.0
            while not dashboard.feed.closed:
                if self.client_cert is not None:  # a certificate revoked since ends its pages
                    try:
                        dashboard.vouched_admin(self.client_cert)
                    except RequestError:
                        return
                newer = dashboard.feed.wait_newer(version, KEEPALIVE_S)
                if newer == version:
                    self.wfile.write(b": keepalive\n\n")
                else:
                    time.sleep(max(0.0, sent + MIN_PUSH_S - time.monotonic()))
                    version = dashboard.feed.version
                    data = json.dumps(dashboard.page_data(page, query), separators=(",", ":"))
                    self.wfile.write(f"event: update\nid: {version}\ndata: {data}\n\n".encode())
                    sent = time.monotonic()
                self.wfile.flush()

        def _json(self, data: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
            self._send(json.dumps(data, separators=(",", ":")).encode(), "application/json", status)

        def _send(self, body: bytes, content_type: str, status: HTTPStatus = HTTPStatus.OK) -> None:
            self.send_response(status)
            if status >= 400 or (self._has_body() and not self.body_read):
                # what a refused request carried is never read: it must not be taken for a
                # second request on the same connection
                self.send_header("Connection", "close")
                self.close_connection = True
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in SECURITY_HEADERS.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _has_body(self) -> bool:
            return (self.headers.get("Content-Length") or "0").strip() not in ("", "0") or bool(
                self.headers.get("Transfer-Encoding")
            )

    return Handler


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: Any) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connections.acquire(blocking=False):
            self.shutdown_request(request)  # full: a flood holds no more threads
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that breaks off (or fails the TLS handshake) is not the server's error:
        a line in the debug log, not a traceback on stderr that anyone could fill."""
        log.debug("connection from %s ended abnormally", client_address, exc_info=True)


def serve(
    dashboard: Dashboard, host: str, port: int, *, tls: ssl.SSLContext | None = None
) -> tuple[DashboardServer, threading.Thread]:
    """Start the feed and the server in a background thread; returns both (shut down with
    `stop`)."""
    dashboard.feed.start()
    server = DashboardServer((host, port), handler_for(dashboard, host, port))
    # port 0 binds a free port: the Host headers to answer name the bound one
    server.RequestHandlerClass = handler_for(dashboard, host, int(server.server_address[1]))
    if tls is not None:
        # the handshake happens in the request's thread: a slow client holds up no other
        server.socket = tls.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    thread = threading.Thread(target=server.serve_forever, name="ui-http", daemon=True)
    thread.start()
    return server, thread


def stop(dashboard: Dashboard, server: DashboardServer) -> None:
    dashboard.feed.close()
    server.shutdown()
    server.server_close()


def url_of(host: str, port: int, access: Access) -> str:
    scheme = "https" if access.mode == "mtls" else "http"
    shown = f"[{host}]" if ":" in host else host
    login = f"/?token={access.token}" if access.mode == "token" else "/"
    return f"{scheme}://{shown}:{port}{login}"


def mtls_context(cert: Path, key: Path, ca_pem: bytes) -> ssl.SSLContext:
    """TLS that demands a client certificate issued by the swarm's CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    context.load_verify_locations(cadata=ca_pem.decode("ascii"))
    context.verify_mode = ssl.CERT_REQUIRED
    return context
