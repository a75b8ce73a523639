"""Identity's rules in plain Python on an in-memory SQLite database (no broker)."""
from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from services.identity import domain, passwords, registry
from services.identity import feedback as feedback_rules
from services.identity.models import Account, EmailConfirmation, Passer, PasswordReset, RefreshToken, metadata, outbox, throttle
from services.identity.redact import RedactIdNumbers, mask_id_numbers
from services.identity.settings import Limit, Settings, derive_hash_key
from swms import errors
from swms.auth import OFFICER, Caller
from swms.contracts.identity import name_key, name_problem
from swms.idcard import check_character
from swms.outbox import utcnow

SETTINGS = Settings(hash_key=derive_hash_key(b"k" * 32))
THIS_YEAR = dt.date.today().year


def valid_id(first17: str) -> str:
    return first17 + check_character(first17)


def session() -> Session:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    return Session(engine)


def row(name="李明华", id_number="110105199003071239", level="社会工作师", number="202611000000123456",
        year=str(THIS_YEAR), province="11"):
    return {"name": name, "id_number": id_number, "level": level, "management_number": number,
            "exam_year": year, "province": province}


def events(db: Session, event_type: str) -> list[dict]:
    rows = db.execute(select(outbox.table.c.payload).where(outbox.table.c.event_type == event_type)).scalars()
    return [json.loads(payload) for payload in rows]


# ---- names ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("typed, registered", [
    ("欧阳・娜仁", "欧阳·娜仁"), ("欧阳•娜仁", "欧阳·娜仁"), ("欧阳 娜仁", "欧阳·娜仁"), ("欧阳娜仁", "欧阳·娜仁"),
    (" 李 明华 ", "李明华"), ("李明华\u3000", "李明华"), ("ＬＩ　Ｍｉｎｇ", "Li Ming"), ("阿依古丽.艾买提", "阿依古丽·艾买提"), ("阿依古丽．艾买提", "阿依古丽·艾买提"),
])
def test_name_variants_share_one_key(typed, registered):
    assert name_key(typed) == name_key(registered)


@pytest.mark.parametrize("name, allowed", [
    ("李明华", True), ("欧阳·娜仁", True), ("𠮷田", True), ("Li Ming", True), ("阿卜杜拉·买买提", True),
    ("李明华😀", False), ("<b>李</b>", False), ("李'; DROP TABLE passers;--", False), ("李明2", False),
    ("   ", False), ("··", False), ("李" * 51, False), ("", False),
])
def test_what_a_name_may_contain(name, allowed):
    assert (name_problem(name) is None) is allowed


# ---- passwords ------------------------------------------------------------------------------------

@pytest.mark.parametrize("password, context", [
    ("Swms-demo-2026!", {"id_number": "110105199003071239", "email": "liminghua@example.cn"}),
    ("County-officer-1", {"email": "county@example.gov.cn"}),
    ("Province-officer-1", {"email": "province@example.gov.cn"}),
    ("Strong-pass-1", {"id_number": "110105199003071239", "email": "li@example.cn"}),
])
def test_the_walkthrough_passwords_pass_the_rule(password, context):
    assert passwords.problem(password, 10, **context) is None


@pytest.mark.parametrize("password, context, fragment", [
    ("Short-1a", {}, "至少 10 位"),
    ("alllowercaseletters", {}, "三类"),
    ("Aaaaaaaaaa1", {}, "过于简单"),
    ("Password-2026", {}, "常见"),
    ("Qwerty123456!", {}, "常见"),
    ("Xy-110105199003071239", {"id_number": "110105199003071239"}, "身份证号"),
    ("Born-19900307x", {"id_number": "110105199003071239"}, "出生日期"),
])
def test_weak_passwords_are_refused_with_the_reason(password, context, fragment):
    with pytest.raises(errors.SwmsError) as caught:
        passwords.check(password, 10, **context)
    assert caught.value.code == "PASSWORD_TOO_WEAK" and caught.value.field == "password"
    assert fragment in caught.value.message


# ---- registry import ----------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, reason", [
    ({"id_number": "360426199101010072"}, "check character"),
    ({"id_number": "11010519900307123"}, "length"),
    ({"id_number": valid_id("11010520990307123")}, "birth date"),
    ({"id_number": "11010519901307123X"}, "not a real date"),
    ({"level": "中级社会工作师"}, "unknown level"),
    ({"name": ""}, "missing field(s): name"),
    ({"management_number": "  "}, "missing field(s): management_number"),
    ({"name": "<script>"}, "bad name"),
    ({"management_number": "2026-001"}, "bad management number"),
    ({"exam_year": "2007"}, "bad exam year"),
    ({"exam_year": str(THIS_YEAR + 1)}, "bad exam year"),
    ({"province": "99"}, "unknown province"),
])
def test_each_bad_row_has_its_reason(changes, reason):
    checked = registry.check_row(2, row() | changes, THIS_YEAR, dt.date.today())
    assert isinstance(checked, str) and reason in checked


@pytest.mark.parametrize("value, code", [("11", "11"), ("110000", "11"), ("北京市", "11"), ("广西壮族自治区", "45"),
                                         ("新疆", "65"), ("香港特别行政区", "81"), ("00", None), ("火星", None)])
def test_province_as_code_or_name(value, code):
    assert registry.province_code(value) == code


def test_file_in_gb18030_with_chinese_headers_and_blank_lines():
    text = ("姓名,身份证号,级别,管理号,考试年度,省份\n"
            f"李明华,110105199003071239,社会工作师,1,{THIS_YEAR},北京市\n\n"
            f"王芳,{valid_id('44030519950612402')},助理社会工作师,2,{THIS_YEAR},44\n")
    with session() as db:
        report = registry.import_file(db, text.encode("gb18030"))
        assert report.added == 2 and report.rejected == []
        assert db.execute(select(Passer.province_code).where(Passer.name == "王芳")).scalar_one() == "44"


def test_file_missing_a_column_is_refused_whole():
    with session() as db, pytest.raises(errors.SwmsError) as caught:
        registry.import_file(db, "name,id_number,level\n李明华,110105199003071239,社会工作师\n".encode())
    assert caught.value.field == "file" and "management_number" in caught.value.message


def test_file_that_is_neither_utf8_nor_gb18030():
    with pytest.raises(errors.SwmsError) as caught:
        registry.decode(b"\xff\xfe\x00\xd8\x00")
    assert caught.value.field == "file"


def test_reimport_changes_nothing_and_reports_the_same():
    rows = [row(), row(name="王芳", id_number=valid_id("44030519950612402"), level="助理社会工作师", province="44"),
            row(id_number="360426199101010072")]
    with session() as db:
        first = domain.import_passers(db, rows)
        before = db.execute(select(Passer.id, Passer.updated_at)).all()
        again = domain.import_passers(db, rows)
        after = db.execute(select(Passer.id, Passer.updated_at)).all()
    assert (first.added, first.unchanged, len(first.rejected)) == (2, 0, 1)
    assert (again.added, again.unchanged, again.rejected) == (0, 2, first.rejected)
    assert before == after


def test_higher_level_updates_the_person_and_tells_certificate_when_they_have_an_account():
    with session() as db:
        domain.import_passers(db, [row(level="助理社会工作师", number="1", year=str(THIS_YEAR - 2))])
        passer = db.execute(select(Passer)).scalar_one()
        db.add(Account(person_id="00000000-0000-4000-8000-000000000001", role="social_worker", passer_id=passer.id,
                       id_number=passer.id_number, name=passer.name, email="li@example.cn", password_hash="x",
                       created_at=utcnow()))
        db.flush()
        report = domain.import_passers(db, [row(level="社会工作师", number="2")])
        older = domain.import_passers(db, [row(level="助理社会工作师", number="1", year=str(THIS_YEAR - 2))])
        raised = events(db, "passer_level_raised")
        db.refresh(passer)
    assert (report.raised, report.events, report.rejected) == (1, 1, [])
    assert (passer.level, passer.management_number, passer.exam_year) == ("社会工作师", "2", THIS_YEAR)
    assert (older.superseded, older.rejected) == (1, [])
    assert len(raised) == 1
    assert raised[0]["person_id"] == "00000000-0000-4000-8000-000000000001"
    assert (raised[0]["previous_level"], raised[0]["new_level"]) == ("助理社会工作师", "社会工作师")
    assert "110105199003071239" not in json.dumps(raised[0])


def test_higher_level_without_an_account_emits_nothing():
    with session() as db:
        domain.import_passers(db, [row(level="助理社会工作师")])
        report = domain.import_passers(db, [row(level="高级社会工作师", number="9")])
        assert report.raised == 1 and report.events == 0 and events(db, "passer_level_raised") == []


def test_lines_of_one_person_in_one_file_apply_in_order():
    rows = [row(level="助理社会工作师", number="1"), row(level="社会工作师", number="2"),
            row(level="助理社会工作师", number="1"), row(number="3"), row()]
    with session() as db:
        report = domain.import_passers(db, rows)
        passer = db.execute(select(Passer)).scalar_one()
    assert (report.added, report.raised, report.repeated, report.superseded) == (1, 1, 1, 0)
    assert [line for line, _ in report.rejected] == [5, 6]
    assert all("duplicate with conflicting data" in reason for _, reason in report.rejected)
    assert "management_number" in report.rejected[0][1]
    assert passer.management_number == "2"


def test_another_name_for_a_registered_id_number_is_a_conflict():
    with session() as db:
        domain.import_passers(db, [row()])
        report = domain.import_passers(db, [row(name="李明")])
    assert "the name differs" in report.rejected[0][1]


# ---- rate limits ----------------------------------------------------------------------------------

def test_a_key_locks_at_the_limit_and_opens_after_the_lock():
    limit = Limit("t", 3, dt.timedelta(minutes=10), dt.timedelta(minutes=5))
    now = utcnow()
    with session() as db:
        assert throttle.record_failure(db, "t:a", limit, now) is None
        assert throttle.record_failure(db, "t:a", limit, now) is None
        until = throttle.record_failure(db, "t:a", limit, now)
        assert until == now + dt.timedelta(minutes=5)
        with pytest.raises(errors.SwmsError) as caught:
            throttle.check(db, ["t:b", "t:a"], now + dt.timedelta(minutes=1), "login")
        assert caught.value.code == "RATE_LIMITED" and caught.value.details[0]["retry_after_seconds"] == 240
        throttle.check(db, ["t:a"], now + dt.timedelta(minutes=6), "login")   # open again


@pytest.mark.parametrize("lookup", [
    {"name": "李明华", "id_number": "110105199003071239"},          # registered, the name matches
    {"name": "李明", "id_number": "110105199003071239"},            # registered, another name
    {"name": "李明华", "id_number": valid_id("11010519900307124")},  # not in the registry
])
@pytest.mark.parametrize("locked", ["id", "source"])
def test_a_locked_lookup_key_refuses_the_lookup_whatever_the_registry_says(lookup, locked):
    # verify_passer reads the passer and the keys' latest lock in one statement: the lock must
    # still answer first, for a match, a wrong name and a miss alike.
    now = utcnow()
    limit = SETTINGS.lookup_id if locked == "id" else SETTINGS.lookup_source
    key = throttle.key(SETTINGS, limit, lookup["id_number"] if locked == "id" else "10.0.0.9")
    with session() as db:
        domain.import_passers(db, [row()])
        assert domain.verify_passer(db, SETTINGS, "李明华", "110105199003071239", "10.0.0.9", now).level
        for _ in range(limit.max_failures):
            throttle.record_failure(db, key, limit, now)
        with pytest.raises(errors.SwmsError) as caught:
            domain.verify_passer(db, SETTINGS, lookup["name"], lookup["id_number"], "10.0.0.9", now)
        assert caught.value.code == "RATE_LIMITED" and caught.value.field == "id_number"
        assert not getattr(caught.value, "on_failure", None)   # a refused lookup counts nowhere
        # after the lock, the registry answers again
        later = now + limit.lock + dt.timedelta(seconds=1)
        if lookup["name"] == "李明华" and lookup["id_number"] == "110105199003071239":
            assert domain.verify_passer(db, SETTINGS, lookup["name"], lookup["id_number"], "10.0.0.9", later).level
        else:
            with pytest.raises(errors.SwmsError) as caught:
                domain.verify_passer(db, SETTINGS, lookup["name"], lookup["id_number"], "10.0.0.9", later)
            assert caught.value.code in ("NAME_MISMATCH", "PASSER_NOT_FOUND")


def test_failures_outside_the_window_start_over():
    limit = Limit("t", 2, dt.timedelta(minutes=10), dt.timedelta(minutes=5))
    now = utcnow()
    with session() as db:
        throttle.record_failure(db, "t:a", limit, now)
        assert throttle.record_failure(db, "t:a", limit, now + dt.timedelta(minutes=11)) is None
        assert db.execute(select(throttle.table.c.failures).where(throttle.table.c.key == "t:a")).scalar_one() == 1


def test_throttle_keys_do_not_contain_the_login():
    key = throttle.key(SETTINGS, SETTINGS.login_account, "login:110105199003071239")
    assert "110105199003071239" not in key and key.startswith("login:")
    other = Settings(hash_key=derive_hash_key(b"o" * 32))
    assert key != throttle.key(other, other.login_account, "login:110105199003071239")


# ---- refresh tokens and password reset ---------------------------------------------------------------

def _account(db: Session, email="li@example.cn") -> Account:
    account = Account(person_id="00000000-0000-4000-8000-000000000002", role="social_worker", name="李明华",
                      email=email, password_hash="x", created_at=utcnow())
    db.add(account)
    db.flush()
    return account


def test_a_spent_refresh_token_presented_again_revokes_the_family():
    now = utcnow()
    with session() as db:
        account = _account(db)
        first, _ = domain.issue_refresh_token(db, SETTINGS, account.person_id, now)
        _, second, _ = domain.use_refresh_token(db, SETTINGS, first, now)
        with pytest.raises(errors.SwmsError) as caught:
            domain.use_refresh_token(db, SETTINGS, first, now)
        assert caught.value.code == "TOKEN_INVALID"
        for action in caught.value.on_failure:
            action(db)
        with pytest.raises(errors.SwmsError):
            domain.use_refresh_token(db, SETTINGS, second, now)
        assert db.execute(select(func.count()).select_from(RefreshToken)
                          .where(RefreshToken.revoked_at.is_(None))).scalar_one() == 0


def test_an_expired_refresh_token_is_refused():
    now = utcnow()
    with session() as db:
        account = _account(db)
        token, expires = domain.issue_refresh_token(db, SETTINGS, account.person_id, now)
        with pytest.raises(errors.SwmsError) as caught:
            domain.use_refresh_token(db, SETTINGS, token, expires + dt.timedelta(seconds=1))
    assert caught.value.code == "TOKEN_EXPIRED"


def _confirmed(db: Session, account: Account, now) -> Account:
    confirmation = domain.start_email_confirmation(db, SETTINGS, account, now)
    domain.confirm_email(db, SETTINGS, account, domain.confirmation_code(SETTINGS, confirmation), now)
    db.refresh(account)
    return account


def test_email_confirmation_code_confirms_the_current_address_only():
    now = utcnow()
    with session() as db:
        account = _account(db)
        first = domain.start_email_confirmation(db, SETTINGS, account, now)
        second = domain.request_email_confirmation(db, SETTINGS, account, now)   # the first code dies
        first_code, second_code = (domain.confirmation_code(SETTINGS, c) for c in (first, second))
        assert len(second_code) == 6 and second_code.isdigit() and first_code != second_code
        stored = [str(value) for r in db.execute(select(EmailConfirmation.__table__)).all() for value in r]
        assert second_code not in stored                                 # never stored, recomputed
        for wrong in (first_code, "000000" if second_code != "000000" else "111111"):
            with pytest.raises(errors.SwmsError) as caught:
                domain.confirm_email(db, SETTINGS, account, wrong, now)
            assert caught.value.code == "CONFIRMATION_CODE_INVALID" and caught.value.field == "code"
        assert account.email_confirmed_at is None
        with pytest.raises(errors.SwmsError) as caught:                  # expired
            domain.confirm_email(db, SETTINGS, account, second_code, now + SETTINGS.confirm_ttl)
        assert caught.value.code == "CONFIRMATION_CODE_INVALID"
        domain.confirm_email(db, SETTINGS, account, second_code, now)
        db.refresh(account)
        assert account.email_confirmed_at == now
        with pytest.raises(errors.SwmsError) as caught:                  # used once
            domain.confirm_email(db, SETTINGS, account, second_code, now)
        assert caught.value.code == "CONFIRMATION_CODE_INVALID"
        with pytest.raises(errors.SwmsError) as caught:                  # nothing left to confirm
            domain.request_email_confirmation(db, SETTINGS, account, now)
        assert caught.value.code == "INVALID_STATE"
        payloads = events(db, "email_confirmation_requested")
    assert len(payloads) == 2 and all(second_code not in json.dumps(p) for p in payloads)


def test_reset_codes_go_only_to_a_confirmed_address():
    now = utcnow()
    with session() as db:
        account = _account(db)
        # A mistyped address must not receive the codes that take over the account.
        assert domain.request_password_reset(db, SETTINGS, "li@example.cn", None, now) is None
        assert events(db, "password_reset_requested") == []
        _confirmed(db, account, now)
        assert domain.request_password_reset(db, SETTINGS, "li@example.cn", None, now) is not None
        assert len(events(db, "password_reset_requested")) == 1


def test_reset_code_is_six_digits_never_stored_and_replaced_by_a_new_request():
    now = utcnow()
    with session() as db:
        account = _confirmed(db, _account(db), now)
        first = domain.request_password_reset(db, SETTINGS, "LI@example.cn", None, now)
        code = domain.reset_code(SETTINGS, first)
        second = domain.request_password_reset(db, SETTINGS, "li@example.cn", None, now)
        assert len(code) == 6 and code.isdigit()
        stored = [str(value) for r in db.execute(select(PasswordReset.__table__)).all() for value in r]
        assert code not in stored
        with pytest.raises(errors.SwmsError):   # the first code died with the second request
            domain.check_reset_code(db, SETTINGS, account, code, now)
        assert domain.check_reset_code(db, SETTINGS, account, domain.reset_code(SETTINGS, second), now) is not None
        payloads = events(db, "password_reset_requested")
    assert len(payloads) == 2 and all(code not in json.dumps(p) for p in payloads)


def test_reset_requests_for_unknown_logins_count_but_send_nothing():
    now = utcnow()
    with session() as db:
        for _ in range(SETTINGS.reset_login.max_failures):
            assert domain.request_password_reset(db, SETTINGS, "nobody@example.cn", None, now) is None
        with pytest.raises(errors.SwmsError) as caught:
            domain.request_password_reset(db, SETTINGS, "nobody@example.cn", None, now)
        assert caught.value.code == "RATE_LIMITED"
        assert events(db, "password_reset_requested") == []


# ---- officers, regions, feedback visibility ------------------------------------------------------------

@pytest.mark.parametrize("region, level, ok", [
    ("110000", "province", True), ("440300", "city", True), ("110105", "county", True),
    ("110105", "province", False), ("110000", "city", False), ("440300", "county", False), ("11010", "county", False),
    ("11010a", "county", False), ("110105", "ministry", False),
])
def test_officer_region_must_fit_the_level(region, level, ok):
    if ok:
        domain.check_region_for_level(region, level)
    else:
        with pytest.raises(errors.SwmsError):
            domain.check_region_for_level(region, level)


def test_officer_contacts_use_the_same_coverage_as_tokens():
    officers = [("110000", "province"), ("110100", "city"), ("110105", "county"), ("110106", "county"),
                ("440000", "province"), ("440300", "city")]
    with session() as db:
        for index, (region, level) in enumerate(officers):
            domain.create_officer(db, f"审核员{'甲乙丙丁戊己'[index]}", f"o{index}@example.gov.cn", "x", region, level)
        for county in ("110105", "440305", "110228"):
            found = {(a.region_code, a.officer_level) for a in domain.officer_contacts(db, county)}
            expected = {(r, lv) for r, lv in officers
                        if Caller("x", OFFICER, r, lv).covers_region(county)}
            assert found == expected
        assert {a.officer_level for a in domain.officer_contacts(db, "110105", "county")} == {"county"}
        # an officer who left is disabled and gets no more mail about the county's applications
        domain.disable_account(db, "o2@example.gov.cn", "调离岗位", dt.datetime(2026, 11, 27))
        assert domain.officer_contacts(db, "110105", "county") == []
        assert {a.email for a in domain.officer_contacts(db, "110105")} == {"o0@example.gov.cn", "o1@example.gov.cn"}


def test_a_second_staff_account_with_the_same_email_is_refused():
    with session() as db:
        domain.create_officer(db, "审核员", "o@example.gov.cn", "x", "110105", "county")
        with pytest.raises(errors.SwmsError) as caught:
            domain.create_admin(db, "管理员", "O@example.gov.cn", "x")
    assert caught.value.code == "ALREADY_REGISTERED" and caught.value.field == "email"


def test_feedback_list_shows_only_the_officers_jurisdiction():
    from swms.contracts.identity import FeedbackRequest

    now = utcnow()
    with session() as db:
        for index, region in enumerate(("110105", "110106", "440305")):
            request = FeedbackRequest(name="王芳", id_number=valid_id(f"4403051995061240{index}"), email="w@example.cn",
                                      level="社会工作师", exam_year=THIS_YEAR, region_code=region)
            feedback_rules.submit(db, SETTINGS, request, feedback_rules.new_id(), None, None, None, now)
        county = Caller("o", OFFICER, "110105", "county")
        city = Caller("o", OFFICER, "110100", "city")
        province = Caller("o", OFFICER, "440000", "province")
        assert [i.region_code for i in feedback_rules.listing(db, county, "pending", 1, 20)[0]] == ["110105"]
        assert feedback_rules.listing(db, city, "pending", 1, 20)[1] == 2
        assert [i.region_code for i in feedback_rules.listing(db, province, "pending", 1, 20)[0]] == ["440305"]


def test_a_feedback_photo_is_kept_without_its_metadata_and_a_broken_one_is_refused():
    import base64

    from services.profile.testing import make_photo, with_phone_metadata
    from swms.contracts.identity import FeedbackRequest

    def request(body: bytes) -> FeedbackRequest:
        return FeedbackRequest(name="王芳", id_number=valid_id("44030519950612401"), email="w@example.cn",
                               level="社会工作师", exam_year=THIS_YEAR, region_code="110105",
                               proof={"filename": "成绩单.jpg", "content_type": "image/jpeg",
                                      "content_base64": base64.b64encode(body).decode()})

    proof = feedback_rules.decode_proof(request(with_phone_metadata(make_photo())), 1024 * 1024)
    assert proof.body.startswith(b"\xff\xd8\xff") and b"PhoneMaker" not in proof.body
    with pytest.raises(errors.SwmsError) as caught:
        feedback_rules.decode_proof(request(b"\xff\xd8\xff" + b"not a picture" * 50), 1024 * 1024)
    assert (caught.value.code, caught.value.field) == ("FILE_DAMAGED", "proof.content_base64")


# ---- privacy: logs --------------------------------------------------------------------------------

def test_log_filter_masks_id_numbers_in_messages_and_tracebacks():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "duplicate key %s", ("110105199003071239",), None)
    try:
        raise ValueError("Key (id_number)=(11010519491231002X) already exists")
    except ValueError:
        import sys
        record.exc_info = sys.exc_info()
    RedactIdNumbers().filter(record)
    text = logging.Formatter().format(record)
    assert "110105199003071239" not in text and "11010519491231002X" not in text
    assert "110***********1239" in text and "110***********002X" in text


def test_masking_leaves_other_numbers_alone():
    assert mask_id_numbers("order 1234567890123456789012 and 2026") == "order 1234567890123456789012 and 2026"
    assert mask_id_numbers("id=440524188001010014.") == "id=440***********0014."


def test_the_import_fast_path_agrees_with_the_id_validator():
    import random

    from swms import idcard

    rng = random.Random(11)
    today = dt.date.today()
    candidates = ["11010519491231002X", "11010519491231002x", "440524188001010014", "360426199101010072",
                  "１１０１０５１９９００３０７１２３９", valid_id(f"110105{THIS_YEAR + 1}0101123"), "0" * 18]
    for _ in range(20_000):
        first17 = f"{rng.randint(0, 999999):06d}{rng.randint(1870, THIS_YEAR + 1)}{rng.randint(0, 13):02d}" \
                  f"{rng.randint(0, 32):02d}{rng.randint(0, 999):03d}"
        candidates.append(first17 + (check_character(first17) if rng.random() < 0.7 else rng.choice("0123456789X")))
    for raw in candidates:
        try:
            expected = idcard.parse(raw, today).number if raw.isascii() else idcard.parse(
                __import__("unicodedata").normalize("NFKC", raw), today).number
        except idcard.InvalidIdNumber:
            expected = None
        try:
            got = registry.id_number(raw, today)
        except idcard.InvalidIdNumber:
            got = None
        assert got == expected, raw


def test_a_file_holding_every_line_twice_imports_each_person_once():
    rows = [row(), row(name="王芳", id_number=valid_id("44030519950612402"), province="44")]
    with session() as db:
        report = domain.import_passers(db, rows + rows + [row()])
        assert (report.added, report.repeated, report.rejected) == (2, 3, [])
        assert db.execute(select(func.count()).select_from(Passer)).scalar_one() == 2
