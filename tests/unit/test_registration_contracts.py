"""Registration's request contracts at the RPC boundary (no broker): each bad value becomes one
SwmsError with a stable code, the field at fault and a Chinese message; and the inbound
learning-platform event's JSON Schema in docs/ is current."""
from __future__ import annotations

import pytest

from services.registration import cli
from swms import errors
from swms.contracts.registration import (
    ContinuingEducationRecorded,
    ReplacementDraftRequest,
    SubmitFirstRegistrationRequest,
    SubmitReRegistrationRequest,
)
from swms.rpc import parse

PROOF = "proofs/00000000-0000-4000-8000-000000000000/00000000-0000-4000-8000-000000000001"
COURSE = {"institution": "北京社会管理职业学院", "course": "个案管理", "start_date": "2026-05-01",
          "end_date": "2026-05-03", "hours": 12.5, "proof_key": PROOF}


def test_the_inbound_event_schema_in_docs_is_current():
    path = cli.event_schema_path()
    assert path.exists() and path.read_text(encoding="utf-8") == cli.event_schema_text(), \
        "run: python -m services.registration.cli export-event-schema"


@pytest.mark.parametrize("hours, message", [
    (-1, "学时须大于0"), (0, "学时须大于0"), ("12", "学时应为数字"), ("abc", "学时应为数字"), (True, "学时应为数字"),
    (None, "学时应为数字"), (1.25, "最多保留一位小数"), (200.5, "不能超过200"), (float("inf"), "学时应为数字"),
])
def test_hours_must_be_a_positive_number_with_one_decimal(hours, message):
    with pytest.raises(errors.SwmsError) as caught:
        parse(SubmitReRegistrationRequest, {"commitment": True, "offline_courses": [{**COURSE, "hours": hours}]})
    assert (caught.value.code, caught.value.field) == ("VALIDATION_FAILED", "offline_courses.0.hours")
    assert message in caught.value.message


def test_good_hours_are_kept_to_one_decimal():
    request = parse(SubmitReRegistrationRequest, {"commitment": True, "offline_courses": [
        {**COURSE, "hours": 12.5}, {**COURSE, "hours": 3}, {**COURSE, "hours": 0.1}]})
    assert [c.hours for c in request.offline_courses] == [12.5, 3.0, 0.1]


def test_typed_online_hours_have_their_own_code():
    with pytest.raises(errors.SwmsError) as caught:
        parse(SubmitReRegistrationRequest, {"commitment": True, "online_hours": 30})
    assert (caught.value.code, caught.value.field) == ("ONLINE_HOURS_NOT_TYPED", "online_hours")
    assert "自动填入" in caught.value.message


@pytest.mark.parametrize("number", ["1234567", "123456789", "1234567A", "１２３４５６７８", "1234 5678", "", "12345678\n9",
                                    12345678, "٠١٢٣٤٥٦٧"])
def test_original_no_is_exactly_eight_ascii_digits(number):
    with pytest.raises(errors.SwmsError) as caught:
        parse(ReplacementDraftRequest, {"original_certificate_no": number})
    assert (caught.value.code, caught.value.field) == ("ORIGINAL_NO_INVALID", "original_certificate_no")
    assert "8位数字" in caught.value.message


def test_original_no_accepts_eight_digits_and_trims():
    assert parse(ReplacementDraftRequest, {"original_certificate_no": " 01234567 "}).original_certificate_no == "01234567"


def test_validity_period_in_order_and_commitment_a_boolean():
    with pytest.raises(errors.SwmsError) as caught:
        parse(ReplacementDraftRequest, {"valid_from": "2025-01-01", "valid_until": "2025-01-01"})
    assert (caught.value.field, caught.value.message) == ("valid_until", "登记有效期止：有效期止须晚于有效期起")
    for value in ("true", 1, None):
        with pytest.raises(errors.SwmsError) as caught:
            parse(SubmitFirstRegistrationRequest, {"commitment": value})
        assert caught.value.field == "commitment"


def test_learning_event_refuses_bad_records():
    good = {"record_id": "L1", "person_id": "00000000-0000-4000-8000-000000000000", "course": "伦理",
            "provider": "平台", "hours": 2, "completed_on": "2026-01-01"}
    assert ContinuingEducationRecorded.model_validate(good).hours == 2.0
    for change in ({"hours": -2}, {"hours": "2"}, {"person_id": "110105199003071239"}, {"record_id": ""}):
        with pytest.raises(ValueError):
            ContinuingEducationRecorded.model_validate({**good, **change})
