"""Notification: records and sends email for events that concern a person."""
from __future__ import annotations

from nameko.dependency_providers import Config
from nameko.events import event_handler
from nameko.rpc import RpcProxy, rpc
from sqlalchemy import select

from services.notification import domain
from services.notification.mailer import Mailer
from services.notification.models import Message, outbox
from swms import errors, health
from swms import rpc as swms_rpc
from swms.auth import Auth
from swms.contracts.common import HealthResponse
from swms.contracts.events import CertificateIssued
from swms.contracts.identity import PersonResponse
from swms.contracts.notification import MessageList, MessageOut, MessagesRequest
from swms.db import Database
from swms.outbox import OutboxRelay
from swms.rpc import contract


def _mask_email(address: str) -> str:
    local, _, domain_part = address.partition("@")
    return f"{local[:1]}***@{domain_part}"


class NotificationService:
    name = "notification"

    config = Config()
    db = Database()
    auth = Auth()
    relay = OutboxRelay(outbox)
    wake_mailer = Mailer()
    identity = RpcProxy("identity")

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(None, HealthResponse)
    def health(self):
        return health.check(self.name, self.db)

    @event_handler(CertificateIssued.source, CertificateIssued.event_type)
    def on_certificate_issued(self, payload):
        event = CertificateIssued.model_validate(payload)
        key = f"{event.event_id}:certificate_issued"
        if self.db.session.execute(select(Message.message_id).where(Message.idempotency_key == key)).first():
            return
        self.auth.act_as_service()
        person = PersonResponse.model_validate(
            swms_rpc.call(self.identity.get_person, {"person_id": event.person_id}))
        values = {"name": person.name, "certificate_number": event.certificate_number,
                  "level": event.level.value, "valid_from": event.valid_from.isoformat(),
                  "valid_until": event.valid_until.isoformat(), "authority": event.authority}
        with self.db.transaction() as session:
            domain.record(session, idempotency_key=key, person_id=event.person_id, kind="certificate_issued",
                          to_address=person.email, values=values)
        self.wake_mailer()

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(MessagesRequest, MessageList)
    def list_messages(self, request: MessagesRequest):
        self.auth.require_person(request.person_id)
        rows = self.db.session.execute(select(Message).where(Message.person_id == request.person_id)
                                       .order_by(Message.created_at.desc()).limit(100)).scalars().all()
        return MessageList(items=[MessageOut(
            message_id=m.message_id, kind=m.kind, to_masked=_mask_email(m.to_address), subject=m.subject,
            status=m.status, attempts=m.attempts, created_at=m.created_at, sent_at=m.sent_at,
            last_error=m.last_error) for m in rows])
