"""A development RFC 3161 time-stamping authority on loopback, for tests and benches (never production).

pyHanko's DummyTimeStamper answers each request; http.server carries it the way a real TSA does
(HTTP POST ``application/timestamp-query`` → ``application/timestamp-reply``), so the service's
HTTP client is exercised end to end. Its own root CA (ECDSA P-256) and TSA certificate (RSA 2048:
DummyTimeStamper signs with RSA only; extended key usage timeStamping, critical) are generated at start.

  .venv/bin/python -m tools.dev_tsa [--port 0]    # prints the URL, then serves until killed
"""
from __future__ import annotations

import argparse
import datetime as dt
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SWMS development TSA"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def generate_tsa_material() -> tuple[bytes, bytes, bytes]:
    """(root certificate PEM, TSA certificate PEM, TSA private key PEM)."""
    now = dt.datetime.now(dt.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name("SWMS 开发时间戳根证书 (development only)")
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)   # DummyTimeStamper signs with RSA only
    cert = (x509.CertificateBuilder().subject_name(_name("SWMS development TSA")).issuer_name(root_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return (root.public_bytes(pem), cert.public_bytes(pem),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


class DevTsa:
    """``with DevTsa() as tsa:`` serves at ``tsa.url``; ``tsa.roots_pem`` is what verifiers trust.
    ``stop()`` takes it away (connections refused), ``start()`` brings it back on the same port."""

    def __init__(self, port: int = 0):
        from pyhanko.keys import load_cert_from_pemder, load_private_key_from_pemder_data
        from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

        import tempfile
        from pathlib import Path

        self.roots_pem, cert_pem, key_pem = generate_tsa_material()
        with tempfile.TemporaryDirectory() as folder:   # pyHanko loads a single certificate from a file
            path = Path(folder) / "tsa.pem"
            path.write_bytes(cert_pem)
            cert = load_cert_from_pemder(str(path))
        self.stamper = DummyTimeStamper(tsa_cert=cert, tsa_key=load_private_key_from_pemder_data(key_pem, None))
        self.port = port
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tsa"

    def start(self) -> "DevTsa":
        from asn1crypto import tsp

        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    reply = tsa.stamper.request_tsa_response(tsp.TimeStampReq.load(body)).dump()
                except Exception:
                    self.send_error(400, "not a time-stamp request")
                    return
                tsa.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="dev-tsa", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "DevTsa":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--roots", help="write the TSA root certificate (PEM) to this file")
    args = parser.parse_args()
    tsa = DevTsa(args.port).start()
    if args.roots:
        with open(args.roots, "wb") as handle:
            handle.write(tsa.roots_pem)
    print(tsa.url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
