"""Domain rules of the services, in plain Python on an in-memory SQLite database (no broker)."""
import dataclasses
import datetime as dt

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from swms import errors


def session_for(models_module) -> Session:
    engine = create_engine("sqlite://")
    models_module.metadata.create_all(engine)
    return Session(engine)


# ---- identity ---------------------------------------------------------------------------------
from services.identity import domain as identity_domain  # noqa: E402
from services.identity import models as identity_models


@pytest.mark.parametrize("typed, registered", [
    ("欧阳・娜仁", "欧阳·娜仁"), ("欧阳•娜仁", "欧阳·娜仁"), (" 李 明华 ", "李明华"), ("ＬＩ　Ｍｉｎｇ", "LIMing"),
])
def test_name_normalisation(typed, registered):
    assert identity_domain.normalise_name(typed) == identity_domain.normalise_name(registered)


def test_registry_import_reports_each_bad_row_and_is_idempotent():
    rows = [
        {"name": "李明华", "id_number": "110105199003071239", "level": "社会工作师", "management_number": "1",
         "exam_year": "2026", "province": "11"},
        {"name": "坏号码", "id_number": "360426199101010072", "level": "社会工作师", "management_number": "2",
         "exam_year": "2026", "province": "36"},
        {"name": "无级别", "id_number": "11010519491231002X", "level": "中级", "management_number": "3",
         "exam_year": "2026", "province": "11"},
        {"name": "", "id_number": "440524188001010014", "level": "社会工作师", "management_number": "4",
         "exam_year": "2026", "province": "44"},
        {"name": "李明华改", "id_number": "110105199003071239", "level": "社会工作师", "management_number": "1",
         "exam_year": "2026", "province": "11"},
    ]
    with session_for(identity_models) as session:
        first = identity_domain.import_passers(session, rows)
        again = identity_domain.import_passers(session, rows[:1])
    assert first.added == 1
    assert [line for line, _ in first.rejected] == [3, 4, 5, 6]
    reasons = dict(first.rejected)
    assert "check" in reasons[3] and "unknown level" in reasons[4] and "name" in reasons[5]
    assert "conflicts" in reasons[6]
    assert (again.added, again.unchanged) == (0, 1)


def test_registry_file_in_gb18030():
    text = "name,id_number,level,management_number,exam_year,province\n李明华,110105199003071239,社会工作师,1,2026,11\n"
    rows = identity_domain.read_registry_file(text.encode("gb18030"))
    assert rows[0]["name"] == "李明华"
    assert identity_domain.read_registry_file(("\ufeff" + text).encode("utf-8"))[0]["name"] == "李明华"


# ---- registration -----------------------------------------------------------------------------
from services.registration import domain as registration_domain  # noqa: E402
from swms.contracts.common import ApplicationStatus as S  # noqa: E402


def test_exam_window():
    registration_domain.check_exam_window(2025, 1, dt.date(2026, 12, 31))
    with pytest.raises(errors.SwmsError) as caught:
        registration_domain.check_exam_window(2025, 1, dt.date(2027, 1, 1))
    assert caught.value.code == "FIRST_REGISTRATION_WINDOW_CLOSED"


@pytest.mark.parametrize("current, target, allowed", [
    (S.INITIAL_REVIEW, S.FINAL_REVIEW, True),
    (S.INITIAL_REVIEW, S.INITIAL_REJECTED, True),
    (S.FINAL_REVIEW, S.ISSUED, True),
    (S.INITIAL_REJECTED, S.INITIAL_REVIEW, True),
    (S.ISSUED, S.ISSUED_PENDING_UPGRADE, True),
    (S.FINAL_REVIEW, S.INITIAL_REVIEW, False),
    (S.ISSUED, S.INITIAL_REVIEW, False),
    (S.INITIAL_REJECTED, S.ISSUED, False),
])
def test_first_registration_transitions(current, target, allowed):
    assert (target in registration_domain.FIRST_REGISTRATION_TRANSITIONS[current]) is allowed


# ---- review -----------------------------------------------------------------------------------
from services.review import domain as review_domain  # noqa: E402
from swms.contracts.review import Stage  # noqa: E402


def test_thirty_working_days_skip_weekends_and_holidays():
    friday = dt.datetime(2026, 11, 27, 9, 0)
    assert review_domain.add_working_days(friday, 1) == dt.datetime(2026, 11, 30, 9, 0)  # Monday
    assert review_domain.add_working_days(friday, 30) == dt.datetime(2027, 1, 8, 9, 0)
    holiday = frozenset({dt.date(2027, 1, 1)})
    assert review_domain.add_working_days(friday, 30, holiday) == dt.datetime(2027, 1, 11, 9, 0)


def test_chains_default_and_province_override(tmp_path):
    path = tmp_path / "chains.yaml"
    path.write_text("default:\n  first_registration: [county, province]\n  replacement: [county]\n"
                    "'44':\n  first_registration: [city, province]\n")
    chains = review_domain.load_chains(path)
    assert review_domain.chain_for(chains, "first_registration", "440305") == ["city", "province"]
    assert review_domain.chain_for(chains, "first_registration", "110105") == ["county", "province"]
    assert review_domain.chain_for(chains, "replacement", "440305") == ["county"]


def test_chain_with_unknown_level_is_refused(tmp_path):
    path = tmp_path / "chains.yaml"
    path.write_text("default:\n  first_registration: [county, ministry]\n")
    with pytest.raises(ValueError, match="levels"):
        review_domain.load_chains(path)


def test_stage_names():
    assert review_domain.stage_of(0, 2) == Stage.INITIAL
    assert review_domain.stage_of(1, 2) == Stage.FINAL
    assert review_domain.stage_of(1, 3) == Stage.INTERMEDIATE
    assert review_domain.stage_of(0, 1) == Stage.INITIAL


# ---- certificate ------------------------------------------------------------------------------
from services.certificate import domain as certificate_domain  # noqa: E402
from services.certificate import models as certificate_models
from services.certificate.render import CertificateFace, TextRefused, certificate_html  # noqa: E402


def test_numbers_are_sequential_per_scope_and_never_reused():
    with session_for(certificate_models) as session:
        numbers = [certificate_domain.next_number(session, "11", 2026, "社会工作师") for _ in range(3)]
        other = certificate_domain.next_number(session, "44", 2026, "助理社会工作师")
    assert numbers == ["1120262000001", "1120262000002", "1120262000003"]
    assert other == "4420261000001"


def test_validity_handles_29_february():
    assert certificate_domain.add_years(dt.date(2028, 2, 29), 3) == dt.date(2031, 2, 28)


def test_certificate_html_escapes_what_people_typed_and_refuses_markup():
    face = CertificateFace("1120262000001", "李明华", "男", "110105199003071239", "社会工作师",
                           "A & B 社工站", "民政部", dt.date(2026, 1, 1), dt.date(2028, 12, 31),
                           dt.date(2026, 1, 1), "https://verify.example/1120262000001")
    page = certificate_html(face)
    assert "A &amp; B 社工站" in page
    with pytest.raises(TextRefused):
        certificate_html(dataclasses.replace(face, holder_name="<b>李</b>"))
    assert "<svg" in page  # the QR code
