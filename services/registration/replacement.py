"""更换电子证 (a paper certificate exchanged for an electronic one, reviewed by the county) and
升级换证 (a certificate issued again at the level the person has risen to): who may apply, and
the replacement form (the paper certificate's details)."""
from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.registration.common import Standing, _form, _lapsed_error, _refuse_unusable, add_years
from services.registration.models import Application, audit
from services.registration.policy import ProvincePolicy
from swms import errors
from swms.contracts.common import ApplicationKind as K
from swms.contracts.common import ApplicationStatus as S
from swms.contracts.common import Level
from swms.contracts.profile import ProfileSnapshot
from swms.contracts.registration import ReplacementDetails
from swms.outbox import utcnow


def check_replacement_eligible(state: Standing) -> None:
    if state.ever_held:
        raise errors.SwmsError(errors.REPLACEMENT_NOT_NEEDED,
            "您已在本系统取得电子登记证书，无需更换电子证；更换电子证仅适用于持有纸质登记证书的人员", "kind")


def check_upgrade_eligible(state: Standing) -> None:
    certificate = state.certificate
    if state.pending_raise is None or certificate is None:
        raise errors.SwmsError(errors.NOT_PENDING_UPGRADE,
            "您当前没有待升级的证书（已出证待升级）：职业水平等级提升后系统会自动标记，届时可申请按新等级换发证书",
            "kind")
    _refuse_unusable(certificate)
    if state.lapsed:
        raise _lapsed_error(certificate)


def effective_snapshot(kind: K, snapshot: ProfileSnapshot, state: Standing) -> ProfileSnapshot:
    """An upgrade is issued at the new level with the new management number, from the registry's
    level raise, even if the profile has not caught up yet."""
    if kind == K.UPGRADE and state.pending_raise is not None:
        return snapshot.model_copy(update={"level": Level(state.pending_raise.new_level),
                                           "management_number": state.pending_raise.management_number})
    return snapshot


def stored_replacement(application: Application) -> ReplacementDetails:
    return ReplacementDetails.model_validate(_form(application).get("replacement") or {})


def save_form(session: Session, application: Application, changes: dict, snapshot: ProfileSnapshot,
              actor: str) -> Application:
    """``changes``: the fields the applicant sent; the others keep their saved values."""
    details = stored_replacement(application).model_copy(update=changes)
    if details.valid_from and details.valid_until and details.valid_until <= details.valid_from:
        field = "valid_until" if "valid_until" in changes else "valid_from"
        raise errors.validation_error(field, f"登记有效期止（{details.valid_until.isoformat()}）须晚于有效期起"
                                             f"（{details.valid_from.isoformat()}），请按纸质证书核对")
    application.form = json.dumps({"replacement": details.model_dump(mode="json")}, ensure_ascii=False)
    application.original_no_key = (snapshot.region_code[:2] + details.original_certificate_no
                                   if details.original_certificate_no else None)
    application.updated_at = utcnow()
    audit.record(session, actor, "application.form_saved", "application", application.application_id,
                 {"fields": sorted(changes), "original_certificate_no": details.original_certificate_no})
    return application


def check_replacement(session: Session, person_id: str, details: ReplacementDetails,
                      region_code: str, policy: ProvincePolicy, today: dt.date) -> None:
    required = {"original_certificate_no": "请填写原证书编号（NO）：证书第一页底部的8位数字",
                "registration_type": "请选择登记类型", "valid_from": "请填写登记有效期起",
                "valid_until": "请填写登记有效期止"}
    for field, message in required.items():
        if getattr(details, field) is None:
            raise errors.validation_error(field, message)
    if details.valid_from > today:
        raise errors.validation_error("valid_from", "登记有效期起不能晚于今天，请按纸质证书填写")
    longest = add_years(details.valid_from, policy.registration_validity_years)
    if details.valid_until > longest:
        raise errors.validation_error(
            "valid_until", f"登记有效期不能超过{policy.registration_validity_years}年，请按纸质证书核对有效期止")
    if details.valid_until < today:
        raise errors.SwmsError(errors.ORIGINAL_EXPIRED,
            f"原登记证书已于{details.valid_until.isoformat()}到期，不能更换电子证书；请咨询登记所在地民政部门重新办理登记",
            "valid_until")
    key = region_code[:2] + details.original_certificate_no
    taken = session.execute(
        select(func.count()).select_from(Application).where(
            Application.original_no_key == key, Application.person_id != person_id,
            Application.status.not_in([S.NOT_REGISTERED.value, S.REJECTED.value]))
    ).scalar_one()
    if taken:
        raise errors.SwmsError(errors.ORIGINAL_NO_IN_USE,
                               "该原证书编号（NO）已被他人用于更换电子证书，请核对；如有疑问请咨询登记所在地民政部门",
                               "original_certificate_no")
