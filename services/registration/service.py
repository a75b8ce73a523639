"""Registration: registration applications (首次登记 in the skeleton) and their status machine."""
from __future__ import annotations

import datetime as dt
import json

from nameko.dependency_providers import Config
from nameko.rpc import RpcProxy, rpc
from sqlalchemy import select

from services.registration import domain
from services.registration.models import Application, inbox, outbox
from swms import errors, health, idcard
from swms import rpc as swms_rpc
from swms.auth import SERVICE, SOCIAL_WORKER, Auth
from swms.contracts.common import HealthResponse
from swms.contracts.events import (
    ApplicationApproved,
    ApplicationRejected,
    CertificateIssued,
)
from swms.contracts.profile import CompletenessResponse, ProfileSnapshot
from swms.contracts.registration import (
    ApplicationList,
    ApplicationRef,
    ApplicationResponse,
    IssuanceData,
    SubmitFirstRegistrationRequest,
)
from swms.contracts.registration import (
    StatusChange as StatusChangeOut,
)
from swms.db import Database
from swms.events import on_event
from swms.outbox import OutboxRelay
from swms.rpc import contract


def _response(application: Application) -> ApplicationResponse:
    return ApplicationResponse(
        application_id=application.application_id, person_id=application.person_id,
        kind=application.kind, status=application.status, submitted_at=application.submitted_at,
        rejection_reason=application.rejection_reason, certificate_number=application.certificate_number,
        history=[StatusChangeOut(status=c.status, at=c.at, actor=c.actor, reason=c.reason)
                 for c in application.history])


class RegistrationService:
    name = "registration"

    config = Config()
    db = Database()
    auth = Auth()
    relay = OutboxRelay(outbox)
    profile = RpcProxy("profile")

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(None, HealthResponse)
    def health(self):
        return health.check(self.name, self.db)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(SubmitFirstRegistrationRequest, ApplicationResponse)
    def submit_first_registration(self, request: SubmitFirstRegistrationRequest):
        caller = self.auth.require(SOCIAL_WORKER)
        if not request.commitment:
            raise errors.SwmsError(errors.COMMITMENT_REQUIRED, "请勾选承诺声明后再申请登记证书", "commitment")
        # Calls to other services happen before the transaction opens, never inside it.
        completeness = CompletenessResponse.model_validate(
            swms_rpc.call(self.profile.check_completeness, {"person_id": caller.subject}))
        if not completeness.complete:
            raise errors.SwmsError(errors.PROFILE_INCOMPLETE,
                                   "请先完善个人信息表：" + "、".join(completeness.missing), "profile",
                                   [{"field": item, "code": errors.PROFILE_INCOMPLETE, "message": f"{item}未填写"}
                                    for item in completeness.missing])
        snapshot = ProfileSnapshot.model_validate(
            swms_rpc.call(self.profile.get_snapshot, {"person_id": caller.subject}))
        domain.check_exam_window(snapshot.exam_year, int(self.config.get("FIRST_REGISTRATION_WINDOW_YEARS", 1)),
                                 dt.date.today())
        with self.db.transaction() as session:
            application = domain.submit_first_registration(session, snapshot, caller.subject,
                                                           idcard.mask_name(snapshot.name))
        return _response(application)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(ApplicationRef, ApplicationResponse)
    def get_application(self, request: ApplicationRef):
        application = self.db.session.get(Application, request.application_id)
        self.auth.require_person(application.person_id if application else "",
                                 officer_region=application.region_code if application else None)
        if application is None:
            raise errors.not_found("申请", "application_id")
        return _response(application)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(None, ApplicationList)
    def list_my_applications(self):
        caller = self.auth.require(SOCIAL_WORKER)
        rows = self.db.session.execute(select(Application).where(Application.person_id == caller.subject)
                                       .order_by(Application.submitted_at)).scalars().all()
        return ApplicationList(items=[_response(row) for row in rows])

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(ApplicationRef, IssuanceData)
    def get_issuance_data(self, request: ApplicationRef):
        """For the certificate service only: the snapshot as submitted, full ID number included."""
        self.auth.require(SERVICE)
        application = self.db.session.get(Application, request.application_id)
        if application is None:
            raise errors.not_found("申请", "application_id")
        return IssuanceData(application_id=application.application_id, kind=application.kind,
                            snapshot=ProfileSnapshot.model_validate(json.loads(application.snapshot)))

    @on_event(ApplicationApproved, inbox)
    def on_application_approved(self, session, event: ApplicationApproved):
        domain.apply_approval(session, event)

    @on_event(ApplicationRejected, inbox)
    def on_application_rejected(self, session, event: ApplicationRejected):
        domain.apply_rejection(session, event)

    @on_event(CertificateIssued, inbox)
    def on_certificate_issued(self, session, event: CertificateIssued):
        domain.apply_issue(session, event)
