"""Profile rules in plain Python over a SQLAlchemy session: the form's parts, its files, the
directory of social-work service organisations, the completeness check (系统校验) and snapshots.

Nothing here talks to object storage or other services: the service layer fetches and checks
uploaded files first (outside any transaction), then calls these functions inside one
transaction, then tidies object storage after the commit.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from dataclasses import dataclass, field

from sqlalchemy import and_, bindparam, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from services.profile import codes
from services.profile.models import (
    ACTIVE,
    DELETING,
    LEGACY_HOLDER,
    PHOTO,
    PROOF,
    RETIRED,
    FileHold,
    HonourRow,
    Organisation,
    Profile,
    StoredFile,
    Upload,
    WorkExperienceRow,
    audit,
    outbox,
)
from swms import errors, idcard
from swms.db import Upsert
from swms.text import SPACES
from swms.text import problem as text_problem
from swms.contracts.common import UnitCategory
from swms.contracts.events import ProfileChanged
from swms.contracts.identity import PersonResponse
from swms.contracts.profile import (
    ETHNICITIES,
    BasicInfoRequest,
    CompletenessItem,
    Education,
    Honour,
    HonourRequest,
    PhotoInfo,
    PoliticalStatus,
    ProfileSnapshot,
    WorkExperience,
    WorkExperienceRequest,
)
from swms.outbox import utcnow

SWO = UnitCategory.SOCIAL_WORK_ORGANISATION.value
MAX_WORK_EXPERIENCES = 50
MAX_HONOURS = 50
MAX_PROOFS_PER_ITEM = 10
WORKING_AGE = 16          # 《劳动法》: no employment under 16

BASIC_FIELDS = ("ethnicity", "political_status", "education", "major", "mobile", "email", "address",
                "province_code", "city_code", "region_code", "unit_category", "unit_directory_id",
                "unit_name", "position")

# Items the completeness check reports, in form order, with the words the form shows.
REQUIRED_ITEMS = {
    "ethnicity": "民族", "political_status": "政治面貌", "education": "学历", "major": "所学专业",
    "mobile": "手机号码", "email": "电子邮箱", "address": "通讯地址", "region_code": "登记区域",
    "unit_category": "单位类别", "unit_name": "单位名称", "position": "职务", "photo": "照片",
    "truth_committed_at": "如实填写承诺",
}


@dataclass
class StagedFile:
    """A checked file already copied to its final key (by the service layer), not yet recorded."""
    upload_id: str
    file_key: str
    content_type: str
    size_bytes: int
    sha256: str
    incoming_key: str
    width: int | None = None
    height: int | None = None
    photo_size: str | None = None


@dataclass
class Change:
    """The outcome of a change: the new revision and the files retired by it (deleted after the
    commit if no snapshot ever named them; otherwise by housekeeping once nothing needs them)."""
    revision: int
    retired: list[str] = field(default_factory=list)


# ---- the profile row, revisions, events, audit --------------------------------------------------

def ensure_profile(session: Session, person_id: str, person: PersonResponse | None) -> Profile:
    """The person's form, created with what identity knows on their first change."""
    profile = session.get(Profile, person_id)
    if profile is not None:
        return profile
    if person is None:
        raise errors.not_found("人员", "person_id")
    resident = idcard.parse(person.id_number)
    now = utcnow()
    profile = Profile(person_id=person.person_id, name=person.name, id_number=resident.number,
                      gender=resident.gender, birth_date=resident.birth_date, level=person.level.value,
                      management_number=person.management_number, exam_year=person.exam_year,
                      revision=0, created_at=now, updated_at=now)
    try:
        with session.begin_nested():
            session.add(profile)
    except IntegrityError:  # created by a concurrent first change of the same person
        profile = session.get(Profile, person_id, populate_existing=True)
        if profile is None:
            raise
    return profile


def _bump(session: Session, profile: Profile) -> int:
    """Revision + 1 as one UPDATE: on PostgreSQL it also locks the row, so changes of one
    person's form run one after another."""
    table = Profile.__table__
    now = utcnow()
    revision = session.execute(update(table).where(table.c.person_id == profile.person_id)
                               .values(revision=table.c.revision + 1, updated_at=now)
                               .returning(table.c.revision)).scalar_one()
    set_committed_value(profile, "revision", revision)
    set_committed_value(profile, "updated_at", now)
    return revision


def _changed(session: Session, profile: Profile, actor: str, action: str, parts: list[str],
             detail: dict) -> int:
    revision = _bump(session, profile)
    # Field names and ids only: the audit trail must not become a second copy of personal data.
    audit.record(session, actor, action, "profile", profile.person_id, {**detail, "revision": revision})
    outbox.add(session, ProfileChanged(person_id=profile.person_id, parts=parts, revision=revision))
    return revision


# ---- units --------------------------------------------------------------------------------------

def resolve_unit(session: Session, category: str, directory_id: str | None, typed_name: str | None,
                 current: bool = True) -> tuple[str | None, str]:
    """(directory id, unit name) under the rule: a 社会工作服务机构 is chosen from the directory,
    any other unit is typed. ``current``: the unit must still be registered (not for past jobs)."""
    if category == SWO:
        if directory_id is None:
            raise errors.SwmsError(errors.UNIT_MUST_BE_CHOSEN,
                                   "单位类别为社会工作服务机构时，单位须从系统目录中选择，不能手工填写",
                                   "unit_name" if typed_name else "unit_directory_id")
        org = session.get(Organisation, directory_id)
        if org is None or (current and not org.active):
            raise errors.SwmsError(errors.UNIT_NOT_IN_DIRECTORY, "所选单位不在社会工作服务机构目录中，请重新选择",
                                   "unit_directory_id")
        if typed_name is not None and typed_name != org.name:
            raise errors.SwmsError(errors.UNIT_MUST_BE_CHOSEN,
                                   "单位类别为社会工作服务机构时，单位名称以目录为准，不能手工填写", "unit_name")
        return org.org_id, org.name
    if directory_id is not None:
        raise errors.validation_error("unit_directory_id",
                                      "目录中只有社会工作服务机构；其他类别的单位请手工填写单位名称")
    if typed_name is None:
        raise errors.validation_error("unit_name", "单位名称为必填项")
    registered = session.execute(select(Organisation.org_id).where(Organisation.name == typed_name,
                                                                   Organisation.active)).first()
    if registered is not None:
        raise errors.SwmsError(errors.UNIT_MUST_BE_CHOSEN,
                               "该单位是登记在册的社会工作服务机构：请将单位类别选为社会工作服务机构，并从目录中选择",
                               "unit_name")
    return None, typed_name


# ---- basic information --------------------------------------------------------------------------

def save_basic_info(session: Session, profile: Profile, form: BasicInfoRequest, default_email: str | None,
                    actor: str) -> Change:
    region = codes.region(form.region_code, form.province_code, form.city_code)
    directory_id, unit_name = resolve_unit(session, form.unit_category.value, form.unit_directory_id,
                                           form.unit_name)
    email = form.email or profile.email or default_email
    if not email:
        raise errors.validation_error("email", "电子邮箱为必填项")
    values = {
        "ethnicity": form.ethnicity, "political_status": form.political_status.value,
        "education": form.education.value, "major": form.major, "mobile": form.mobile, "email": email,
        "address": form.address, "province_code": region.province_code, "city_code": region.city_code,
        "region_code": region.county_code, "unit_category": form.unit_category.value,
        "unit_directory_id": directory_id, "unit_name": unit_name, "position": form.position,
    }
    changed = sorted(name for name, value in values.items() if getattr(profile, name) != value)
    for name in changed:
        setattr(profile, name, values[name])
    profile.truth_committed_at = utcnow()
    if changed:
        revision = _changed(session, profile, actor, "profile.basic_info_saved", ["basic_info"],
                            {"changed_fields": changed})
    else:
        revision = profile.revision
        audit.record(session, actor, "profile.truth_commitment_renewed", "profile", profile.person_id,
                     {"changed_fields": [], "revision": revision})
    session.flush()
    return Change(revision)


# ---- files --------------------------------------------------------------------------------------

def _record_file(session: Session, person_id: str, staged: StagedFile, kind: str, owner_id: str | None) -> None:
    now = utcnow()
    upload = session.get(Upload, staged.upload_id, with_for_update=True)
    if upload is None or upload.consumed_at is not None:
        # Consumed by a concurrent request between the check and this transaction.
        raise errors.SwmsError(errors.UPLOAD_NOT_FOUND, "该上传已使用或已过期，请重新上传", "upload_id")
    upload.consumed_at = now
    upload.consumed_as = staged.file_key
    session.add(StoredFile(file_key=staged.file_key, person_id=person_id, kind=kind, owner_id=owner_id,
                           content_type=staged.content_type, size_bytes=staged.size_bytes,
                           width=staged.width, height=staged.height, sha256=staged.sha256,
                           status=ACTIVE, created_at=now))


def _retire(session: Session, keys: list[str]) -> list[str]:
    if keys:
        session.execute(update(StoredFile).where(StoredFile.file_key.in_(keys))
                        .values(status=RETIRED, retired_at=utcnow()))
    return list(keys)


# ---- keeping and deleting files (the retention rule, docs/operations.md) ----------------------------
#
# A file is kept while the form has it (active), while a hold has not ended (a submitted application
# version, an issued certificate: FileHold), and, once a snapshot has named it, for the grace period
# after it left the form (a submission in flight may still name it and announce its hold). Anything
# else is deleted by housekeeping, object first, then the row, audited.

def _needed(now: dt.datetime, grace: dt.timedelta):
    """SQL condition: something besides the form still needs the file (a hold, or the grace period)."""
    held = select(FileHold.file_key).where(FileHold.file_key == StoredFile.file_key,
                                           or_(FileHold.held_until.is_(None), FileHold.held_until > now)).exists()
    in_grace = and_(StoredFile.referenced_at.is_not(None), StoredFile.retired_at > now - grace)
    return or_(held, in_grace)


def unneeded_files(session: Session, now: dt.datetime, grace: dt.timedelta, limit: int) -> list[str]:
    """Retired files nothing needs any more, and files whose deletion was begun and not finished."""
    return list(session.execute(
        select(StoredFile.file_key).where(or_(StoredFile.status == DELETING,
                                              and_(StoredFile.status == RETIRED, ~_needed(now, grace))))
        .order_by(StoredFile.retired_at).limit(limit)).scalars())


def claim_for_deletion(session: Session, key: str, now: dt.datetime, grace: dt.timedelta) -> bool:
    """Marks a retired file ``deleting`` if nothing needs it; False (the caller rolls back) if
    something does. The claim is written first and the rule checked after it, in the same
    transaction: the write takes the row lock (PostgreSQL) or the database's write lock (SQLite), so a
    hold recorded concurrently (:func:`hold_files` locks the row too) is either seen here or finds
    the file ``deleting``: never a hold on a deleted file."""
    row = session.get(StoredFile, key, populate_existing=True)
    if row is None or row.status not in (RETIRED, DELETING):
        return False
    if row.status == DELETING:          # claimed by an earlier pass that did not finish
        return True
    claimed = session.execute(update(StoredFile).where(StoredFile.file_key == key, StoredFile.status == RETIRED)
                              .values(status=DELETING)).rowcount == 1
    return claimed and session.execute(select(StoredFile.file_key).where(
        StoredFile.file_key == key, _needed(now, grace))).first() is None


def forget_file(session: Session, key: str, actor: str = "housekeeping") -> None:
    """After its object is deleted: the row and its (ended) holds go, and the deletion is audited."""
    row = session.get(StoredFile, key, populate_existing=True)
    if row is None or row.status != DELETING:
        return
    holders = list(session.execute(select(FileHold.holder).where(FileHold.file_key == key)).scalars())
    session.execute(delete(FileHold).where(FileHold.file_key == key))
    session.delete(row)
    audit.record(session, actor, "profile.file_deleted", "profile", row.person_id,
                 {"file_key": key, "kind": row.kind, "retired_at": row.retired_at,
                  "snapshotted": row.referenced_at is not None, "holds_ended": sorted(holders)})


def _naive_utc(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _hold_upsert(insert):
    """Every hold of an event in one statement: new holds inserted, an existing one extended only
    to a later end (never shortened, never from "until released" to an end)."""
    table = FileHold.__table__
    statement = insert(table)
    extends = and_(table.c.held_until.is_not(None),
                   or_(statement.excluded.held_until.is_(None), statement.excluded.held_until > table.c.held_until))
    return statement.on_conflict_do_update(
        index_elements=[table.c.file_key, table.c.holder],
        set_={"held_until": statement.excluded.held_until, "updated_at": statement.excluded.updated_at},
        where=extends)


# Built once (every registration submission sends a hold): Core, no ORM objects per file.
_HOLD_UPSERT = Upsert(_hold_upsert, ["file_key", "holder", "person_id", "held_until", "created_at", "updated_at"])
_FILES = StoredFile.__table__
_FILES_TO_HOLD = (select(_FILES.c.file_key, _FILES.c.person_id, _FILES.c.status)
                  .where(_FILES.c.file_key.in_(bindparam("keys", expanding=True)))
                  .order_by(_FILES.c.file_key)      # one lock order for every holder
                  .with_for_update())


@dataclass(frozen=True)
class Hold:
    """``holder`` needs these files of the person until ``until`` (None: until released)."""
    person_id: str
    holder: str
    keys: list[str]
    until: dt.datetime | None


def hold_files(session: Session, person_id: str, holder: str, keys: list[str], until: dt.datetime | None,
               actor: str) -> list[str]:
    """One hold (see :func:`hold_files_many`); returns the keys that could not be held."""
    return hold_files_many(session, [Hold(person_id, holder, keys, until)], actor)[0]


def hold_files_many(session: Session, holds: list[Hold], actor: str) -> list[list[str]]:
    """Each hold's files are held until its end (a later end extends a hold, an earlier one never
    shortens it). Returns, per hold, the keys that are gone already (deleted, being deleted, or not
    the person's): those cannot be held.

    Three statements whatever the number of holds and files: the files read and locked (so
    housekeeping's :func:`claim_for_deletion` either sees the hold or the hold finds the file
    ``deleting``), the holds written in one upsert, one audit row per hold."""
    now = utcnow()
    wanted = [sorted(set(hold.keys)) for hold in holds]
    owners = {row.file_key: row.person_id
              for row in session.execute(_FILES_TO_HOLD, {"keys": sorted(set().union(*wanted))})
              if row.status != DELETING}
    rows: dict[tuple[str, str], dict] = {}
    entries, missing_per_hold = [], []
    for hold, keys in zip(holds, wanted):
        until = _naive_utc(hold.until)
        held = [key for key in keys if owners.get(key) == hold.person_id]
        missing = [key for key in keys if owners.get(key) != hold.person_id]
        for key in held:
            row = rows.get((key, hold.holder))
            if row is None:
                rows[key, hold.holder] = {"file_key": key, "holder": hold.holder, "person_id": hold.person_id,
                                          "held_until": until, "created_at": now, "updated_at": now}
            elif row["held_until"] is not None and (until is None or until > row["held_until"]):
                # The same hold twice in one statement: PostgreSQL updates a row once per statement,
                # so the upsert's rule (the later end wins) is applied here first.
                row["held_until"] = until
        entries.append((actor, "profile.files_held", "profile", hold.person_id,
                        {"holder": hold.holder, "file_keys": held, "held_until": until, "missing": missing}))
        missing_per_hold.append(missing)
    if rows:
        _HOLD_UPSERT.execute(session, [rows[pair] for pair in sorted(rows)])
    audit.record_many(session, entries)
    return missing_per_hold


def release_legacy_holds(session: Session, actor: str) -> int:
    """Ends the holds the upgrade to file holds gave every file a snapshot had named (migration
    0004), once registration has announced the holds of every submitted version."""
    count = session.execute(delete(FileHold).where(FileHold.holder == LEGACY_HOLDER)).rowcount
    audit.record(session, actor, "profile.legacy_holds_released", "holds", LEGACY_HOLDER, {"released": count})
    return count


def set_photo(session: Session, profile: Profile, staged: StagedFile, actor: str) -> Change:
    _record_file(session, profile.person_id, staged, PHOTO, None)
    previous = profile.photo_key
    profile.photo_key = staged.file_key
    retired = _retire(session, [previous] if previous else [])
    revision = _changed(session, profile, actor, "profile.photo_replaced" if previous else "profile.photo_added",
                        ["photo"], {"changed_fields": ["photo"], "photo_key": staged.file_key,
                                    "previous_photo_key": previous})
    session.flush()
    return Change(revision, retired)


def photo_info(session: Session, profile: Profile) -> PhotoInfo | None:
    if not profile.photo_key:
        return None
    row = session.get(StoredFile, profile.photo_key)
    if row is None:
        return None
    from services.profile.media import nearest_photo_size
    return PhotoInfo(photo_key=row.file_key, content_type=row.content_type, width=row.width or 0,
                     height=row.height or 0, size_bytes=row.size_bytes,
                     photo_size=nearest_photo_size(row.width or 0, row.height or 0), uploaded_at=row.created_at)


def active_proofs(session: Session, owner_id: str) -> list[str]:
    return list(session.execute(select(StoredFile.file_key).where(
        StoredFile.owner_id == owner_id, StoredFile.kind == PROOF, StoredFile.status == ACTIVE)
        .order_by(StoredFile.created_at, StoredFile.file_key)).scalars())


def file_for_reading(session: Session, person_id: str, key: str) -> StoredFile:
    row = session.get(StoredFile, key)
    if row is None or row.person_id != person_id or row.status == DELETING:
        raise errors.not_found("文件", "file_key")
    return row


# ---- work experience ----------------------------------------------------------------------------

def _add_years(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def _own_experience(session: Session, person_id: str, experience_id: str) -> WorkExperienceRow:
    row = session.get(WorkExperienceRow, experience_id)
    if row is None or row.person_id != person_id:
        raise errors.not_found("工作经历", "experience_id")
    return row


def check_work_experience(session: Session, profile: Profile | None, person_birth: dt.date,
                          request: WorkExperienceRequest) -> None:
    """Every rule that needs no file content: run before any upload is fetched, and again inside
    the transaction (:func:`save_work_experience`)."""
    if request.experience_id is not None:
        if profile is None:
            raise errors.not_found("工作经历", "experience_id")
        _own_experience(session, profile.person_id, request.experience_id)
    elif profile is not None:
        count = session.execute(select(func.count()).select_from(WorkExperienceRow)
                                .where(WorkExperienceRow.person_id == profile.person_id)).scalar_one()
        if count >= MAX_WORK_EXPERIENCES:
            raise errors.SwmsError(errors.LIMIT_EXCEEDED, f"工作经历最多{MAX_WORK_EXPERIENCES}条", "experience_id")
    earliest = _add_years(person_birth, WORKING_AGE)
    if request.start_date < earliest:
        raise errors.SwmsError(errors.DATE_INVALID, f"开始日期不能早于年满{WORKING_AGE}周岁之日（{earliest}）",
                               "start_date")
    if request.end_date is not None and request.end_date < request.start_date:
        raise errors.SwmsError(errors.DATE_INVALID, "结束日期不能早于开始日期", "end_date")
    resolve_unit(session, request.unit_category.value, request.unit_directory_id, request.unit_name,
                 current=request.end_date is None)
    _check_proof_counts(session, request.experience_id, request.proof_keys, len(request.proof_upload_ids),
                        request.sanqu_programme or request.qianshou_programme)


def _check_proof_counts(session: Session, owner_id: str | None, keep: list[str], new: int, required: bool) -> None:
    if len(set(keep)) != len(keep):
        raise errors.validation_error("proof_keys", "证明材料重复")
    owned = set(active_proofs(session, owner_id)) if owner_id else set()
    foreign = [key for key in keep if key not in owned]
    if foreign:
        raise errors.SwmsError(errors.NOT_FOUND, "要保留的证明材料不属于该工作经历", "proof_keys")
    total = len(keep) + new
    if required and total == 0:
        raise errors.SwmsError(errors.PROOF_REQUIRED,
                               "参与三区计划或牵手计划（选“是”）须上传至少一份证明材料（PDF、JPEG或PNG）",
                               "proof_upload_ids")
    if not required and total:
        raise errors.validation_error("proof_upload_ids",
                                      "未参与三区计划或牵手计划时不需要证明材料，请勿上传")
    if total > MAX_PROOFS_PER_ITEM:
        raise errors.SwmsError(errors.LIMIT_EXCEEDED, f"每条工作经历最多{MAX_PROOFS_PER_ITEM}份证明材料",
                               "proof_upload_ids")


def save_work_experience(session: Session, profile: Profile, request: WorkExperienceRequest,
                         staged: list[StagedFile], actor: str) -> tuple[WorkExperienceRow, Change]:
    check_work_experience(session, profile, profile.birth_date, request)
    directory_id, unit_name = resolve_unit(session, request.unit_category.value, request.unit_directory_id,
                                           request.unit_name, current=request.end_date is None)
    now = utcnow()
    values = {"unit_category": request.unit_category.value, "unit_directory_id": directory_id,
              "unit_name": unit_name, "position": request.position, "start_date": request.start_date,
              "end_date": request.end_date, "description": request.description,
              "sanqu_programme": request.sanqu_programme, "qianshou_programme": request.qianshou_programme}
    if request.experience_id is None:
        row = WorkExperienceRow(experience_id=str(uuid.uuid4()), person_id=profile.person_id,
                                created_at=now, updated_at=now, **values)
        session.add(row)
        session.flush()
        changed, action, removed = sorted(values), "profile.work_experience_added", []
    else:
        row = _own_experience(session, profile.person_id, request.experience_id)
        changed = sorted(name for name, value in values.items() if getattr(row, name) != value)
        for name in changed:
            setattr(row, name, values[name])
        row.updated_at = now
        removed = [key for key in active_proofs(session, row.experience_id) if key not in request.proof_keys]
        action = "profile.work_experience_updated"
    for file in staged:
        _record_file(session, profile.person_id, file, PROOF, row.experience_id)
    if removed or staged:
        changed.append("proof_keys")
    retired = _retire(session, removed)
    revision = _changed(session, profile, actor, action, ["work_experience"],
                        {"experience_id": row.experience_id, "changed_fields": changed,
                         "proofs_added": len(staged), "proofs_removed": len(removed)})
    session.flush()
    return row, Change(revision, retired)


def delete_work_experience(session: Session, profile: Profile, experience_id: str, actor: str) -> Change:
    row = _own_experience(session, profile.person_id, experience_id)
    retired = _retire(session, active_proofs(session, experience_id))
    session.delete(row)
    revision = _changed(session, profile, actor, "profile.work_experience_deleted", ["work_experience"],
                        {"experience_id": experience_id, "proofs_removed": len(retired)})
    session.flush()
    return Change(revision, retired)


def work_experience(session: Session, row: WorkExperienceRow) -> WorkExperience:
    return WorkExperience(
        experience_id=row.experience_id, unit_category=row.unit_category, unit_name=row.unit_name,
        unit_directory_id=row.unit_directory_id, position=row.position, start_date=row.start_date,
        end_date=row.end_date, description=row.description or "", sanqu_programme=row.sanqu_programme,
        qianshou_programme=row.qianshou_programme, proof_keys=active_proofs(session, row.experience_id))


def work_experiences(session: Session, person_id: str) -> list[WorkExperience]:
    rows = session.execute(select(WorkExperienceRow).where(WorkExperienceRow.person_id == person_id)
                           .order_by(WorkExperienceRow.start_date.desc(), WorkExperienceRow.created_at)).scalars()
    return [work_experience(session, row) for row in rows]


# ---- honours ------------------------------------------------------------------------------------

def _own_honour(session: Session, person_id: str, honour_id: str) -> HonourRow:
    row = session.get(HonourRow, honour_id)
    if row is None or row.person_id != person_id:
        raise errors.not_found("个人荣誉", "honour_id")
    return row


def check_honour(session: Session, profile: Profile | None, person_birth: dt.date, request: HonourRequest) -> None:
    if request.honour_id is not None:
        if profile is None:
            raise errors.not_found("个人荣誉", "honour_id")
        _own_honour(session, profile.person_id, request.honour_id)
    elif profile is not None:
        count = session.execute(select(func.count()).select_from(HonourRow)
                                .where(HonourRow.person_id == profile.person_id)).scalar_one()
        if count >= MAX_HONOURS:
            raise errors.SwmsError(errors.LIMIT_EXCEEDED, f"个人荣誉最多{MAX_HONOURS}条", "honour_id")
    if request.awarded_on < person_birth:
        raise errors.SwmsError(errors.DATE_INVALID, "获得日期不能早于出生日期", "awarded_on")
    if request.proof_key is not None and request.proof_upload_id is not None:
        raise errors.validation_error("proof_upload_id", "证明材料只能保留原有的或上传新的，二者选一")
    if request.proof_key is not None:
        owned = set(active_proofs(session, request.honour_id)) if request.honour_id else set()
        if request.proof_key not in owned:
            raise errors.SwmsError(errors.NOT_FOUND, "要保留的证明材料不属于该荣誉", "proof_key")


def save_honour(session: Session, profile: Profile, request: HonourRequest, staged: StagedFile | None,
                actor: str) -> tuple[HonourRow, Change]:
    check_honour(session, profile, profile.birth_date, request)
    now = utcnow()
    values = {"title": request.title, "level": request.level.value, "awarding_body": request.awarding_body,
              "awarded_on": request.awarded_on}
    if request.honour_id is None:
        row = HonourRow(honour_id=str(uuid.uuid4()), person_id=profile.person_id, created_at=now,
                        updated_at=now, **values)
        session.add(row)
        session.flush()
        changed, action, removed = sorted(values), "profile.honour_added", []
    else:
        row = _own_honour(session, profile.person_id, request.honour_id)
        changed = sorted(name for name, value in values.items() if getattr(row, name) != value)
        for name in changed:
            setattr(row, name, values[name])
        row.updated_at = now
        removed = [key for key in active_proofs(session, row.honour_id) if key != request.proof_key]
        action = "profile.honour_updated"
    if staged is not None:
        _record_file(session, profile.person_id, staged, PROOF, row.honour_id)
    if removed or staged:
        changed.append("proof_key")
    retired = _retire(session, removed)
    revision = _changed(session, profile, actor, action, ["honours"],
                        {"honour_id": row.honour_id, "changed_fields": changed})
    session.flush()
    return row, Change(revision, retired)


def delete_honour(session: Session, profile: Profile, honour_id: str, actor: str) -> Change:
    row = _own_honour(session, profile.person_id, honour_id)
    retired = _retire(session, active_proofs(session, honour_id))
    session.delete(row)
    revision = _changed(session, profile, actor, "profile.honour_deleted", ["honours"],
                        {"honour_id": honour_id, "proofs_removed": len(retired)})
    session.flush()
    return Change(revision, retired)


def honour(session: Session, row: HonourRow) -> Honour:
    proofs = active_proofs(session, row.honour_id)
    return Honour(honour_id=row.honour_id, title=row.title, level=row.level, awarding_body=row.awarding_body,
                  awarded_on=row.awarded_on, proof_key=proofs[0] if proofs else None)


def honours(session: Session, person_id: str) -> list[Honour]:
    rows = session.execute(select(HonourRow).where(HonourRow.person_id == person_id)
                           .order_by(HonourRow.awarded_on.desc(), HonourRow.created_at)).scalars()
    return [honour(session, row) for row in rows]


# ---- completeness (系统校验) and snapshots ---------------------------------------------------------

def _item(name: str, code: str, message: str | None = None, label: str | None = None) -> CompletenessItem:
    label = label or REQUIRED_ITEMS[name]
    return CompletenessItem(field=name, label=label, code=code,
                            message=message or f"{label}为必填项，尚未填写")


def check_items(session: Session, profile: Profile | None) -> list[CompletenessItem]:
    """Each missing or invalid item of the form, in form order; empty when complete."""
    if profile is None:
        return [_item(name, "MISSING") for name in REQUIRED_ITEMS]
    items: list[CompletenessItem] = []
    for name in REQUIRED_ITEMS:
        if name == "photo":
            photo = session.get(StoredFile, profile.photo_key) if profile.photo_key else None
            if photo is None or photo.status != ACTIVE:
                items.append(_item("photo", "MISSING", "请上传一寸或二寸证件照（JPEG或PNG，不超过500KB）"))
            continue
        if not getattr(profile, name):
            items.append(_item(name, "MISSING"))
            continue
        problem = _invalid_basic_value(session, profile, name)
        if problem:
            items.append(_item(name, "INVALID", f"{REQUIRED_ITEMS[name]}：{problem}"))
    for experience in work_experiences(session, profile.person_id):
        where = f"work_experiences.{experience.experience_id}"
        label = f"工作经历（{experience.unit_name}）"
        if (experience.sanqu_programme or experience.qianshou_programme) and not experience.proof_keys:
            items.append(CompletenessItem(field=f"{where}.proof_keys", label=label, code="INVALID",
                                          message=f"{label}：参与三区计划或牵手计划须上传证明材料"))
        if experience.unit_category == SWO and not experience.unit_directory_id:
            items.append(CompletenessItem(field=f"{where}.unit_name", label=label, code="INVALID",
                                          message=f"{label}：社会工作服务机构须从目录中选择"))
    return items


def _invalid_basic_value(session: Session, profile: Profile, name: str) -> str | None:
    """Values saved before today's rules (or a unit since struck from the directory)."""
    value = getattr(profile, name)
    if name == "ethnicity" and value not in ETHNICITIES:
        return "请从民族列表中选择"
    if name == "political_status" and value not in {item.value for item in PoliticalStatus}:
        return "请从列表中选择"
    if name == "education" and value not in {item.value for item in Education}:
        return "请从学历列表中选择"
    if name == "region_code":
        try:
            codes.region(value)
        except errors.SwmsError as exc:
            return exc.message
    if name == "unit_name" and profile.unit_category == SWO:
        org = session.get(Organisation, profile.unit_directory_id) if profile.unit_directory_id else None
        if org is None:
            return "社会工作服务机构须从系统目录中选择"
        if not org.active:
            return "所选机构已不在社会工作服务机构目录中，请重新选择"
    return None


def snapshot(session: Session, profile: Profile) -> ProfileSnapshot:
    """What a registration form copies, under the row lock that changes of this form take, so no
    change slips between. Files it names for the first time get ``referenced_at``: a submission may
    now name them, so they are kept for the grace period after they leave the form. This pins
    nothing for longer (a draft or a preview asks too): a submission announces its own hold."""
    session.execute(select(Profile.person_id).where(Profile.person_id == profile.person_id).with_for_update())
    session.refresh(profile)
    if not all((profile.region_code, profile.unit_category, profile.unit_name, profile.position)):
        raise errors.SwmsError(errors.PROFILE_INCOMPLETE, "个人信息表的基础信息尚未保存", "person_id")
    session.execute(update(StoredFile).where(StoredFile.person_id == profile.person_id,
                                             StoredFile.status == ACTIVE,
                                             StoredFile.referenced_at.is_(None))
                    .values(referenced_at=utcnow()))
    return ProfileSnapshot(
        person_id=profile.person_id, name=profile.name, id_number=profile.id_number,
        gender=profile.gender, birth_date=profile.birth_date, level=profile.level,
        management_number=profile.management_number, exam_year=profile.exam_year,
        region_code=profile.region_code, unit_category=profile.unit_category,
        unit_name=profile.unit_name, position=profile.position, photo_key=profile.photo_key,
        work_experiences=work_experiences(session, profile.person_id),
        honours=honours(session, profile.person_id), revision=profile.revision)


# ---- the directory of social-work service organisations -----------------------------------------

@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


_COLUMNS = {
    "credit_code": ("credit_code", "统一社会信用代码"),
    "name": ("name", "机构名称", "名称", "单位名称"),
    "region_code": ("region_code", "所在地区代码", "行政区划代码", "登记管理机关代码"),
    "status": ("status", "状态", "登记状态"),
}
_INACTIVE = {"注销", "撤销", "吊销", "inactive", "deregistered"}
_ACTIVE = {"", "正常", "存续", "成立", "active"}


def read_directory_file(data: bytes) -> list[dict[str, str]]:
    """CSV in UTF-8 (with or without BOM) or GB18030, columns by English or Chinese header."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise errors.validation_error("file", "文件须为UTF-8或GB18030编码的CSV")
    reader = csv.DictReader(io.StringIO(text))
    headers = {(name or "").strip(): name for name in (reader.fieldnames or [])}
    mapping = {}
    for key, names in _COLUMNS.items():
        found = next((headers[name] for name in names if name in headers), None)
        if found is not None:
            mapping[key] = found
    for key in ("credit_code", "name"):
        if key not in mapping:
            raise errors.validation_error("file", f"CSV缺少列：{'/'.join(_COLUMNS[key])}")
    # Only spaces are trimmed: a line break or tab in a value is refused by the text policy, not cut.
    return [{key: (row.get(column) or "").strip(SPACES) for key, column in mapping.items()} for row in reader]


def import_organisations(session: Session, rows: list[dict[str, str]], actor: str = "cli") -> ImportReport:
    """Adds or updates by 统一社会信用代码; each bad row is reported with its line (header = 1)."""
    report = ImportReport()
    seen: set[str] = set()
    now = utcnow()
    for line, row in enumerate(rows, start=2):
        try:
            code = codes.credit_code(row.get("credit_code", ""))
        except ValueError as exc:
            report.rejected.append((line, str(exc)))
            continue
        name = row.get("name", "")
        found = text_problem(name)      # the name is printed on certificates as the work unit
        if not name or len(name) > 100 or found is not None:
            report.rejected.append((line, found.message("机构名称") if found else "机构名称为空或过长"))
            continue
        region_code = row.get("region_code") or code[2:8]
        if len(region_code) != 6 or not region_code.isdigit() or region_code[:2] not in codes.MAINLAND_PROVINCES:
            report.rejected.append((line, f"所在地区代码{region_code}不正确"))
            continue
        status = row.get("status", "")
        if status not in _ACTIVE and status not in _INACTIVE:
            report.rejected.append((line, f"状态“{status}”不认识（正常/存续 或 注销/撤销）"))
            continue
        if code in seen:
            report.rejected.append((line, f"统一社会信用代码{code}在文件中重复"))
            continue
        seen.add(code)
        active = status not in _INACTIVE
        existing = session.execute(select(Organisation).where(Organisation.credit_code == code)).scalar_one_or_none()
        if existing is None:
            session.add(Organisation(org_id=str(uuid.uuid4()), credit_code=code, name=name,
                                     region_code=region_code, active=active, imported_at=now, updated_at=now))
            report.added += 1
        elif (existing.name, existing.region_code, existing.active) == (name, region_code, active):
            report.unchanged += 1
        else:
            existing.name, existing.region_code, existing.active, existing.updated_at = name, region_code, active, now
            report.updated += 1
    session.flush()
    audit.record(session, actor, "profile.directory_imported", "directory", "organisations",
                 {"added": report.added, "updated": report.updated, "unchanged": report.unchanged,
                  "rejected": len(report.rejected)})
    return report


def search_organisations(session: Session, name: str | None, region_code: str | None, page: int,
                         page_size: int) -> tuple[list[Organisation], int]:
    query = select(Organisation).where(Organisation.active)
    if name:
        escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(or_(Organisation.name.like(f"%{escaped}%", escape="\\"),
                                Organisation.credit_code == name.upper()))
    if region_code:
        query = query.where(Organisation.region_code.like(codes.region_prefix(region_code) + "%"))
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = session.execute(query.order_by(Organisation.name, Organisation.credit_code)
                           .offset((page - 1) * page_size).limit(page_size)).scalars().all()
    return list(rows), total
