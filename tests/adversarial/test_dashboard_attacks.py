"""Attacks on `openswarm ui`, a real dashboard process on a real ledger: requests without
(or with a wrong) login token off loopback, DNS rebinding of a loopback dashboard, cross-site
and malformed writes, writes through a read-only dashboard, and TLS clients without a
certificate, with another CA's, with one the ledger never admitted or has revoked, or with a
peer's where an admin's is needed. Every refusal is checked for its status and its reason."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from dashboard import ui_process
from harness import running_ledger

from openswarm.ledger.local import LocalLedger
from openswarm.pki import init_ca, issue_identity
from openswarm.pki.ca import IDENTITY_CERT, IDENTITY_KEY

pytestmark = pytest.mark.slow

SWARM = "dash-attacks"
TIMEOUT_S = 10.0
WRITE = {"X-OpenSwarm-UI": "1", "Content-Type": "application/json"}
SAVE = json.dumps({"contract": "no-such-run", "title": "t", "note": ""}).encode()


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        assert self.headers.get_content_type() == "application/json", self.headers
        return json.loads(self.body)

    def error(self) -> str:
        """The JSON error message (fails unless the answer is one)."""
        data = self.json()
        assert isinstance(data, dict) and isinstance(data.get("error"), str), data
        return data["error"]


def _call(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    tls: ssl.SSLContext | None = None,
) -> Answer:
    """One request to 127.0.0.1:PORT on a fresh connection (redirects are not followed)."""
    conn = (
        http.client.HTTPSConnection("127.0.0.1", port, timeout=TIMEOUT_S, context=tls)
        if tls is not None
        else http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    )
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port, url
    return port


def _client_tls(ca: Path, identity: Path | None) -> ssl.SSLContext:
    """A client that trusts the swarm's CA `ca` and shows `identity`'s certificate, if any."""
    context = ssl.create_default_context(cafile=str(ca))
    if identity is not None:
        context.load_cert_chain(str(identity / IDENTITY_CERT), str(identity / IDENTITY_KEY))
    return context


def _refused_handshake(port: int, tls: ssl.SSLContext) -> BaseException:
    """The error a client gets when the server refuses its certificate (no HTTP answer)."""
    with pytest.raises((ssl.SSLError, ConnectionError)) as refused:
        _call(port, "/api/swarm", tls=tls)
    return refused.value


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLedger]:
    yield from running_ledger(
        tmp_path_factory.mktemp("dashboard-attacks") / "net",
        peers=["site-1", "site-gone"],
        swarm=SWARM,
    )


def _ledger_args(net: LocalLedger, identity: str, experiments: Path) -> list[str]:
    return [
        "--connect",
        ",".join(net.endpoints),
        "--identity",
        str(net.identity_dir(identity)),
        "--experiments",
        str(experiments),
    ]


def test_off_loopback_nothing_answers_without_the_login_token(
    net: LocalLedger, tmp_path: Path
) -> None:
    """An address beyond this machine: pages, assets, JSON and events all need the token."""
    args = _ledger_args(net, "admin", tmp_path / "experiments.json")
    with ui_process(*args, "--listen", "0.0.0.0:0") as (proc, url):
        assert "listens beyond this machine" in proc.next_line()
        token = parse_qs(urlsplit(url).query)["token"][0]
        assert len(token) >= 20, url
        port = _port(url)
        for path in ("/", "/api/swarm", "/events?page=swarm", "/static/app.js", "/api/whoami"):
            answer = _call(port, path)
            assert answer.status == 401, (path, answer)
            assert "login token" in answer.error(), path
        wrong = ("y" if token.startswith("x") else "x") + token[1:]  # one character off
        for headers in (
            {"Authorization": f"Bearer {wrong}"},
            {"Authorization": token},  # not a Bearer credential
            {"Cookie": f"openswarm_ui={wrong}"},
            {"Cookie": "openswarm_ui"},  # malformed
        ):
            answer = _call(port, "/api/swarm", headers=headers)
            assert answer.status == 401, (headers, answer)
            assert "login token" in answer.error()
        answer = _call(port, f"/api/swarm?token={wrong}")
        assert answer.status == 401 and "login token" in answer.error()
        # the token in a POST's address is no login: only a GET link trades it for a cookie
        answer = _call(
            port, f"/api/experiments?token={token}", method="POST", headers=WRITE, body=SAVE
        )
        assert answer.status == 401 and "login token" in answer.error()

        answer = _call(port, "/api/swarm", headers={"Authorization": f"Bearer {token}"})
        assert answer.status == 200, answer
        assert answer.json()["swarm"] == SWARM


def test_the_login_link_trades_its_token_for_a_strict_cookie(
    net: LocalLedger, tmp_path: Path
) -> None:
    """The token leaves the address bar (and history) at once, kept in an HttpOnly cookie."""
    args = _ledger_args(net, "admin", tmp_path / "experiments.json")
    with ui_process(*args, "--listen", "0.0.0.0:0") as (_, url):
        token = parse_qs(urlsplit(url).query)["token"][0]
        port = _port(url)
        answer = _call(port, f"/ledger?token={token}")
        assert answer.status == 303, answer
        location = answer.headers["Location"]
        assert location == "/ledger" and token not in location
        cookie = answer.headers["Set-Cookie"]
        assert cookie.startswith(f"openswarm_ui={token};"), cookie
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
        jar = {"Cookie": cookie.split(";", 1)[0]}
        page = _call(port, location, headers=jar)
        assert page.status == 200 and page.headers.get_content_type() == "text/html"
        answer = _call(port, "/api/swarm", headers=jar)
        assert answer.status == 200 and answer.json()["swarm"] == SWARM


def test_a_rebound_host_name_gets_nothing_from_a_loopback_dashboard(
    net: LocalLedger, tmp_path: Path
) -> None:
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 is refused."""
    args = _ledger_args(net, "admin", tmp_path / "experiments.json")
    with ui_process(*args, "--listen", "127.0.0.1:0") as (proc, url):
        assert "loopback only" in proc.next_line()
        port = _port(url)
        assert "token" not in url
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}"):
            for path in ("/", "/api/swarm", "/events?page=swarm"):
                answer = _call(port, path, headers={"Host": host})
                assert answer.status == 403, (host, path, answer)
                assert "only to localhost" in answer.error()
        answer = _call(
            port,
            "/api/experiments",
            method="POST",
            body=SAVE,
            headers={**WRITE, "Host": f"evil.example:{port}"},
        )
        assert answer.status == 403 and "only to localhost" in answer.error()
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
            answer = _call(port, "/api/swarm", headers={"Host": host})
            assert answer.status == 200, (host, answer)
            assert answer.json()["swarm"] == SWARM


def test_cross_site_and_malformed_writes_are_refused(net: LocalLedger, tmp_path: Path) -> None:
    """A cross-site form (no X-OpenSwarm-UI header), non-JSON, oversize and non-object bodies,
    and a save of a run the ledger never had, change nothing."""
    experiments = tmp_path / "experiments.json"
    args = _ledger_args(net, "admin", experiments)
    with ui_process(*args, "--listen", "127.0.0.1:0") as (_, url):
        port = _port(url)
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        for path in ("/api/experiments", "/api/experiments/abc"):
            answer = _call(port, path, method="POST", headers=form, body=b"note=pwned")
            assert answer.status == 403, (path, answer)
            assert "X-OpenSwarm-UI: 1" in answer.error()
        answer = _call(
            port,
            "/api/experiments",
            method="POST",
            body=SAVE,
            headers={**WRITE, "X-OpenSwarm-UI": "0"},
        )
        assert answer.status == 403 and "X-OpenSwarm-UI" in answer.error()

        answer = _call(port, "/api/experiments", method="POST", headers=WRITE, body=b"note=x")
        assert answer.status == 400 and "not JSON" in answer.error()
        answer = _call(port, "/api/experiments", method="POST", headers=WRITE, body=b"[1, 2]")
        assert answer.status == 400 and "JSON object" in answer.error()
        big = {**WRITE, "Content-Length": str(10 * 1024 * 1024)}
        answer = _call(port, "/api/experiments", method="POST", headers=big)
        assert answer.status == 413 and "at most 65536 bytes" in answer.error()
        answer = _call(
            port,
            "/api/experiments",
            method="POST",
            headers=WRITE,
            body=b'{"note": "' + b"x" * (64 * 1024) + b'"}',
        )
        assert answer.status == 413 and "at most" in answer.error()
        answer = _call(
            port,
            "/api/experiments",
            method="POST",
            body=SAVE,
            headers={**WRITE, "Content-Length": "lots"},
        )
        assert answer.status == 400 and "Content-Length" in answer.error()

        answer = _call(port, "/api/experiments", method="POST", headers=WRITE, body=SAVE)
        assert answer.status == 404, answer
        assert "no training run named 'no-such-run'" in answer.error()
        for change in ({"note": "x"}, {"delete": True}):
            answer = _call(
                port,
                "/api/experiments/nope",
                method="POST",
                headers=WRITE,
                body=json.dumps(change).encode(),
            )
            assert answer.status == 400 and "no saved experiment with id 'nope'" in answer.error()
        answer = _call(port, "/api/nowhere", method="POST", headers=WRITE, body=b"{}")
        assert answer.status == 404 and "/api/nowhere" in answer.error()
    assert not experiments.exists()


def test_bad_queries_get_clear_json_errors(net: LocalLedger, tmp_path: Path) -> None:
    """Malformed filters and addresses are named in a JSON error, not a crash or a page."""
    args = _ledger_args(net, "admin", tmp_path / "experiments.json")
    with ui_process(*args, "--listen", "127.0.0.1:0") as (_, url):
        port = _port(url)
        for path, status, named in (
            ("/api/ledger?round=abc", 400, "round"),
            ("/api/ledger?height=-1", 400, "height"),
            ("/events?page=ledger&round=abc", 400, "round"),
            ("/api/nope", 404, "nope"),
            ("/events?page=nope", 404, "nope"),
            ("/api/block/x", 400, "whole number"),
            ("/api/block/-1", 400, "whole number"),
            ("/api/block/999999999", 404, "999999999"),
            ("/nowhere", 404, "/nowhere"),
            ("/static/../server.py", 404, "server.py"),
        ):
            answer = _call(port, path)
            assert answer.status == status, (path, answer)
            assert named in answer.error(), path
        answer = _call(port, "/api/ledger?round=1")
        assert answer.status == 200 and answer.json()["blocks"] == []


def test_a_dashboard_of_a_peer_identity_is_read_only(net: LocalLedger, tmp_path: Path) -> None:
    """Whoever reaches a dashboard started with a peer's identity cannot save or change
    experiments through it."""
    experiments = tmp_path / "experiments.json"
    args = _ledger_args(net, "site-1", experiments)
    with ui_process(*args, "--listen", "127.0.0.1:0") as (proc, url):
        lines = [proc.next_line(), proc.next_line()]
        assert "read-only: site-1 is a peer" in lines[1], lines
        port = _port(url)
        assert _call(port, "/api/whoami").json() == {
            "identity": "site-1",
            "can_write": False,
            "access": "open",
        }
        assert _call(port, "/api/experiments").json()["can_write"] is False
        for path, body in (
            ("/api/experiments", SAVE),
            ("/api/experiments/abc", b'{"note": "x"}'),
            ("/api/experiments/abc", b'{"delete": true}'),
        ):
            answer = _call(port, path, method="POST", headers=WRITE, body=body)
            assert answer.status == 403, (path, answer)
            assert "read-only" in answer.error() and "'site-1'" in answer.error()
    assert not experiments.exists()


def test_mtls_lets_in_only_certificates_the_ledger_vouches_for(
    net: LocalLedger, tmp_path: Path
) -> None:
    """Over --mtls: no certificate, another CA's, one of the swarm's CA that the ledger never
    admitted, and a revoked one are refused; a peer's may look but not write."""
    with net.client("admin") as admin:
        outcome = admin.submit("revoke", payload={"name": "site-gone"})
        assert outcome.applied, outcome.reason
    ca = net.identity_dir("admin") / "ca.crt"
    foreign_ca = init_ca(tmp_path / "foreign-ca", SWARM)  # same swarm name, another key
    foreign = issue_identity(foreign_ca, "admin", "admin", out_dir=tmp_path / "foreign-admin")
    # issued by the swarm's own CA (a stolen CA key, or a CA mistake), but never admitted
    stranger = issue_identity(net.pki_dir, "mallory", "admin", out_dir=tmp_path / "mallory")
    args = _ledger_args(net, "admin", tmp_path / "experiments.json")
    with ui_process(*args, "--mtls", "--listen", "127.0.0.1:0") as (proc, url):
        assert "HTTPS" in proc.next_line()
        assert url.startswith("https://127.0.0.1:") and "token" not in url
        port = _port(url)

        _refused_handshake(port, _client_tls(ca, None))
        _refused_handshake(port, _client_tls(ca, foreign))
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
        try:
            with pytest.raises((http.client.HTTPException, ConnectionError)):
                plain.request("GET", "/api/swarm")
                plain.getresponse().read()
        finally:
            plain.close()

        answer = _call(port, "/api/swarm", tls=_client_tls(ca, stranger))
        assert answer.status == 403, answer
        assert "does not vouch" in answer.error() and "mallory" in answer.error()
        answer = _call(port, "/api/swarm", tls=_client_tls(ca, net.identity_dir("site-gone")))
        assert answer.status == 403, answer
        assert "does not vouch" in answer.error() and "revoked" in answer.error()

        admin_tls = _client_tls(ca, net.identity_dir("admin"))
        answer = _call(port, "/api/swarm", tls=admin_tls)
        assert answer.status == 200 and answer.json()["swarm"] == SWARM
        answer = _call(
            port, "/api/experiments", method="POST", headers=WRITE, body=SAVE, tls=admin_tls
        )
        assert answer.status == 404 and "no-such-run" in answer.error()  # past every gate

        peer_tls = _client_tls(ca, net.identity_dir("site-1"))
        for path in ("/", "/api/swarm", "/static/app.js"):
            assert _call(port, path, tls=peer_tls).status == 200, path
        for path, body in (("/api/experiments", SAVE), ("/api/experiments/abc", b'{"x": 1}')):
            answer = _call(port, path, method="POST", headers=WRITE, body=body, tls=peer_tls)
            assert answer.status == 403, (path, answer)
            assert "not an admin's" in answer.error()


def _raw_exchange(port: int, request: bytes, quiet_s: float = 3.0) -> bytes:
    """Send raw bytes on one connection; everything that comes back until it closes (or is
    quiet for `quiet_s`)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=quiet_s) as sock:
        sock.sendall(request)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


@pytest.mark.parametrize("outer_host", ["same-host", "evil.example"])
def test_a_refused_request_cannot_smuggle_a_write_in_its_body(
    net: LocalLedger, tmp_path: Path, outer_host: str
) -> None:
    """Client-side desync: a cross-site form (text/plain, no X-OpenSwarm-UI header) or a
    rebound page (foreign Host) posts a body that is itself a complete write request; the
    outer request is refused, and the body must not be answered as a request of its own."""
    experiments = tmp_path / "experiments.json"
    victim = {"id": "victim", "title": "keep me", "note": "", "swarm": SWARM, "saved_at": 0.0}
    experiments.write_text(json.dumps({"experiments": [{**victim, "record": None}]}))
    args = _ledger_args(net, "admin", experiments)
    with ui_process(*args, "--listen", "127.0.0.1:0") as (_, url):
        port = _port(url)
        host = f"127.0.0.1:{port}" if outer_host == "same-host" else outer_host
        inner = b'{"delete": true}'
        smuggled = (
            b"POST /api/experiments/victim HTTP/1.1\r\n"
            + f"Host: 127.0.0.1:{port}\r\nX-OpenSwarm-UI: 1\r\n".encode()
            + f"Content-Length: {len(inner)}\r\nConnection: close\r\n\r\n".encode()
            + inner
        )
        outer = (
            b"POST /api/experiments HTTP/1.1\r\n"
            + f"Host: {host}\r\nContent-Type: text/plain\r\n".encode()
            + f"Content-Length: {len(smuggled)}\r\n\r\n".encode()
            + smuggled
        )
        answers = _raw_exchange(port, outer)
        assert answers.startswith(b"HTTP/1.1 403 "), answers[:200]
        assert answers.count(b"HTTP/1.1 ") == 1, answers.decode(errors="replace")
    saved = json.loads(experiments.read_text())["experiments"]
    assert [e["id"] for e in saved] == ["victim"], saved


def test_a_page_of_another_web_site_gets_nothing_from_a_loopback_dashboard(
    net: LocalLedger, tmp_path: Path
) -> None:
    """A page of another site, open in the user's browser, makes it fetch (an <img>, a
    script tag, fetch with no-cors) from the local dashboard: the browser says
    `Sec-Fetch-Site: cross-site`, and nothing is answered, not even the costly verify."""
    args = _ledger_args(net, "admin", tmp_path / "experiments.json")
    with ui_process(*args, "--listen", "127.0.0.1:0") as (_, url):
        port = _port(url)
        host = {"Host": f"127.0.0.1:{port}"}
        for path in ("/api/verify", "/api/swarm", "/", "/events?page=swarm"):
            answer = _call(port, path, headers={**host, "Sec-Fetch-Site": "cross-site"})
            assert answer.status == 403, (path, answer.status)
            assert "other web sites" in answer.error()
        for own in ("same-origin", "none"):  # the dashboard's own pages, a typed address
            assert _call(port, "/api/swarm", headers={**host, "Sec-Fetch-Site": own}).status == 200
        # digits that are not ASCII digits are no number either
        answer = _call(port, "/api/ledger?round=%C2%B2", headers=host)
        assert answer.status == 400 and "round" in answer.error()


def test_a_remote_viewer_sees_and_changes_only_this_swarms_experiments(
    net: LocalLedger, tmp_path: Path
) -> None:
    """The experiments file may hold runs of other swarms (a local user compares them); a
    viewer from elsewhere (with the login token) sees only this swarm's, and cannot annotate
    or delete another swarm's."""
    experiments = tmp_path / "experiments.json"
    ours = {"id": "ours", "title": "here", "note": "", "swarm": SWARM, "saved_at": 0.0}
    theirs = {"id": "theirs", "title": "elsewhere", "note": "private", "swarm": "other-swarm",
              "saved_at": 0.0}  # fmt: skip
    experiments.write_text(
        json.dumps({"experiments": [{**ours, "record": None}, {**theirs, "record": None}]})
    )
    args = _ledger_args(net, "admin", experiments)
    with ui_process(*args, "--listen", "0.0.0.0:0") as (_, url):
        port = _port(url)
        token = parse_qs(urlsplit(url).query)["token"][0]
        auth = {"Authorization": f"Bearer {token}"}
        page = _call(port, "/api/experiments", headers=auth).json()
        assert [e["id"] for e in page["saved"]] == ["ours"]
        for body in ({"note": "changed"}, {"delete": True}):
            answer = _call(port, "/api/experiments/theirs", method="POST",
                           headers={**auth, **WRITE}, body=json.dumps(body).encode())  # fmt: skip
            assert answer.status == 400 and "theirs" in answer.error()
        answer = _call(port, "/api/experiments/ours", method="POST", headers={**auth, **WRITE},
                       body=json.dumps({"note": "seen"}).encode())  # fmt: skip
        assert answer.status == 200
    saved = {e["id"]: e for e in json.loads(experiments.read_text())["experiments"]}
    assert saved["theirs"]["note"] == "private" and saved["ours"]["note"] == "seen"
    # on this machine every swarm's experiments are shown
    with ui_process(*args, "--listen", "127.0.0.1:0") as (_, url):
        port = _port(url)
        page = _call(port, "/api/experiments", headers={"Host": f"127.0.0.1:{port}"}).json()
        assert sorted(e["id"] for e in page["saved"]) == ["ours", "theirs"]
