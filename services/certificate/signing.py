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

import asyncio
import datetime as dt
import hashlib
import io
import threading
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
_loops = threading.local()


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


def _der(tag: int, content: bytes) -> bytes:
    """One DER element: tag byte, definite length, content."""
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


@dataclass(frozen=True)
class _CmsTemplate:
    """The parts of a PAdES B-B CMS that are the same in every signature by one key, as DER.

    pyHanko rebuilds the whole SignedData with asn1crypto on every signature (the chain, the
    ESS signing-certificate-v2 attribute, the algorithm identifiers): ~20 ms per PDF, two thirds
    of signing. Only the message digest and the signature value change, so they are spliced into
    bytes pyHanko produced once."""
    signed_data_head: bytes      # version, digestAlgorithms, encapContentInfo, [0] certificates
    signer_info_head: bytes      # version, sid, digestAlgorithm
    attrs_before_digest: bytes   # content of the signed attributes SET up to the digest's bytes
    attrs_after_digest: bytes
    signature_algorithm: bytes
    content_type_oid: bytes      # the ContentInfo's contentType (id-signedData)


def _cached_key_signer_class():
    from asn1crypto import cms
    from pyhanko.sign.general import get_pyca_cryptography_hash
    from pyhanko.sign.signers import SimpleSigner

    class _CachedKeySigner(SimpleSigner):
        """pyHanko's SimpleSigner parses the private key on every signature (for RSA, OpenSSL then
        re-checks the key, ~0.15 s for 3072 bits) and rebuilds the constant parts of the CMS with
        asn1crypto. Keep the parsed key, and the constant DER (see _CmsTemplate)."""
        crypto_key = None
        _templates: dict

        def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
            mechanism = self.get_signature_mechanism_for_digest(digest_algorithm).signature_algo
            if mechanism == "ecdsa" and isinstance(self.crypto_key, EllipticCurvePrivateKey):
                return self.crypto_key.sign(data, ECDSA(get_pyca_cryptography_hash(digest_algorithm)))
            if mechanism == "rsassa_pkcs1v15" and isinstance(self.crypto_key, RSAPrivateKey):
                return self.crypto_key.sign(data, PKCS1v15(), get_pyca_cryptography_hash(digest_algorithm))
            return super().sign_raw(data, digest_algorithm)

        async def async_sign(self, data_digest: bytes, digest_algorithm: str, dry_run=False, use_pades=False,
                             timestamper=None, signed_attr_settings=None, is_pdf_sig=True,
                             encap_content_info=None):
            # Only the plain PAdES case this service uses; anything else goes through pyHanko.
            plain = (not dry_run and use_pades and is_pdf_sig and encap_content_info is None
                     and self.unsigned_attr_prov_spec is None and not self.attribute_certs
                     and (signed_attr_settings is None
                          or (signed_attr_settings.cades_signed_attrs is None
                              and getattr(signed_attr_settings, "adobe_revinfo_attr", None) is None)))
            if not plain:
                return await super().async_sign(
                    data_digest, digest_algorithm, dry_run=dry_run, use_pades=use_pades, timestamper=timestamper,
                    signed_attr_settings=signed_attr_settings, is_pdf_sig=is_pdf_sig,
                    encap_content_info=encap_content_info)
            digest_algorithm = digest_algorithm.lower()
            template = await self._template(digest_algorithm, len(data_digest))
            attrs_content = template.attrs_before_digest + data_digest + template.attrs_after_digest
            signed_attrs_der = _der(0x31, attrs_content)   # signed as a SET (RFC 5652 §5.4)
            signature = await self.async_sign_raw(signed_attrs_der, digest_algorithm)
            unsigned = b""
            if timestamper is not None:
                # B-T: the TSA's token over the hash of the signature value, as pyHanko's
                # TSTProvider asks for it, kept as the TSA's own bytes (asn1crypto would re-encode
                # the token, TSA certificate included, when put into a new attribute).
                hashed = hashes.Hash(get_pyca_cryptography_hash(digest_algorithm))
                hashed.update(signature)
                token = await timestamper.async_timestamp(hashed.finalize(), digest_algorithm)
                unsigned = _der(0xA1, _der(0x30, _TOKEN_ATTRIBUTE_OID + _der(0x31, token.dump())))
            signer_info = _der(0x30, template.signer_info_head + _der(0xA0, attrs_content)
                               + template.signature_algorithm + _der(0x04, signature) + unsigned)
            signed_data = _der(0x30, template.signed_data_head + _der(0x31, signer_info))
            return cms.ContentInfo.load(_der(0x30, template.content_type_oid + _der(0xA0, signed_data)))

        async def _template(self, digest_algorithm: str, digest_size: int) -> _CmsTemplate:
            if not hasattr(self, "_templates"):
                self._templates = {}
            template = self._templates.get(digest_algorithm)
            if template is None:
                marker = bytes(range(0x40, 0x40 + digest_size))   # a digest no document will have
                built = await super().async_sign(marker, digest_algorithm, use_pades=True)
                template = self._templates[digest_algorithm] = _split_template(built, marker)
            return template

    return _CachedKeySigner


# id-aa-signatureTimeStampToken (RFC 3161 appendix A), DER
_TOKEN_ATTRIBUTE_OID = bytes.fromhex("060b2a864886f70d010910020e")


def _set_content(der: bytes) -> bytes:
    """The content octets of a DER element (its tag and length removed)."""
    first = der[1]
    return der[2:] if first < 0x80 else der[2 + (first & 0x7F):]


def _split_template(built, marker: bytes) -> _CmsTemplate:
    from asn1crypto.core import Void

    signed_data = built["content"]
    [signer_info] = list(signed_data["signer_infos"])
    head = b"".join(signed_data[name].dump() for name in
                    ("version", "digest_algorithms", "encap_content_info", "certificates", "crls")
                    if not isinstance(signed_data[name], Void))   # absent optional fields are Void
    attrs = _set_content(signer_info["signed_attrs"].dump())
    at = attrs.index(marker)
    if attrs.find(marker, at + 1) != -1 or not isinstance(signer_info["unsigned_attrs"], Void):
        raise RuntimeError("unexpected CMS template from pyHanko")
    return _CmsTemplate(
        signed_data_head=head,
        signer_info_head=b"".join(signer_info[name].dump() for name in ("version", "sid", "digest_algorithm")),
        attrs_before_digest=attrs[:at], attrs_after_digest=attrs[at + len(marker):],
        signature_algorithm=signer_info["signature_algorithm"].dump(),
        content_type_oid=built["content_type"].dump())


class TimestampUnavailable(Exception):
    """The time-stamping authority did not answer, or refused: no B-T signature can be made now.
    The issue is retried later (the approval stays pending), never downgraded to B-B silently."""


def make_timestamper(url: str, timeout_seconds: float):
    """An RFC 3161 client for ``CERT_TSA_URL`` (None when empty: PAdES B-B as before).

    The HTTP request is made in the calling thread: pyHanko's own client hands it to a thread
    pool, which is pointless in a render worker (one job at a time) and deadlocks under eventlet."""
    url = (url or "").strip()
    if not url:
        return None
    import urllib.request

    from asn1crypto import tsp
    from pyhanko.sign.timestamps.api import TimeStamper

    class _Timestamper(TimeStamper):
        async def async_request_tsa_response(self, req):
            request = urllib.request.Request(url, data=req.dump(), method="POST",
                                             headers={"Content-Type": "application/timestamp-query"})
            with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
                if response.headers.get("Content-Type") != "application/timestamp-reply":
                    raise ValueError(f"not a time-stamp reply: {response.headers.get('Content-Type')}")
                return tsp.TimeStampResp.load(response.read())

        async def async_timestamp(self, message_digest, md_algorithm):
            try:   # refused, malformed, timed out, connection refused, HTTP error
                return await super().async_timestamp(message_digest, md_algorithm)
            except Exception as exc:
                raise TimestampUnavailable(f"{type(exc).__name__}: {exc}") from exc

    return _Timestamper()


def sign_pdf(pdf: bytes, signer, authority: str, certificate_number: str, timestamper=None) -> bytes:
    """Add an invisible PAdES signature over the whole file (incremental update): B-B, or B-T when
    ``timestamper`` (see make_timestamper) adds the TSA's token over the signature value.

    Raises TimestampUnavailable when the time-stamping authority does not answer properly."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers

    metadata = signers.PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD, subfilter=fields.SigSeedSubFilter.PADES, md_algorithm="sha256",
        reason=f"社会工作者登记证书 {certificate_number}", location="中华人民共和国", name=authority)
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    # A fixed reservation for the CMS blob: without it pyHanko builds the whole signature twice
    # (a dry run to measure it). An ECDSA or RSA-4096 signature with a three-certificate chain
    # and a time-stamp token takes well under half of this.
    # One event loop per thread, kept: asyncio.run would build and tear one down per PDF.
    loop = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _loops.loop = asyncio.new_event_loop()
    signed = loop.run_until_complete(signers.PdfSigner(metadata, signer, timestamper=timestamper).async_sign_pdf(
        writer, bytes_reserved=SIGNATURE_BYTES_RESERVED))
    return signed.getvalue()


@dataclass(frozen=True)
class SignatureReport:
    signed: bool
    intact: bool            # the signed bytes hash to the digest in the signature
    valid: bool             # the cryptographic signature over that digest checks out
    trusted: bool           # the signer's certificate chains to one of the given roots
    covers_whole_file: bool
    signer_subject: str | None
    problem: str | None = None
    # PAdES B-T: the TSA's time in the signature time-stamp token, and whether that token checks out
    # against the time-stamp roots given (None: no token, a B-B signature).
    timestamped_at: dt.datetime | None = None
    timestamp_ok: bool | None = None

    @property
    def ok(self) -> bool:
        """The signature itself; a token's own verdict is ``timestamp_ok`` (a verifier without the
        TSA's root still sees an intact, trusted signature)."""
        return self.signed and self.intact and self.valid and self.trusted and self.covers_whole_file


def validate_pdf(pdf: bytes, trust_roots_pem: bytes, timestamp_roots_pem: bytes | None = None) -> SignatureReport:
    """Check the certificate PDF's signature against the given root certificate(s), and its
    signature time-stamp token, if any, against ``timestamp_roots_pem`` (default: the same roots).

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
        timestamp_context = None
        if timestamp_roots_pem is not None:
            timestamp_context = ValidationContext(
                trust_roots=list(load_certs_from_pemder_data(timestamp_roots_pem)), allow_fetching=False)
        status = validate_pdf_signature(signatures[-1], context, ts_validation_context=timestamp_context)
    except Exception as exc:
        return SignatureReport(True, False, False, False, False, None, f"{type(exc).__name__}: {exc}")
    token = status.timestamp_validity
    return SignatureReport(
        signed=True, intact=bool(status.intact), valid=bool(status.valid), trusted=bool(status.trusted),
        covers_whole_file=status.coverage == SignatureCoverageLevel.ENTIRE_FILE,
        signer_subject=status.signing_cert.subject.human_friendly if status.signing_cert else None,
        timestamped_at=token.timestamp if token is not None else None,
        timestamp_ok=bool(token.intact and token.valid and token.trusted) if token is not None else None)
