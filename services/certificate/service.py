"""Certificate: issues the e-certificate on final approval; 查看证书 for the holder and officers."""
from __future__ import annotations

import datetime as dt
import logging

from eventlet import tpool
from nameko.dependency_providers import Config
from nameko.events import event_handler
from nameko.rpc import RpcProxy, rpc

from services.certificate import domain, render
from services.certificate.models import ISSUED, outbox
from swms import errors, health
from swms import rpc as swms_rpc
from swms.auth import Auth
from swms.contracts.certificate import CertificateRequest, CertificateView
from swms.contracts.common import HealthResponse
from swms.contracts.events import ApplicationApproved
from swms.contracts.registration import IssuanceData
from swms.db import Database
from swms.outbox import OutboxRelay
from swms.rpc import contract
from swms.storage import ObjectStorage

log = logging.getLogger(__name__)
DOWNLOAD_LINK_SECONDS = 300


class CertificateService:
    name = "certificate"

    config = Config()
    db = Database()
    auth = Auth()
    storage = ObjectStorage("CERTIFICATE_S3_BUCKET")
    relay = OutboxRelay(outbox)
    registration = RpcProxy("registration")

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(None, HealthResponse)
    def health(self):
        return health.check(self.name, self.db, self.storage)

    @event_handler(ApplicationApproved.source, ApplicationApproved.event_type)
    def on_application_approved(self, payload):
        """Issue in three steps so that a crash anywhere loses nothing and duplicates nothing:
        1. reserve the number (committed; unique per application),
        2. render and store the PDF (same object key on a retry),
        3. mark issued and write certificate_issued to the outbox (one transaction)."""
        event = ApplicationApproved.model_validate(payload)
        if not event.final:
            return
        existing = domain.find_for_application(self.db.session, event.application_id)
        if existing is not None and existing.status == ISSUED:
            log.info("application %s already has certificate %s", event.application_id,
                     existing.certificate_number)
            return
        self.auth.act_as_service()
        data = IssuanceData.model_validate(
            swms_rpc.call(self.registration.get_issuance_data, {"application_id": event.application_id}))
        with self.db.transaction() as session:
            certificate = domain.start_issue(session, data, self.config["CERT_AUTHORITY_NAME"],
                                             int(self.config.get("CERT_VALIDITY_YEARS", 3)), dt.date.today())
        face = domain.face(certificate, data.snapshot.gender, data.snapshot.unit_name,
                           self.config["VERIFY_BASE_URL"])
        # WeasyPrint is CPU-bound: a native thread keeps the hub (heartbeats, RPC replies) alive.
        pdf = tpool.execute(render.render_pdf, face)
        sha256 = self.storage.put(certificate.object_key, pdf, "application/pdf",
                                  {"certificate-number": certificate.certificate_number})
        with self.db.transaction() as session:
            domain.finish_issue(session, certificate.certificate_number, sha256)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(CertificateRequest, CertificateView)
    def view_certificate(self, request: CertificateRequest):
        """查看证书: a short-lived download link for the holder or an officer of their region."""
        certificate = domain.find_for_application(self.db.session, request.application_id)
        self.auth.require_person(certificate.person_id if certificate else "",
                                 officer_region=certificate.region_code if certificate else None)
        if certificate is None or certificate.status != ISSUED:
            raise errors.not_found("证书", "application_id")
        url = self.storage.download_url(certificate.object_key, DOWNLOAD_LINK_SECONDS,
                                        f"{certificate.certificate_number}.pdf")
        return CertificateView(
            certificate_number=certificate.certificate_number, application_id=certificate.application_id,
            person_id=certificate.person_id, holder_name=certificate.holder_name, level=certificate.level,
            authority=certificate.authority, valid_from=certificate.valid_from,
            valid_until=certificate.valid_until, issued_at=certificate.issued_at, status=certificate.status,
            sha256=certificate.sha256, download_url=url, download_expires_in_seconds=DOWNLOAD_LINK_SECONDS)
