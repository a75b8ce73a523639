"""PAdES signatures (pyHanko) on certificate PDFs, the development CA, and signature validation.

The issuing authority signs every certificate PDF with its key and X.509 certificate
(PAdES baseline B-B: CMS signature with the signing certificate as a signed attribute,
``/SubFilter /ETSI.CAdES.detached``). Anyone can check a downloaded PDF against the authority's
CA certificate (published by ``certificate.get_signing_certificates``, and in Adobe Reader).

Production supplies the key and certificate as PEM files (docs/configuration.md). Without them,
and unless forbidden by ``CERT_ALLOW_DEV_KEYS=false``, a development CA and a signing certificate
for the authority are generated on first run (see services/certificate/keys.py).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ec import ECDSA, EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.x509.oid import NameOID

SIGNATURE_FIELD = "SWMS-Registration-Authority"
SIGNATURE_BYTES_RESERVED = 16384


@dataclass(frozen=True)
class SigningMaterial:
    """PEM bytes: the authority's private key, its certificate, and the chain up to the root."""
    key_pem: bytes
    cert_pem: bytes
    chain_pem: bytes   # one or more certificates (intermediates and root), PEM concatenated

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the signing certificate (DER), recorded with every certificate issued."""
        cert = x509.load_pem_x509_certificate(self.cert_pem)
        return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _name(common_name: str, unit: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "全国社会工作信息系统")]
    if unit:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    parts.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(parts)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def generate_dev_ca(authority: str, now: dt.datetime | None = None) -> SigningMaterial:
    """A development root CA and, under it, a document-signing certificate for ``authority``.

    ECDSA P-256: signing costs ~35 ms per PDF. (RSA keys work too, when supplied by file, but
    pyHanko re-loads the key per signature and OpenSSL re-checks RSA keys on every load.)"""
    now = now or dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("SWMS 开发测试根证书 (development only)", "开发环境，不得用于生产")
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name(authority, "电子登记证书签章")).issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=5 * 365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256()))
    return SigningMaterial(key_pem=_pem_key(key), cert_pem=cert.public_bytes(serialization.Encoding.PEM),
                           chain_pem=ca_cert.public_bytes(serialization.Encoding.PEM))


def check_material(material: SigningMaterial) -> None:
    """Refuse at start-up (not at the first signature) a key that does not match its certificate,
    a certificate not yet valid or expired, or a chain that does not parse."""
    key = serialization.load_pem_private_key(material.key_pem, password=None)
    cert = x509.load_pem_x509_certificate(material.cert_pem)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, public)
            != cert.public_key().public_bytes(serialization.Encoding.DER, public)):
        raise ValueError("the signing key does not belong to the signing certificate")
    now = dt.datetime.now(dt.UTC)
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise ValueError(f"the signing certificate is not valid now ({cert.not_valid_before_utc} – "
                         f"{cert.not_valid_after_utc})")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or not usage.content_commitment:
        # pyHanko (and Adobe) validate document signatures against this key usage
        raise ValueError("the signing certificate must allow non-repudiation (KeyUsage contentCommitment)")
    try:
        chain = x509.load_pem_x509_certificates(material.chain_pem)
    except ValueError:
        chain = []
    if not chain:
        raise ValueError("the certificate chain is empty or not PEM")


def make_signer(material: SigningMaterial):
    """A pyHanko signer holding the key loaded once (see _CachedKeySigner)."""
    from pyhanko.keys import (
        load_certs_from_pemder_data,
        load_private_key_from_pemder_data,
    )
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    [signing_cert] = list(load_certs_from_pemder_data(material.cert_pem))
    chain = list(load_certs_from_pemder_data(material.chain_pem))
    signer = _cached_key_signer_class()(
        signing_cert=signing_cert, signing_key=load_private_key_from_pemder_data(material.key_pem, None),
        cert_registry=SimpleCertificateStore.from_certs(chain))
    signer.crypto_key = serialization.load_pem_private_key(material.key_pem, password=None)
    return signer


def _cached_key_signer_class():
    from pyhanko.sign.general import get_pyca_cryptography_hash
    from pyhanko.sign.signers import SimpleSigner

    class _CachedKeySigner(SimpleSigner):
        """pyHanko's SimpleSigner parses the private key on every signature; for RSA, OpenSSL then
        re-checks the key (~0.15 s for 3072 bits). Keep the parsed key for the common mechanisms."""
        crypto_key = None

        def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
            mechanism = self.get_signature_mechanism_for_digest(digest_algorithm).signature_algo
            if mechanism == "ecdsa" and isinstance(self.crypto_key, EllipticCurvePrivateKey):
                return self.crypto_key.sign(data, ECDSA(get_pyca_cryptography_hash(digest_algorithm)))
            if mechanism == "rsassa_pkcs1v15" and isinstance(self.crypto_key, RSAPrivateKey):
                return self.crypto_key.sign(data, PKCS1v15(), get_pyca_cryptography_hash(digest_algorithm))
            return super().sign_raw(data, digest_algorithm)

    return _CachedKeySigner


def sign_pdf(pdf: bytes, signer, authority: str, certificate_number: str) -> bytes:
    """Add an invisible PAdES signature over the whole file (incremental update)."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers

    metadata = signers.PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD, subfilter=fields.SigSeedSubFilter.PADES, md_algorithm="sha256",
        reason=f"社会工作者登记证书 {certificate_number}", location="中华人民共和国", name=authority)
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    # A fixed reservation for the CMS blob: without it pyHanko builds the whole signature twice
    # (a dry run to measure it). An ECDSA or RSA-4096 signature with a three-certificate chain
    # takes well under half of this.
    return signers.PdfSigner(metadata, signer).sign_pdf(writer, bytes_reserved=SIGNATURE_BYTES_RESERVED).getvalue()


@dataclass(frozen=True)
class SignatureReport:
    signed: bool
    intact: bool            # the signed bytes hash to the digest in the signature
    valid: bool             # the cryptographic signature over that digest checks out
    trusted: bool           # the signer's certificate chains to one of the given roots
    covers_whole_file: bool
    signer_subject: str | None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.signed and self.intact and self.valid and self.trusted and self.covers_whole_file


def validate_pdf(pdf: bytes, trust_roots_pem: bytes) -> SignatureReport:
    """Check the certificate PDF's signature against the given root certificate(s).

    A PDF that no longer parses (for instance a damaged cross-reference table) is reported as not
    valid rather than raising."""
    from pyhanko.keys import load_certs_from_pemder_data
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import SignatureCoverageLevel, validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    try:
        signatures = PdfFileReader(io.BytesIO(pdf), strict=False).embedded_signatures
    except Exception as exc:
        return SignatureReport(False, False, False, False, False, None, f"unreadable PDF: {exc}")
    if not signatures:
        return SignatureReport(False, False, False, False, False, None, "no signature")
    try:
        context = ValidationContext(trust_roots=list(load_certs_from_pemder_data(trust_roots_pem)),
                                    allow_fetching=False)
        status = validate_pdf_signature(signatures[-1], context)
    except Exception as exc:
        return SignatureReport(True, False, False, False, False, None, f"{type(exc).__name__}: {exc}")
    return SignatureReport(
        signed=True, intact=bool(status.intact), valid=bool(status.valid), trusted=bool(status.trusted),
        covers_whole_file=status.coverage == SignatureCoverageLevel.ENTIRE_FILE,
        signer_subject=status.signing_cert.subject.human_friendly if status.signing_cert else None)
