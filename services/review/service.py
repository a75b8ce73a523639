"""Review: officers' queues and decisions along the configured review chain."""
from __future__ import annotations

from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from nameko.rpc import rpc

from services.review import domain
from services.review.models import ReviewItem, inbox, outbox
from swms import errors, health
from swms.auth import OFFICER, Auth
from swms.config import required
from swms.contracts.common import HealthResponse
from swms.contracts.events import ApplicationSubmitted
from swms.contracts.review import (
    DecideRequest,
    DecisionResponse,
    QueuePage,
    QueueRequest,
)
from swms.contracts.review import (
    ReviewItem as ReviewItemOut,
)
from swms.db import Database
from swms.events import on_event
from swms.outbox import OutboxRelay
from swms.rpc import contract


class ReviewChains(DependencyProvider):
    """Loaded once at start; a broken chains file stops the service instead of misrouting work."""

    def setup(self):
        self.chains = domain.load_chains(required(self.container.config, "REVIEW_CHAINS_FILE"))

    def get_dependency(self, worker_ctx):
        return self.chains


def _item_out(item: ReviewItem) -> ReviewItemOut:
    return ReviewItemOut(item_id=item.item_id, application_id=item.application_id, person_id=item.person_id,
                         kind=item.kind, stage=domain.stage_of(item.step, item.chain_length),
                         region_code=item.region_code, applicant_name_masked=item.applicant_name_masked,
                         submitted_at=item.submitted_at, status=item.status, due_at=item.due_at)


class ReviewService:
    name = "review"

    config = Config()
    db = Database()
    auth = Auth()
    chains = ReviewChains()
    relay = OutboxRelay(outbox)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(None, HealthResponse)
    def health(self):
        return health.check(self.name, self.db)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(QueueRequest, QueuePage)
    def list_queue(self, request: QueueRequest):
        officer = self.auth.require(OFFICER)
        items, total = domain.queue(self.db.session, officer, request.kind.value if request.kind else None,
                                    request.page, request.page_size)
        return QueuePage(items=[_item_out(item) for item in items], page=request.page,
                         page_size=request.page_size, total=total)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(DecideRequest, DecisionResponse)
    def decide(self, request: DecideRequest):
        officer = self.auth.require(OFFICER)
        with self.db.transaction() as session:
            item, next_item = domain.decide(session, officer, request.item_id, request.decision,
                                            request.reason, self.chains)
        return DecisionResponse(item_id=item.item_id, application_id=item.application_id,
                                stage=domain.stage_of(item.step, item.chain_length), decision=request.decision,
                                decided_at=item.decided_at,
                                next_stage=domain.stage_of(next_item.step, next_item.chain_length)
                                if next_item else None)

    @on_event(ApplicationSubmitted, inbox)
    def on_application_submitted(self, session, event: ApplicationSubmitted):
        domain.accept_submission(session, event, self.chains)
