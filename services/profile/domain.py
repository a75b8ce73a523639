"""Profile rules in plain Python: saving basic information and the completeness check (系统校验)."""
from __future__ import annotations

from sqlalchemy.orm import Session

from services.profile.models import Profile, audit
from swms import idcard
from swms.contracts.identity import PersonResponse
from swms.contracts.profile import BasicInfoRequest
from swms.outbox import utcnow

EDITABLE_FIELDS = ("ethnicity", "education", "mobile", "address", "region_code", "unit_category",
                   "unit_name", "position")

# Items the completeness check reports, with the words the form shows.
REQUIRED_ITEMS = {
    "ethnicity": "民族", "education": "学历", "mobile": "手机号码", "address": "通讯地址",
    "region_code": "登记区域", "unit_category": "单位类别", "unit_name": "单位名称", "position": "职务",
    "truth_committed_at": "如实填写承诺",
}


def save_basic_info(session: Session, person: PersonResponse, form: BasicInfoRequest) -> Profile:
    now = utcnow()
    values = {name: getattr(form, name) for name in EDITABLE_FIELDS}
    values["unit_category"] = form.unit_category.value
    profile = session.get(Profile, person.person_id)
    if profile is None:
        resident = idcard.parse(person.id_number)
        profile = Profile(person_id=person.person_id, name=person.name, id_number=resident.number,
                          gender=resident.gender, birth_date=resident.birth_date, level=person.level.value,
                          management_number=person.management_number, exam_year=person.exam_year,
                          created_at=now, **values)
        session.add(profile)
        changed = sorted(values)
    else:
        changed = sorted(name for name, value in values.items() if getattr(profile, name) != value)
        for name in changed:
            setattr(profile, name, values[name])
    profile.truth_committed_at = now
    profile.updated_at = now
    session.flush()
    # Field names only: the audit trail must not become a second copy of personal data.
    audit.record(session, person.person_id, "profile.basic_info_saved", "profile", person.person_id,
                 {"changed_fields": changed})
    return profile


def missing_items(profile: Profile | None) -> list[str]:
    if profile is None:
        return list(REQUIRED_ITEMS.values())
    return [label for name, label in REQUIRED_ITEMS.items() if not getattr(profile, name)]
