from __future__ import annotations

import datetime as dt

from pydantic import Field

from swms.contracts.common import Contract, Level, Uuid


class CertificateRequest(Contract):
    application_id: Uuid = Field(title="申请编号")


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
    status: str
    sha256: str
    download_url: str
    download_expires_in_seconds: int
