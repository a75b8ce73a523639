from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from swms.contracts.common import AccessReason, ApplicationKind, Contract, Level, Uuid
from swms.text import MultiLine

CertificateNumber = Field(title="证书编号", pattern=r"^\d{13}$")


class CertificateRequest(Contract):
    """查看证书: the holder, an officer of their region, a service; an administrator only with
    ``access_reason`` (audited): the PDF prints the holder's ID number."""
    application_id: Uuid = Field(title="申请编号")
    access_reason: AccessReason = None


class CertificateView(Contract):
    """查看证书: the holder's own view, with a short-lived download link."""
    certificate_number: str
    application_id: Uuid
    person_id: Uuid
    holder_name: str
    level: Level
    authority: str
    valid_from: dt.date
    valid_until: dt.date
    issued_at: dt.datetime
    status: str                       # issued (current) / suspended / revoked / expired / superseded
    sha256: str
    download_url: str
    download_expires_in_seconds: int
    kind: ApplicationKind = ApplicationKind.FIRST_REGISTRATION
    issued_on: dt.date | None = None
    status_reason: str | None = None
    pending_upgrade_level: Level | None = None     # 已出证待升级: a new certificate at this level is due
    supersedes: str | None = None
    superseded_by: str | None = None
    original_certificate_no: str | None = None     # replacement of a paper certificate
    verification_url: str | None = None            # what the QR code on the PDF holds
    photo_missing: bool = False
    # The same certificate as a signed W3C Verifiable Credential (VC-JOSE, application/vc+jwt),
    # a short-lived link like download_url; None for certificates issued before credentials existed.
    credential_download_url: str | None = None


class StatusChangeRequest(Contract):
    """Revoke, suspend, or lift a suspension: always with a reason (kept, audited, published)."""
    certificate_number: str = CertificateNumber
    # Optional here so that a missing or blank reason gets its own code (REASON_REQUIRED), not a
    # generic validation failure: the service refuses it before touching anything.
    reason: Annotated[str, Field(max_length=500), MultiLine] | None = Field(default=None, title="理由")


class CertificateStatus(Contract):
    certificate_number: str
    status: str
    reason: str | None
    changed_by: str
    changed_at: dt.datetime


class VerifyRequest(Contract):
    """Public verification: by the QR code's token, or by the number printed on the certificate
    together with the holder's full name (as licence look-ups ask for name and number). A number
    with the wrong name answers exactly like an unknown number."""
    certificate_number: str | None = Field(default=None, title="证书编号", pattern=r"^\d{13}$")
    holder_name: str | None = Field(default=None, title="持证人姓名", min_length=1, max_length=50,
                                    validate_default=True)
    # v1 ``<number>.<signature>`` (older certificates) or v2, a compact JWS with the masked name,
    # level, validity and status-list pointer (docs/trust.md)
    token: str | None = Field(default=None, title="核验码", min_length=1, max_length=600)

    @field_validator("holder_name")
    @classmethod
    def _name_goes_with_the_number(cls, value: str | None, info: ValidationInfo):
        # A field validator (not the model's), so that the refusal names holder_name.
        if info.data.get("certificate_number") is not None and (value is None or not value.strip()):
            raise PydanticCustomError("missing", "按证书编号核验须同时填写持证人姓名")
        return value

    @model_validator(mode="after")
    def _exactly_one(self):
        if (self.certificate_number is None) == (self.token is None):
            raise ValueError("请提供二维码核验码，或证书编号与持证人姓名（二者选一）")
        if self.token is not None and self.holder_name is not None:
            raise ValueError("使用二维码核验码时无需填写持证人姓名")
        return self


class VerificationStatus(str, Enum):
    CURRENT = "current"           # 有效
    SUSPENDED = "suspended"       # 已暂停
    REVOKED = "revoked"           # 已撤销
    EXPIRED = "expired"           # 已过期
    SUPERSEDED = "superseded"     # 已换发（被新证书取代）


class VerificationResult(Contract):
    """Only what a verifier needs: no ID number, no person id, the name partly masked."""
    genuine: bool                        # issued by this system (a forged token is an error instead)
    status: VerificationStatus
    status_label: str
    reason: str | None = None            # why revoked / suspended, where an officer gave a reason
    certificate_number: str
    holder_name_masked: str
    level: Level
    authority: str
    valid_from: dt.date
    valid_until: dt.date
    issued_on: dt.date
    superseded_by: str | None = None
    checked_at: dt.datetime


class IssuanceStatusRequest(Contract):
    application_id: Uuid = Field(title="申请编号")


class IssuanceStatus(Contract):
    """Where the issue of an approved application stands (pending / done / failed) and why."""
    application_id: Uuid
    status: str
    attempts: int
    certificate_number: str | None
    last_error_code: str | None
    last_error_field: str | None
    last_error: str | None
    next_attempt_at: dt.datetime | None
    received_at: dt.datetime


class SigningCertificates(Contract):
    """What a verifier needs to check certificate PDFs and QR tokens offline."""
    signing_certificate_pem: str
    chain_pem: str
    signer_fingerprint: str
    qr_token_public_key_pem: str
    development_keys: bool
    # did:web of the verify host: the issuer of the credentials and status lists, whose DID
    # document (/.well-known/did.json) lists the QR-token key
    issuer_did: str | None = None


class StatusListPurpose(str, Enum):
    REVOCATION = "revocation"     # final: revoked, or superseded by a re-issue
    SUSPENSION = "suspension"     # reversible


class StatusListRequest(Contract):
    """Public: one published status list (W3C Bitstring Status List v1.0)."""
    purpose: StatusListPurpose = Field(title="状态用途")
    list_number: int = Field(title="状态列表编号", ge=1, le=1_000_000)


class StatusListCredential(Contract):
    """The list as a signed BitstringStatusListCredential (VC-JOSE compact JWS, ``vc+jwt``)."""
    purpose: StatusListPurpose
    list_number: int
    version: int                   # grows with every change of this list's bits
    updated_at: dt.datetime
    credential: str                # the JWS; its payload is the credential (encodedList: gzip, base64url)
