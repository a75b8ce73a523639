"""首次登记: who may register for the first time (the exam window; a lapsed registration
registers again without it). The form is the profile itself: nothing else to save."""
from __future__ import annotations

import datetime as dt


from services.registration.common import Standing, _refuse_unusable
from services.registration.models import REVOKED
from services.registration.policy import ProvincePolicy
from swms import errors
from swms.contracts.profile import ProfileSnapshot

def check_exam_window(exam_year: int, window_years: int, today: dt.date) -> None:
    """首次登记 within ``window_years`` of the exam: open until 31 December of exam_year + window."""
    if today > dt.date(exam_year + window_years, 12, 31):
        raise errors.SwmsError(
            errors.FIRST_REGISTRATION_WINDOW_CLOSED,
            f"首次登记须在考试通过后{window_years}年内申请（您的考试年度为{exam_year}年，受理截止"
            f"{exam_year + window_years}年12月31日），已超过期限，请咨询登记所在地民政部门",
            "exam_year")


def check_eligible(state: Standing, snapshot: ProfileSnapshot, policy: ProvincePolicy, today: dt.date) -> None:
    certificate = state.certificate
    if certificate is not None and certificate.status == REVOKED:
        _refuse_unusable(certificate)
    if certificate is not None and not state.lapsed:
        raise errors.SwmsError(errors.ALREADY_HOLDS_CERTIFICATE,
            f"您已持有有效的登记证书（{certificate.certificate_number}，有效期至{certificate.valid_until.isoformat()}），"
            f"无需首次登记；有效期届满前{policy.re_registration_window_months}个月内可申请再登记", "kind")
    if certificate is None:   # a lapsed registration registers again without the exam window
        check_exam_window(snapshot.exam_year, policy.first_registration_window_years, today)
