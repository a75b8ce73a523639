"""Review: officers' queues and decisions along the configured review chain."""
from __future__ import annotations

import logging
import uuid

import eventlet
from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from sqlalchemy.orm import sessionmaker

from services.review import domain
from services.review.models import audit, inbox, outbox
from swms import errors, health
from swms import rpc as swms_rpc
from swms.auth import ADMIN, OFFICER, Auth
from swms.config import required
from swms.contracts.common import HealthResponse
from swms.contracts.events import ApplicationSubmitted
from swms.contracts.registration import IssuanceData
from swms.contracts.review import (
    BatchApproveRequest,
    BatchDecisionResponse,
    DeadlineSummary,
    DecideRequest,
    DecisionResponse,
    ItemAudit,
    ItemDetail,
    ItemFile,
    ItemRef,
    QueuePage,
    QueueRequest,
    SummaryRequest,
)
from swms.contracts.review import ReviewItem as ReviewItemOut
from swms.db import Database, engine_for
from swms.events import on_event
from swms.ops import OpsEndpoint
from swms.outbox import OutboxRelay, utcnow
from swms.queues import RpcProxy
from swms.rpc import contract, rpc
from swms.settings import CheckedNumbers

log = logging.getLogger(__name__)

FILE_LINK_TIMEOUT = 5.0


class ReviewRules(DependencyProvider):
    """Chains, working-day calendar and deadline settings, loaded and checked once at start: a
    broken file stops the service instead of misrouting work or miscounting deadlines. After start,
    the deadlines of pending items are brought in line with the (possibly updated) calendar."""

    def setup(self):
        config = self.container.config
        self.rules = domain.Rules.from_config(config)
        self.db_url = required(config, "DB_URL")
        this_year = utcnow().year
        for year in (this_year, this_year + 1):
            if not self.rules.calendar.covers(year):
                log.warning("the working-day calendar has no holiday list for %s (it covers %s): deadlines "
                            "reaching into %s count weekends and fixed-date holidays only",
                            year, sorted(self.rules.calendar.years), year)

    def start(self):
        self.container.spawn_managed_thread(self._recompute, identifier="ReviewRules.recompute_deadlines")

    def _recompute(self):
        factory = sessionmaker(engine_for(self.db_url), expire_on_commit=False)

        def transaction():
            return factory.begin()

        try:
            changed = domain.recompute_deadlines(transaction, self.rules)
        except Exception:
            log.exception("recomputing deadlines of pending items failed; they keep their stored deadlines")
            return
        if changed:
            log.info("calendar %s: deadlines of %d pending items recomputed", self.rules.calendar.fingerprint,
                     changed)

    def get_dependency(self, worker_ctx):
        return self.rules


def _caller(auth, *roles: str):
    """The caller, if their token carries one of ``roles``. A refusal names ``auth_token`` (the token's
    role is what is wrong): an error without a field reaches non-Python clients as the text "None"."""
    try:
        return auth.require(*roles)
    except errors.SwmsError as exc:
        if exc.code == errors.FORBIDDEN and exc.field is None:
            raise errors.SwmsError(errors.FORBIDDEN, "无权执行此操作（仅限审核人员）" if roles == (OFFICER,)
                                   else "无权执行此操作", "auth_token") from None
        raise


class ReviewService:
    name = "review"

    config = Config()
    numbers = CheckedNumbers(domain.NUMBERS)   # every numeric setting checked before anything starts
    db = Database()
    auth = Auth()
    rules = ReviewRules()
    relay = OutboxRelay(outbox)
    ops = OpsEndpoint(outbox)   # /healthz, /readyz, /metrics on OPS_PORT, for this process
    registration = RpcProxy("registration")
    profile = RpcProxy("profile")

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(None, HealthResponse)
    def health(self):
        return health.check(self.name, self.db, process=self.ops)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(QueueRequest, QueuePage)
    def list_queue(self, request: QueueRequest):
        officer = _caller(self.auth, OFFICER)
        now = utcnow()
        items, total, next_cursor = domain.queue(self.db.session, officer, request, self.rules, now)
        return QueuePage(items=[domain.item_out(item, self.rules, now) for item in items], page=request.page,
                         page_size=request.page_size,
                         total=None if total is None else min(total, domain.COUNT_LIMIT),
                         total_capped=total is not None and total > domain.COUNT_LIMIT, next_cursor=next_cursor)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(ItemRef, ItemDetail)
    def get_item(self, request: ItemRef):
        """One item with the application as submitted and short-lived links to its files."""
        officer = _caller(self.auth, OFFICER)
        now = utcnow()
        # Jurisdiction first: nothing is fetched for an officer who may not see the item.
        with self.db.transaction() as session:
            item = domain.item_for_officer(session, officer, request.item_id)
            item_out = domain.item_out(item, self.rules, now)
            trail = domain.trail(session, item.application_id)
            audit.record(session, officer.subject, "item.viewed", "review_item", item.item_id,
                         {"application_id": item.application_id, "level": item.level})
        # The snapshot is the registration service's, for services only: fetched with review's own token.
        self.auth.act_as_service()
        data = IssuanceData.model_validate(
            swms_rpc.call(self.registration.get_issuance_data, {"application_id": item_out.application_id}))
        form, stored = domain.submitted_form(data)
        return ItemDetail(item=item_out, form=form, files=self._file_links(item_out, stored), trail=trail)

    def _file_links(self, item: ReviewItemOut, stored: list[domain.StoredFile]) -> list[ItemFile]:
        """Links come from the service that owns each file (profile for the 个人信息表's photo and
        proofs, registration for continuing-education proofs), asked in parallel. A file whose link
        cannot be had now is still listed, with a note, so the officer knows it exists."""
        replies = []
        for file in stored:
            try:
                if file.owner == "registration":
                    replies.append(self.registration.get_proof_link.call_async(
                        {"application_id": item.application_id, "proof_key": file.key}))
                else:
                    replies.append(self.profile.get_file_link.call_async(
                        {"person_id": item.person_id, "file_key": file.key}))
            except Exception:
                log.warning("could not ask %s for a link", file.owner, exc_info=True)
                replies.append(None)
        links = []
        for file, reply in zip(stored, replies):
            link = None
            if reply is not None:
                try:
                    with eventlet.Timeout(FILE_LINK_TIMEOUT):
                        link = reply.result()
                except (Exception, eventlet.Timeout) as exc:
                    log.warning("no link for a %s of application %s: %s", file.kind, item.application_id,
                                type(exc).__name__)
            if link:
                links.append(ItemFile(kind=file.kind, label=file.label, url=link["url"],
                                      content_type=link.get("content_type"),
                                      expires_in_seconds=link.get("expires_in_seconds")))
            else:
                links.append(ItemFile(kind=file.kind, label=file.label, note="文件链接暂不可用，请稍后刷新"))
        return links

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(DecideRequest, DecisionResponse)
    def decide(self, request: DecideRequest):
        officer = _caller(self.auth, OFFICER)
        with self.db.transaction() as session:
            item, next_item = domain.decide(session, officer, request.item_id, request.decision,
                                            request.reason, self.rules)
        return DecisionResponse(item_id=item.item_id, application_id=item.application_id,
                                stage=domain.stage_of(item.step, item.chain_length), decision=request.decision,
                                decided_at=item.decided_at,
                                next_stage=domain.stage_of(next_item.step, next_item.chain_length)
                                if next_item else None)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(BatchApproveRequest, BatchDecisionResponse)
    def approve_batch(self, request: BatchApproveRequest):
        """批量审核通过: per-item results; each item audited and announced like a single decision."""
        officer = _caller(self.auth, OFFICER)
        domain.jurisdiction(officer)
        batch_id = str(uuid.uuid4())
        results = domain.approve_batch(self.db.transaction, officer, request.item_ids, request.reason,
                                       self.rules, batch_id)
        approved = sum(1 for result in results if result.ok)
        log.info("batch %s by %s: %d approved, %d refused", batch_id, officer.subject, approved,
                 len(results) - approved)
        return BatchDecisionResponse(batch_id=batch_id, approved=approved, failed=len(results) - approved,
                                     results=results)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(ItemRef, ItemAudit)
    def get_item_audit(self, request: ItemRef):
        """Every recorded action on one item: opened, viewed, decided (who, when, what, reason)."""
        caller = _caller(self.auth, OFFICER, ADMIN)
        return ItemAudit(item_id=request.item_id,
                         entries=domain.audit_entries(self.db.session, caller, request.item_id))

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(SummaryRequest, DeadlineSummary)
    def deadline_summary(self, request: SummaryRequest):
        """Pending, near-due and overdue items per region within the caller's jurisdiction."""
        caller = _caller(self.auth, OFFICER, ADMIN)
        return domain.summary(self.db.session, caller, request.group_by, self.rules)

    @on_event(ApplicationSubmitted, inbox)
    def on_application_submitted(self, session, event: ApplicationSubmitted):
        domain.accept_submission(session, event, self.rules)
