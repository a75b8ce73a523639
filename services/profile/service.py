"""Profile: the personal information form (个人信息表) and its completeness check."""
from __future__ import annotations

from nameko.dependency_providers import Config
from nameko.rpc import RpcProxy, rpc

from services.profile import domain
from services.profile.models import Profile, outbox
from swms import errors, health, idcard
from swms import rpc as swms_rpc
from swms.auth import SERVICE, SOCIAL_WORKER, Auth
from swms.contracts.common import HealthResponse
from swms.contracts.identity import PersonResponse
from swms.contracts.profile import (
    BasicInfoRequest,
    CompletenessResponse,
    PersonRef,
    ProfileResponse,
    ProfileSnapshot,
)
from swms.db import Database
from swms.outbox import OutboxRelay
from swms.rpc import contract


def _response(profile: Profile) -> ProfileResponse:
    return ProfileResponse(
        person_id=profile.person_id, name=profile.name, id_number_masked=idcard.mask(profile.id_number),
        gender=profile.gender, birth_date=profile.birth_date, level=profile.level,
        management_number=profile.management_number, ethnicity=profile.ethnicity,
        education=profile.education, mobile=profile.mobile, address=profile.address,
        region_code=profile.region_code, unit_category=profile.unit_category, unit_name=profile.unit_name,
        position=profile.position, truth_committed_at=profile.truth_committed_at,
        updated_at=profile.updated_at)


class ProfileService:
    name = "profile"

    config = Config()
    db = Database()
    auth = Auth()
    relay = OutboxRelay(outbox)
    identity = RpcProxy("identity")

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(None, HealthResponse)
    def health(self):
        return health.check(self.name, self.db)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(BasicInfoRequest, ProfileResponse)
    def save_basic_info(self, form: BasicInfoRequest):
        caller = self.auth.require(SOCIAL_WORKER)
        # Name, ID number and level come from identity (the registry), never from the form.
        person = PersonResponse.model_validate(
            swms_rpc.call(self.identity.get_person, {"person_id": caller.subject}))
        with self.db.transaction() as session:
            profile = domain.save_basic_info(session, person, form)
        return _response(profile)

    def _readable_profile(self, person_id: str) -> Profile | None:
        """The person's form, if the caller may read it (themself, officers of their region, services)."""
        profile = self.db.session.get(Profile, person_id)
        self.auth.require_person(person_id, officer_region=profile.region_code if profile else None)
        return profile

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(PersonRef, ProfileResponse)
    def get_profile(self, request: PersonRef):
        profile = self._readable_profile(request.person_id)
        if profile is None:
            raise errors.not_found("个人信息表", "person_id")
        return _response(profile)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(PersonRef, CompletenessResponse)
    def check_completeness(self, request: PersonRef):
        missing = domain.missing_items(self._readable_profile(request.person_id))
        return CompletenessResponse(complete=not missing, missing=missing)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(PersonRef, ProfileSnapshot)
    def get_snapshot(self, request: PersonRef):
        """The copy a registration form takes, full ID number included: the person or a service."""
        caller = self.auth.require_person(request.person_id)
        if caller.role not in (SOCIAL_WORKER, SERVICE):
            raise errors.forbidden()
        profile = self.db.session.get(Profile, request.person_id)
        if profile is None:
            raise errors.not_found("个人信息表", "person_id")
        return ProfileSnapshot(
            person_id=profile.person_id, name=profile.name, id_number=profile.id_number,
            gender=profile.gender, birth_date=profile.birth_date, level=profile.level,
            management_number=profile.management_number, exam_year=profile.exam_year,
            region_code=profile.region_code, unit_category=profile.unit_category,
            unit_name=profile.unit_name, position=profile.position, photo_key=profile.photo_key)
