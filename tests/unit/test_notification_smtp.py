"""The SMTP connection as configured: STARTTLS or implicit TLS with the server's certificate verified
(a private CA via SMTP_CA_BUNDLE), SMTP AUTH, and no password over an unencrypted connection.

A real aiosmtpd server runs in a subprocess on loopback with a certificate made here (no broker)."""
from __future__ import annotations

import datetime as dt
import ipaddress
import smtplib
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from email.message import EmailMessage

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.notification.mailer import SmtpSettings, SmtpTransport
from tools.localstack import free_port, wait_for_port

SERVER = textwrap.dedent("""
    import ssl, sys, time
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, SMTP

    port, cert, key, mode, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    class Keep:
        async def handle_DATA(self, server, session, envelope):
            with open(out, "ab") as handle:
                handle.write(envelope.content + b"\\n--END--\\n")
            return "250 OK"

    def check(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"swms" and auth_data.password == b"relay-secret"
        return AuthResult(success=ok, handled=False)   # handled=False: the server answers 535 itself

    kwargs = dict(hostname="127.0.0.1", port=int(port), authenticator=check, auth_require_tls=True)
    if mode == "implicit":   # the whole connection is TLS; aiosmtpd only tracks TLS begun by STARTTLS
        kwargs.update(ssl_context=context, auth_require_tls=False)
    else:
        kwargs.update(tls_context=context, require_starttls=True)
    controller = Controller(Keep(), **kwargs)
    controller.start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)
""")


def certificate(tmp_path, name: str = "relay"):
    """A CA and a server certificate for 127.0.0.1 signed by it; returns (ca.pem, cert.pem, key.pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp_path / f"{name}-ca.pem", tmp_path / f"{name}-cert.pem", tmp_path / f"{name}-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture(params=["starttls", "implicit"])
def relay(request, tmp_path):
    ca, cert, key = certificate(tmp_path)
    port = free_port()
    out = tmp_path / "received.txt"
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(cert), str(key), request.param, str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_for_port(port)
    yield {"port": port, "ca": str(ca), "mode": request.param, "out": out, "tmp_path": tmp_path}
    process.terminate()
    process.wait(10)


def settings_for(relay, **overrides) -> SmtpSettings:
    values = dict(host="127.0.0.1", port=relay["port"], sender="SWMS <no-reply@swms.example.gov.cn>", user="swms",
                  password="relay-secret", starttls=relay["mode"] == "starttls",
                  implicit_tls=relay["mode"] == "implicit", ca_file=relay["ca"], timeout=10)
    values.update(overrides)
    return SmtpSettings(**values)


def mail() -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "no-reply@swms.example.gov.cn", "li@example.cn", "测试"
    message.set_content("正文", cte="base64")
    return message


def test_encrypted_and_authenticated_with_the_private_ca(relay):
    with SmtpTransport(settings_for(relay)).connect() as smtp:
        smtp.send_message(mail())
    assert b"li@example.cn" in relay["out"].read_bytes()


def test_a_server_certificate_from_an_unknown_ca_is_refused(relay):
    other_ca, _, _ = certificate(relay["tmp_path"], "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        SmtpTransport(settings_for(relay, ca_file=str(other_ca))).connect()
    assert not relay["out"].exists()


def test_a_wrong_password_is_refused(relay):
    with pytest.raises(smtplib.SMTPAuthenticationError):
        SmtpTransport(settings_for(relay, password="wrong")).connect()


def test_no_password_over_an_unencrypted_connection_to_a_remote_relay(tmp_path):
    """127.0.0.2 is loopback to the kernel but not one of the names the rule trusts, so it stands in
    for a relay across the network; the login is refused before any password is sent."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tools.mailsink", "--host", "127.0.0.2", "--port", str(port),
                                "--dir", str(tmp_path / "mail")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.2", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the plain sink did not start"
                time.sleep(0.1)
        settings = SmtpSettings(host="127.0.0.2", port=port, sender="x@example.cn", user="swms",
                                password="relay-secret")
        with pytest.raises(smtplib.SMTPException, match="unencrypted"):
            SmtpTransport(settings).connect()
        # the same relay without a login is fine (a relay that trusts its network)
        with SmtpTransport(SmtpSettings(host="127.0.0.2", port=port, sender="x@example.cn")).connect() as smtp:
            smtp.send_message(mail())
        assert len(list((tmp_path / "mail").glob("*.eml"))) == 1
    finally:
        process.terminate()
        process.wait(10)
