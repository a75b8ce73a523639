"""Profile: the personal information form (个人信息表) and its completeness check.

Entrypoints stay thin: parse (``@contract``) → authorise → fetch and check files (outside any
transaction) → domain rules in one transaction → tidy object storage after the commit.
"""
from __future__ import annotations

import datetime as dt
import logging
import uuid

from eventlet import tpool
from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from sqlalchemy import func, select

from services.profile import domain, media
from services.profile.files import NUMBERS, FileStore, Housekeeping, Settings
from services.profile.models import PHOTO, PROOF, Organisation, Profile, Upload, audit, inbox, outbox
from swms import errors, health, idcard, images
from swms import rpc as swms_rpc
from swms.auth import ADMIN, SERVICE, SOCIAL_WORKER, Auth
from swms.contracts.common import HealthResponse
from swms.contracts.events import ApplicationSubmitted, FilesHeld
from swms.contracts.identity import PersonResponse
from swms.contracts.profile import (
    BasicInfoRequest,
    ChangeResponse,
    CompletenessResponse,
    FileLink,
    FileRef,
    HonourRef,
    HonourRequest,
    HonourResponse,
    OrganisationPage,
    OrganisationSearchRequest,
    PersonReadRequest,
    PersonRef,
    PhotoLink,
    PhotoRef,
    PhotoResponse,
    ProfileResponse,
    ProfileSnapshot,
    UploadPurpose,
    UploadRef,
    UploadRequest,
    UploadTicket,
    WorkExperienceRef,
    WorkExperienceRequest,
    WorkExperienceResponse,
)
from swms.contracts.profile import Organisation as OrganisationOut
from swms.db import Database
from swms.events import on_events_grouped
from swms.grouping import Grouped
from swms.ops import OpsEndpoint
from swms.outbox import OutboxRelay, utcnow
from swms.queues import RpcProxy
from swms.rpc import contract, rpc
from swms.settings import CheckedNumbers
from swms.storage import ObjectStorage

log = logging.getLogger(__name__)


class ProfileSettings(DependencyProvider):
    def setup(self):
        self.settings = Settings.from_config(self.container.config)

    def get_dependency(self, worker_ctx):
        return self.settings


class ProfileService:
    name = "profile"

    config = Config()
    numbers = CheckedNumbers(NUMBERS)   # every numeric setting checked before anything starts
    db = Database()
    auth = Auth()
    bucket = ObjectStorage("PROFILE_S3_BUCKET")
    settings = ProfileSettings()
    relay = OutboxRelay(outbox)
    ops = OpsEndpoint(outbox)   # /healthz, /readyz, /metrics on OPS_PORT, for this process
    housekeeping = Housekeeping()
    identity = RpcProxy("identity")
    # Deliveries of one handler arriving together share a transaction (one group commit per handler:
    # a group runs its leader's handler on every item).
    held_groups = Grouped(max_size=50)
    submitted_groups = Grouped(max_size=50)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(None, HealthResponse)
    def health(self):
        return health.check(self.name, self.db, self.bucket, process=self.ops)

    # ---- helpers ------------------------------------------------------------------------------

    @property
    def files(self) -> FileStore:
        return FileStore(self.bucket)

    def _end_reads(self) -> None:
        """Close the read transaction before network I/O (a SQLite snapshot kept open across it
        would make the later write fail if another writer committed meanwhile)."""
        self.db.session.commit()

    def _writer(self) -> tuple[str, PersonResponse | None, Profile | None]:
        """The caller (a social worker: only the person edits their own form), their form if it
        exists, and otherwise what identity knows of them (the form is created from it)."""
        caller = self.auth.require(SOCIAL_WORKER)
        profile = self.db.session.get(Profile, caller.subject)
        self._end_reads()
        person = None
        if profile is None:
            person = PersonResponse.model_validate(
                swms_rpc.call(self.identity.get_person, {"person_id": caller.subject}))
        return caller.subject, person, profile

    def _readable_profile(self, person_id: str, access_reason: str | None, method: str, **detail) -> Profile | None:
        """The person's form, if the caller may read it (themself, officers of their region,
        services, an administrator naming why: that read is audited before anything is answered)."""
        profile = self.db.session.get(Profile, person_id)
        caller = self.auth.require_reader(person_id, profile.region_code if profile else None, access_reason)
        if caller.role == ADMIN and profile is not None:
            with self.db.transaction() as session:
                audit.read_by_admin(session, caller.subject, method, "profile", person_id, access_reason, **detail)
        return profile

    def _stage(self, person_id: str, upload_id: str, purpose: UploadPurpose, field: str) -> domain.StagedFile:
        """Fetch and check an uploaded file; copy it to its final key. Refused files are deleted."""
        upload = self.db.session.get(Upload, upload_id)
        if (upload is None or upload.person_id != person_id or upload.purpose != purpose.value
                or upload.consumed_at is not None or upload.expires_at < utcnow()):
            raise errors.SwmsError(errors.UPLOAD_NOT_FOUND, "上传不存在、已使用或已过期，请重新上传", field)
        object_key, max_bytes = upload.object_key, upload.max_bytes
        self._end_reads()
        what = "照片" if purpose == UploadPurpose.PHOTO else "证明材料"
        arrived = self.files.read(object_key, max_bytes)
        if arrived is None:
            raise errors.SwmsError(errors.UPLOAD_MISSING, f"{what}尚未上传完成，请上传后再提交", field)
        size, data = arrived
        if size > max_bytes or len(data) > max_bytes:
            self._refuse_upload(upload_id, object_key)
            raise errors.SwmsError(errors.FILE_TOO_LARGE,
                                   f"{what}不能超过{max_bytes // 1024}KB（收到{max(size, len(data)) // 1024}KB）",
                                   field)
        try:
            if purpose == UploadPurpose.PHOTO:
                facts = tpool.execute(media.inspect_photo, data, self.settings.photo_tolerance_percent, field)
                content_type, width, height, label = facts.content_type, facts.width, facts.height, facts.photo_size
            else:
                content_type = tpool.execute(media.inspect_proof, data, field)
                width = height = label = None
        except errors.SwmsError:
            self._refuse_upload(upload_id, object_key)
            raise
        if content_type in (media.JPEG, media.PNG):   # stored without EXIF (GPS etc.), upright
            data = images.without_metadata(data, content_type)
        folder = "photos" if purpose == UploadPurpose.PHOTO else "proofs"
        key = f"{folder}/{person_id}/{uuid.uuid4()}.{media.EXTENSIONS[content_type]}"
        with self.db.transaction() as session:   # first say where the copy goes (see Upload.staged_key)
            upload = session.get(Upload, upload_id)
            if upload is None or upload.consumed_at is not None:
                raise errors.SwmsError(errors.UPLOAD_NOT_FOUND, "上传不存在、已使用或已过期，请重新上传", field)
            upload.staged_key = key
        digest = self.files.put(key, data, content_type)
        return domain.StagedFile(upload_id=upload_id, file_key=key, content_type=content_type,
                                 size_bytes=len(data), sha256=digest, incoming_key=object_key,
                                 width=width, height=height, photo_size=label)

    def _refuse_upload(self, upload_id: str, object_key: str) -> None:
        """A refused file is not kept, nor its ticket: nothing of it stays stored."""
        self.files.delete(object_key)
        with self.db.transaction() as session:
            upload = session.get(Upload, upload_id)
            if upload is not None and upload.consumed_at is None:
                session.delete(upload)

    def _discard(self, staged: list[domain.StagedFile]) -> None:
        for file in staged:
            self.files.delete(file.file_key)

    def _after_commit(self, staged: list[domain.StagedFile], retired: list[str]) -> None:
        for file in staged:
            self.files.delete(file.incoming_key)
        self.housekeeping.purge(retired)

    def _response(self, profile: Profile) -> ProfileResponse:
        session = self.db.session
        org = session.get(Organisation, profile.unit_directory_id) if profile.unit_directory_id else None
        return ProfileResponse(
            person_id=profile.person_id, name=profile.name, id_number_masked=idcard.mask(profile.id_number),
            gender=profile.gender, birth_date=profile.birth_date, level=profile.level,
            management_number=profile.management_number, ethnicity=profile.ethnicity,
            political_status=profile.political_status, education=profile.education, major=profile.major,
            mobile=profile.mobile, email=profile.email, address=profile.address,
            province_code=profile.province_code, city_code=profile.city_code, region_code=profile.region_code,
            unit_category=profile.unit_category, unit_directory_id=profile.unit_directory_id,
            unit_credit_code=org.credit_code if org else None, unit_name=profile.unit_name,
            position=profile.position, truth_committed_at=profile.truth_committed_at,
            updated_at=profile.updated_at, photo=domain.photo_info(session, profile),
            work_experiences=domain.work_experiences(session, profile.person_id),
            honours=domain.honours(session, profile.person_id), revision=profile.revision)

    # ---- basic information and photo ----------------------------------------------------------

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(BasicInfoRequest, ProfileResponse)
    def save_basic_info(self, form: BasicInfoRequest):
        person_id, person, profile = self._writer()
        if person is None and form.email is None and not profile.email:
            # The contact email defaults to the account's, which identity holds.
            person = PersonResponse.model_validate(
                swms_rpc.call(self.identity.get_person, {"person_id": person_id}))
        with self.db.transaction() as session:
            profile = domain.ensure_profile(session, person_id, person)
            domain.save_basic_info(session, profile, form, person.email if person else None, person_id)
        return self._response(profile)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(UploadRequest, UploadTicket)
    def request_upload(self, request: UploadRequest):
        caller = self.auth.require(SOCIAL_WORKER)
        settings = self.settings
        max_bytes = settings.photo_max_bytes if request.purpose == UploadPurpose.PHOTO else settings.proof_max_bytes
        upload_id = str(uuid.uuid4())
        key = f"incoming/{caller.subject}/{upload_id}"
        now = utcnow()
        expires_at = now + dt.timedelta(seconds=settings.upload_ttl_seconds)
        with self.db.transaction() as session:
            open_count = session.execute(select(func.count()).select_from(Upload).where(
                Upload.person_id == caller.subject, Upload.consumed_at.is_(None),
                Upload.expires_at >= now)).scalar_one()
            if open_count >= settings.max_open_uploads:
                raise errors.SwmsError(errors.LIMIT_EXCEEDED, "未完成的上传过多，请稍后再试", "purpose")
            session.add(Upload(upload_id=upload_id, person_id=caller.subject, purpose=request.purpose.value,
                               object_key=key, max_bytes=max_bytes, created_at=now, expires_at=expires_at))
        form = self.files.upload_form(key, max_bytes, settings.upload_ttl_seconds)
        accepted = ["image/jpeg", "image/png"] + (["application/pdf"] if request.purpose == UploadPurpose.PROOF else [])
        return UploadTicket(upload_id=upload_id, url=form["url"], fields=form["fields"], max_bytes=max_bytes,
                            accepted_types=accepted, expires_at=expires_at.replace(tzinfo=dt.UTC),
                            expires_in_seconds=settings.upload_ttl_seconds)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(UploadRef, PhotoResponse)
    def confirm_photo(self, request: UploadRef):
        """The uploaded file becomes the form's ID photo, once its content passes the checks."""
        person_id, person, _ = self._writer()
        staged = self._stage(person_id, request.upload_id, UploadPurpose.PHOTO, "upload_id")
        try:
            with self.db.transaction() as session:
                profile = domain.ensure_profile(session, person_id, person)
                change = domain.set_photo(session, profile, staged, person_id)
                photo = domain.photo_info(session, profile)
        except BaseException:
            self._discard([staged])
            raise
        self._after_commit([staged], change.retired)
        return PhotoResponse(person_id=person_id, revision=change.revision, photo=photo)

    # ---- work experience and honours ----------------------------------------------------------

    def _birth_date(self, person: PersonResponse | None, profile: Profile | None) -> dt.date:
        return profile.birth_date if profile is not None else idcard.parse(person.id_number).birth_date

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(WorkExperienceRequest, WorkExperienceResponse)
    def save_work_experience(self, request: WorkExperienceRequest):
        """Adds (no ``experience_id``) or replaces one 工作经历 of the caller's own form."""
        person_id, person, profile = self._writer()
        # Every rule that needs no file first, so bad input never costs a file copy.
        domain.check_work_experience(self.db.session, profile, self._birth_date(person, profile), request)
        self._end_reads()
        staged: list[domain.StagedFile] = []
        try:
            for index, upload_id in enumerate(request.proof_upload_ids):
                staged.append(self._stage(person_id, upload_id, UploadPurpose.PROOF, f"proof_upload_ids.{index}"))
            with self.db.transaction() as session:
                profile = domain.ensure_profile(session, person_id, person)
                row, change = domain.save_work_experience(session, profile, request, staged, person_id)
                experience = domain.work_experience(session, row)
        except BaseException:
            self._discard(staged)
            raise
        self._after_commit(staged, change.retired)
        return WorkExperienceResponse(person_id=person_id, revision=change.revision, experience=experience)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(WorkExperienceRef, ChangeResponse)
    def delete_work_experience(self, request: WorkExperienceRef):
        caller = self.auth.require(SOCIAL_WORKER)
        with self.db.transaction() as session:
            profile = session.get(Profile, caller.subject)
            if profile is None:
                raise errors.not_found("工作经历", "experience_id")
            change = domain.delete_work_experience(session, profile, request.experience_id, caller.subject)
        self._after_commit([], change.retired)
        return ChangeResponse(person_id=caller.subject, revision=change.revision)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(HonourRequest, HonourResponse)
    def save_honour(self, request: HonourRequest):
        """Adds (no ``honour_id``) or replaces one 个人荣誉 of the caller's own form."""
        person_id, person, profile = self._writer()
        domain.check_honour(self.db.session, profile, self._birth_date(person, profile), request)
        self._end_reads()
        staged: list[domain.StagedFile] = []
        try:
            if request.proof_upload_id is not None:
                staged.append(self._stage(person_id, request.proof_upload_id, UploadPurpose.PROOF, "proof_upload_id"))
            with self.db.transaction() as session:
                profile = domain.ensure_profile(session, person_id, person)
                row, change = domain.save_honour(session, profile, request, staged[0] if staged else None, person_id)
                honour = domain.honour(session, row)
        except BaseException:
            self._discard(staged)
            raise
        self._after_commit(staged, change.retired)
        return HonourResponse(person_id=person_id, revision=change.revision, honour=honour)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(HonourRef, ChangeResponse)
    def delete_honour(self, request: HonourRef):
        caller = self.auth.require(SOCIAL_WORKER)
        with self.db.transaction() as session:
            profile = session.get(Profile, caller.subject)
            if profile is None:
                raise errors.not_found("个人荣誉", "honour_id")
            change = domain.delete_honour(session, profile, request.honour_id, caller.subject)
        self._after_commit([], change.retired)
        return ChangeResponse(person_id=caller.subject, revision=change.revision)

    # ---- reading ------------------------------------------------------------------------------

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(PersonReadRequest, ProfileResponse)
    def get_profile(self, request: PersonReadRequest):
        profile = self._readable_profile(request.person_id, request.access_reason, "get_profile")
        if profile is None:
            raise errors.not_found("个人信息表", "person_id")
        return self._response(profile)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(PersonReadRequest, CompletenessResponse)
    def check_completeness(self, request: PersonReadRequest):
        profile = self._readable_profile(request.person_id, request.access_reason, "check_completeness")
        items = domain.check_items(self.db.session, profile)
        return CompletenessResponse(complete=not items, missing=[item.label for item in items], items=items)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(PersonRef, ProfileSnapshot)
    def get_snapshot(self, request: PersonRef):
        """The copy a registration form takes, full ID number included: the person or a service."""
        caller = self.auth.require_person(request.person_id)
        if caller.role not in (SOCIAL_WORKER, SERVICE):
            raise errors.forbidden()
        with self.db.transaction() as session:
            profile = session.get(Profile, request.person_id)
            if profile is None:
                raise errors.not_found("个人信息表", "person_id")
            return domain.snapshot(session, profile)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(PhotoRef, PhotoLink)
    def get_photo_link(self, request: PhotoRef):
        """A short-lived GET link to a photo a snapshot named (services: certificate rendering).
        Signed for the internal storage address: the calling service fetches it, not a browser."""
        self.auth.require(SERVICE)
        row = domain.file_for_reading(self.db.session, request.person_id, request.photo_key)
        if row.kind != PHOTO:
            raise errors.not_found("照片", "photo_key")
        ttl = self.settings.link_ttl_seconds
        return PhotoLink(url=self.files.link(row.file_key, row.content_type, ttl, public=False),
                         content_type=row.content_type, expires_in_seconds=ttl)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(FileRef, FileLink)
    def get_file_link(self, request: FileRef):
        """A short-lived link to the person's photo or a proof file, for a browser: the person,
        officers of the person's region (reviewers look at proof material), services, an
        administrator naming why (audited)."""
        self._readable_profile(request.person_id, request.access_reason, "get_file_link", file_key=request.file_key)
        row = domain.file_for_reading(self.db.session, request.person_id, request.file_key)
        ttl = self.settings.link_ttl_seconds
        kind = PHOTO if row.kind == PHOTO else PROOF
        log.info("file link for person %s (%s) issued", request.person_id, kind)
        return FileLink(url=self.files.link(row.file_key, row.content_type, ttl, public=True),
                        content_type=row.content_type, expires_in_seconds=ttl)

    # ---- events -------------------------------------------------------------------------------

    @on_events_grouped(FilesHeld, inbox, "held_groups")
    def on_files_held(self, session, events: list[FilesHeld]):
        """Registration needs these files until ``held_until`` (a certificate; a submission's hold
        before submissions carried it, and holds announced again)."""
        self._hold(session, [(event, event) for event in events])

    @on_events_grouped(ApplicationSubmitted, inbox, "submitted_groups")
    def on_application_submitted(self, session, events: list[ApplicationSubmitted]):
        """The submitted version's photo and proofs, kept for its retention period."""
        self._hold(session, [(event, event.files_held) for event in events if event.files_held is not None])

    def _hold(self, session, holds: list[tuple]) -> None:
        """Each (event, its hold) of the deliveries arriving together, held together."""
        if not holds:
            return
        missing = domain.hold_files_many(session, [domain.Hold(event.person_id, hold.holder, hold.file_keys,
                                                               hold.held_until) for event, hold in holds],
                                         actor=holds[0][0].source)
        for (event, hold), gone in zip(holds, missing):
            if gone:
                # Only if the hold came later than the grace period allows (docs/operations.md).
                log.error("files_held %s (%s): %d file(s) already deleted", event.event_id, hold.holder, len(gone))

    # ---- directory of social-work service organisations ---------------------------------------

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(OrganisationSearchRequest, OrganisationPage)
    def search_organisations(self, request: OrganisationSearchRequest):
        self.auth.require()  # any signed-in caller
        rows, total = domain.search_organisations(self.db.session, request.name, request.region_code,
                                                  request.page, request.page_size)
        return OrganisationPage(items=[OrganisationOut(org_id=row.org_id, credit_code=row.credit_code,
                                                       name=row.name, region_code=row.region_code)
                                       for row in rows],
                                total=total, page=request.page, page_size=request.page_size)
