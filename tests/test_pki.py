"""The swarm's PKI: CLI, certificates, verification and signatures."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from openswarm.cli.main import app
from openswarm.pki import (
    ROLES,
    Identity,
    PkiError,
    certificate_identity,
    identity_host,
    init_ca,
    issue_identity,
    load_ca_cert,
    parse_spiffe_id,
    role_host,
    verify_certificate,
    verify_signature,
)

runner = CliRunner()


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    return init_ca(tmp_path / "ca", "demo")


def _cert(folder: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((folder / "identity.crt").read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- CLI -------------------------------------------------------------------------------------


def test_cli_init_creates_ca(tmp_path: Path) -> None:
    result = runner.invoke(app, ["pki", "init", str(tmp_path / "ca"), "--swarm", "demo"])
    assert result.exit_code == 0, result.output
    ca = tmp_path / "ca"
    assert json.loads((ca / "swarm.json").read_text()) == {"swarm": "demo"}
    assert _mode(ca / "ca.key") == 0o600
    cert = x509.load_pem_x509_certificate((ca / "ca.crt").read_bytes())
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "demo"


def test_cli_init_refuses_existing_ca_unless_forced(ca_dir: Path) -> None:
    before = (ca_dir / "ca.crt").read_bytes()
    result = runner.invoke(app, ["pki", "init", str(ca_dir), "--swarm", "demo"])
    assert result.exit_code != 0
    assert "already exists" in result.output and "Traceback" not in result.output
    assert (ca_dir / "ca.crt").read_bytes() == before
    result = runner.invoke(app, ["pki", "init", str(ca_dir), "--swarm", "demo", "--force"])
    assert result.exit_code == 0, result.output
    assert (ca_dir / "ca.crt").read_bytes() != before


def test_cli_issue_and_show(ca_dir: Path) -> None:
    result = runner.invoke(
        app, ["pki", "issue", str(ca_dir), "alice", "--role", "peer", "--host", "node1.example"]
    )
    assert result.exit_code == 0, result.output
    folder = ca_dir / "identities" / "alice"
    assert _mode(folder / "identity.key") == 0o600
    assert (folder / "ca.crt").read_bytes() == (ca_dir / "ca.crt").read_bytes()

    shown = runner.invoke(app, ["pki", "show", str(folder / "identity.crt")])
    assert shown.exit_code == 0, shown.output
    for text in ("demo", "peer", "alice", "spiffe://demo/peer/alice", "node1.example"):
        assert text in shown.output
    assert "EXPIRED" not in shown.output

    as_json = runner.invoke(app, ["pki", "show", "--json", str(folder)])
    info = json.loads(as_json.stdout)
    assert (info["swarm"], info["role"], info["name"]) == ("demo", "peer", "alice")
    assert info["spiffe_id"] == "spiffe://demo/peer/alice" and info["expired"] is False


def test_cli_issue_out_folder(ca_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    args = ["pki", "issue", str(ca_dir), "l1", "--role", "ledger", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    assert Identity.load(out).spiffe_id == "spiffe://demo/ledger/l1"


@pytest.mark.parametrize(
    ("name", "role", "message"),
    [
        ("bad/name", "peer", "invalid name"),
        ("_underscore", "peer", "invalid name"),
        ("x" * 65, "peer", "invalid name"),
        ("bob", "king", "invalid role"),
    ],
)
def test_cli_issue_rejects_bad_name_or_role(
    ca_dir: Path, name: str, role: str, message: str
) -> None:
    result = runner.invoke(app, ["pki", "issue", str(ca_dir), name, "--role", role])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_cli_show_bad_files(tmp_path: Path, ca_dir: Path) -> None:
    missing = runner.invoke(app, ["pki", "show", str(tmp_path / "nope.crt")])
    assert missing.exit_code != 0 and "nope.crt" in missing.output
    not_a_cert = runner.invoke(app, ["pki", "show", str(ca_dir / "ca.key")])
    assert not_a_cert.exit_code != 0 and "ca.key" in not_a_cert.output
    assert "not a valid" in not_a_cert.output
    assert "Traceback" not in missing.output + not_a_cert.output


def test_cli_show_marks_expired(ca_dir: Path) -> None:
    old = issue_identity(ca_dir, "old", "peer", days=1, not_before=_days_ago(10))
    result = runner.invoke(app, ["pki", "show", str(old)])
    assert result.exit_code == 0 and "EXPIRED" in result.output


def test_console_command(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "openswarm.cli.main", "pki", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    ca = tmp_path / "ca"
    assert cli("init", str(ca), "--swarm", "s1").returncode == 0
    assert cli("issue", str(ca), "n1", "--role", "admin").returncode == 0
    shown = cli("show", str(ca / "identities" / "n1" / "identity.crt"))
    assert shown.returncode == 0 and "spiffe://s1/admin/n1" in shown.stdout
    again = cli("init", str(ca), "--swarm", "s1")
    assert again.returncode != 0 and "already exists" in again.stderr
    bad = cli("issue", str(ca), "../n2", "--role", "peer")
    assert bad.returncode != 0 and "invalid name" in bad.stderr
    assert "Traceback" not in again.stderr + bad.stderr


# --- certificates ----------------------------------------------------------------------------


def test_identity_certificate_contents(ca_dir: Path) -> None:
    folder = issue_identity(ca_dir, "alice", "peer", hosts=["node1.example", "10.1.2.3", "::1"])
    cert = _cert(folder)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://demo/peer/alice"]
    assert san.get_values_for_type(x509.DNSName) == [
        "node1.example",
        role_host("peer"),
        identity_host("peer", "alice"),
    ]
    assert san.get_values_for_type(x509.IPAddress) == [ip_address("10.1.2.3"), ip_address("::1")]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "demo"
    assert cert.issuer == ca_cert.subject
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    now = datetime.now(UTC)
    assert now - timedelta(hours=1) < cert.not_valid_before_utc < now
    assert cert.not_valid_after_utc - now < timedelta(days=365, minutes=1)
    assert cert.not_valid_after_utc - now > timedelta(days=364)


def test_default_hosts_are_loopback(ca_dir: Path) -> None:
    san = _cert(issue_identity(ca_dir, "bob", "ledger")).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == [
        "localhost",
        role_host("ledger"),
        identity_host("ledger", "bob"),
    ]
    assert san.value.get_values_for_type(x509.IPAddress) == [ip_address("127.0.0.1")]


def test_issue_refuses_overwrite_and_bad_input(ca_dir: Path, tmp_path: Path) -> None:
    issue_identity(ca_dir, "alice", "peer")
    with pytest.raises(PkiError, match="already exists"):
        issue_identity(ca_dir, "alice", "peer")
    issue_identity(ca_dir, "alice", "admin", force=True)
    assert Identity.load(ca_dir / "identities" / "alice").role == "admin"
    with pytest.raises(PkiError, match="invalid host"):
        issue_identity(ca_dir, "carol", "peer", hosts=["bad host"])
    with pytest.raises(PkiError, match="days"):
        issue_identity(ca_dir, "carol", "peer", days=0)
    with pytest.raises(PkiError, match="CA certificate not found"):
        issue_identity(tmp_path / "no-ca", "carol", "peer")
    with pytest.raises(PkiError, match="invalid swarm name"):
        init_ca(tmp_path / "x", "bad swarm")


def test_load_ca_cert(ca_dir: Path) -> None:
    pem = (ca_dir / "ca.crt").read_bytes()
    assert load_ca_cert(ca_dir) == pem == load_ca_cert(str(ca_dir / "ca.crt"))
    folder = issue_identity(ca_dir, "alice", "peer")
    assert load_ca_cert(folder) == pem
    with pytest.raises(PkiError, match="not a CA certificate"):
        load_ca_cert(folder / "identity.crt")


def test_certificate_identity(ca_dir: Path) -> None:
    ident = Identity.load(issue_identity(ca_dir, "alice", "peer"))
    info = certificate_identity(ident.cert_pem)
    assert (info.swarm, info.role, info.name) == ("demo", "peer", "alice")
    assert info.spiffe_id == "spiffe://demo/peer/alice" == ident.spiffe_id
    assert len(info.fingerprint) == 64 and info.not_before < info.not_after
    with pytest.raises(PkiError, match="malformed SPIFFE id 'spiffe://demo'"):
        certificate_identity(ident.ca_cert_pem)
    with pytest.raises(PkiError, match="not a valid"):
        certificate_identity(b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://demo/peer",
        "spiffe://demo/king/alice",
        "spiffe://demo/peer/alice/extra",
        "spiffe://de mo/peer/alice",
        "https://demo/peer/alice",
        "spiffe://demo/peer/..",
    ],
)
def test_parse_spiffe_id_rejects_malformed(uri: str) -> None:
    with pytest.raises(PkiError):
        parse_spiffe_id(uri)


def test_roles() -> None:
    assert ROLES == ("peer", "ledger", "admin", "operator")


# --- verification ----------------------------------------------------------------------------


def test_verify_accepts_own_ca(ca_dir: Path) -> None:
    ident = Identity.load(issue_identity(ca_dir, "alice", "peer"))
    info = verify_certificate(ident.cert_pem, load_ca_cert(ca_dir))
    assert info == ident.info


def test_verify_refuses_other_ca(ca_dir: Path, tmp_path: Path) -> None:
    other = init_ca(tmp_path / "other", "demo")  # same swarm name, different CA key
    stranger = Identity.load(issue_identity(other, "eve", "peer"))
    with pytest.raises(PkiError, match="not issued by this swarm's CA"):
        verify_certificate(stranger.cert_pem, load_ca_cert(ca_dir))


def test_verify_refuses_expired_and_not_yet_valid(ca_dir: Path) -> None:
    ca = load_ca_cert(ca_dir)
    old = Identity.load(issue_identity(ca_dir, "old", "peer", days=1, not_before=_days_ago(10)))
    with pytest.raises(PkiError, match="expired on"):
        verify_certificate(old.cert_pem, ca)
    assert verify_certificate(old.cert_pem, ca, at=_days_ago(9, hours=12)).name == "old"
    fresh = Identity.load(issue_identity(ca_dir, "fresh", "peer"))
    with pytest.raises(PkiError, match="not yet valid"):
        verify_certificate(fresh.cert_pem, ca, at=_days_ago(1))


def test_verify_refuses_tampered_certificate(ca_dir: Path) -> None:
    ident = Identity.load(issue_identity(ca_dir, "alice", "peer"))
    der = x509.load_pem_x509_certificate(ident.cert_pem).public_bytes(serialization.Encoding.DER)
    forged = x509.load_der_x509_certificate(der.replace(b"alice", b"mallo"))
    forged_pem = forged.public_bytes(serialization.Encoding.PEM)
    assert certificate_identity(forged_pem).name == "mallo"
    with pytest.raises(PkiError, match="not issued by this swarm's CA"):
        verify_certificate(forged_pem, load_ca_cert(ca_dir))


def test_verify_refuses_other_swarm(ca_dir: Path) -> None:
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://elsewhere/peer/x")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    with pytest.raises(PkiError, match="belongs to swarm 'elsewhere'"):
        verify_certificate(cert.public_bytes(serialization.Encoding.PEM), load_ca_cert(ca_dir))


# --- identities and signatures ---------------------------------------------------------------


def test_sign_and_verify(ca_dir: Path, tmp_path: Path) -> None:
    alice = Identity.load(issue_identity(ca_dir, "alice", "peer"))
    bob = Identity.load(issue_identity(ca_dir, "bob", "peer"))
    data = b"tx: alice pays nothing"
    signature = alice.sign(data)
    verify_signature(alice.cert_pem, data, signature)
    with pytest.raises(PkiError, match="bad signature"):
        verify_signature(alice.cert_pem, data + b"!", signature)
    with pytest.raises(PkiError, match="bad signature"):
        verify_signature(bob.cert_pem, data, signature)
    with pytest.raises(PkiError, match="bad signature"):
        verify_signature(alice.cert_pem, data, b"\x00not-der")


def test_identity_load_errors(ca_dir: Path) -> None:
    alice = issue_identity(ca_dir, "alice", "peer")
    bob = issue_identity(ca_dir, "bob", "peer")
    loaded = Identity.load(str(alice))
    assert (loaded.name, loaded.role, loaded.swarm) == ("alice", "peer", "demo")
    assert loaded.folder == alice
    (alice / "identity.key").write_bytes((bob / "identity.key").read_bytes())
    with pytest.raises(PkiError, match="does not match"):
        Identity.load(alice)
    (bob / "ca.crt").unlink()
    with pytest.raises(PkiError, match=r"ca\.crt"):
        Identity.load(bob)
    with pytest.raises(PkiError, match="not found"):
        Identity.load(ca_dir / "identities" / "nobody")


def _days_ago(days: int, hours: int = 0) -> datetime:
    return datetime.now(UTC) - timedelta(days=days, hours=hours)
