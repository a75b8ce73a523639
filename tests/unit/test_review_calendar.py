"""The working-day calendar behind review deadlines, and the review-chain configuration check."""
import datetime as dt
import logging

import pytest

from services.review import domain
from services.review.workcalendar import CalendarError, WorkCalendar, local_date, local_day_end
from swms.config import REPO_ROOT

SHIPPED = WorkCalendar.load(REPO_ROOT / "services" / "review" / "calendar.yaml")
ALL_KINDS = ["first_registration", "re_registration", "replacement", "upgrade"]
D = dt.date


def utc(*parts) -> dt.datetime:
    return dt.datetime(*parts)


# ---- the shipped calendar (State Council notices for 2025 and 2026) ----------------------------

@pytest.mark.parametrize("day, working", [
    (D(2026, 1, 1), False), (D(2026, 1, 2), False),            # 元旦 (Thursday, Friday)
    (D(2026, 1, 4), True),                                      # Sunday, make-up working day
    (D(2026, 2, 14), True), (D(2026, 2, 28), True),             # Saturdays, make-up working days
    (D(2026, 2, 16), False), (D(2026, 2, 23), False),           # 春节 (Monday to Monday)
    (D(2026, 2, 24), True),
    (D(2026, 5, 9), True), (D(2026, 5, 4), False),              # 劳动节 and its make-up Saturday
    (D(2026, 9, 20), True), (D(2026, 10, 10), True), (D(2026, 10, 8), True),
    (D(2026, 10, 7), False), (D(2026, 9, 25), False),           # 国庆节, 中秋节
    (D(2025, 1, 26), True), (D(2025, 10, 8), False), (D(2025, 10, 11), True),
    (D(2026, 11, 28), False), (D(2026, 11, 30), True),          # an ordinary weekend and Monday
])
def test_shipped_calendar_days(day, working):
    assert SHIPPED.is_working_day(day) is working
    assert SHIPPED.years >= {2025, 2026}


def test_thirty_working_days_across_spring_festival_count_make_up_saturdays():
    # Accepted Tuesday 20 January 2026 (Beijing): 21–23 Jan (3), 26–30 (8), 2–6 Feb (13), 9–13 (18),
    # Sat 14 Feb (19, make-up), 15–23 Feb off, 24–27 (23), Sat 28 Feb (24, make-up), 2–6 Mar (29), Mon 9 Mar (30).
    assert SHIPPED.add_working_days(D(2026, 1, 20), 30) == D(2026, 3, 9)
    assert SHIPPED.working_days_between(D(2026, 1, 20), D(2026, 3, 9)) == 30
    assert SHIPPED.working_days_between(D(2026, 3, 9), D(2026, 1, 20)) == -30


def test_deadline_is_the_end_of_the_thirtieth_working_day_in_beijing_time():
    accepted = utc(2026, 1, 20, 3, 0)                         # 11:00 Beijing
    assert SHIPPED.due_at(accepted, 30) == utc(2026, 3, 9, 15, 59, 59)   # 23:59:59 Beijing on 9 March
    assert local_date(SHIPPED.due_at(accepted, 30)) == D(2026, 3, 9)


def test_the_day_of_acceptance_is_the_beijing_date():
    # 17:00 UTC on Monday 19 January is 01:00 Tuesday in Beijing: counted from Tuesday.
    assert local_date(utc(2026, 1, 19, 17, 0)) == D(2026, 1, 20)
    assert SHIPPED.due_at(utc(2026, 1, 19, 17, 0), 30) == SHIPPED.due_at(utc(2026, 1, 20, 3, 0), 30)
    assert SHIPPED.due_at(utc(2026, 1, 19, 15, 59), 30) != SHIPPED.due_at(utc(2026, 1, 20, 3, 0), 30)


def test_accepted_on_a_holiday_counts_from_the_next_working_day():
    assert SHIPPED.add_working_days(D(2026, 10, 3), 1) == D(2026, 10, 8)
    assert SHIPPED.add_working_days(D(2026, 10, 3), 3) == D(2026, 10, 10)   # Saturday 10 October works


def test_a_year_without_a_notice_keeps_the_fixed_date_holidays_and_warns(caplog):
    calendar = WorkCalendar.from_document({"fixed_holidays": ["01-01", "05-01"],
                                           "years": {2026: {"holidays": ["2026-01-01"]}}})
    with caplog.at_level(logging.WARNING, logger="services.review.workcalendar"):
        assert calendar.is_working_day(D(2027, 1, 1)) is False    # Friday, 元旦
        assert calendar.is_working_day(D(2027, 1, 4)) is True
    assert "no entry for 2027" in caplog.text
    # Accepted Thursday 26 November 2026: 30 working days skip weekends and 1 January 2027.
    assert SHIPPED.add_working_days(D(2026, 11, 26), 30) == D(2027, 1, 8)


def test_local_day_end():
    assert local_day_end(D(2026, 3, 9)) == utc(2026, 3, 9, 15, 59, 59)


@pytest.mark.parametrize("document, message", [
    ([], "expected a mapping"),
    ({"years": {2026: {"holidays": ["2026-01-01"]}}, "weekends": []}, "unknown keys"),
    ({"fixed_holidays": ["13-01"], "years": {}}, "not MM-DD"),
    ({"years": {"twenty": {"holidays": ["2026-01-01"]}}}, "not a number"),
    ({"years": {1800: {"holidays": ["1800-01-01"]}}}, "out of range"),
    ({"years": {2026: {"holidays": []}}}, "no holidays"),
    ({"years": {2026: {"holidays": ["2026-01-01"], "extra": 1}}}, "only source, holidays, workdays"),
    ({"years": {2026: {"holidays": ["2026-02-30"]}}}, "not a date"),
    ({"years": {2026: {"holidays": ["2026-02-23..2026-02-15"]}}}, "ends before it starts"),
    ({"years": {2026: {"holidays": ["2026-01-01..2026-03-01"]}}}, "longer than a month"),
    ({"years": {2026: {"holidays": ["2028-01-01"]}}}, "listed under year 2026"),
    ({"years": {2026: {"holidays": ["2026-01-01"], "workdays": ["2026-01-05"]}}}, "is a weekday"),
    ({"years": {2026: {"holidays": ["2026-01-03"], "workdays": ["2026-01-03"]}}}, "both a holiday and a working day"),
    ({"years": {2026: {"holidays": [dt.datetime(2026, 1, 1, 8)]}}}, "is a time"),
])
def test_broken_calendars_are_refused(document, message):
    with pytest.raises(CalendarError, match=message):
        WorkCalendar.from_document(document)


def test_unreadable_calendar_file_is_refused(tmp_path):
    path = tmp_path / "calendar.yaml"
    path.write_text("years: [unclosed", encoding="utf-8")
    with pytest.raises(CalendarError, match="not readable YAML"):
        WorkCalendar.load(path)


def test_calendar_fingerprint_follows_the_content(tmp_path):
    path = tmp_path / "calendar.yaml"
    path.write_text("years:\n  2026:\n    holidays: [2026-01-01]\n", encoding="utf-8")
    first = WorkCalendar.load(path).fingerprint
    path.write_text("years:\n  2026:\n    holidays: [2026-01-01, 2026-01-02]\n", encoding="utf-8")
    assert WorkCalendar.load(path).fingerprint != first


# ---- review chains -------------------------------------------------------------------------------

def test_shipped_chains_cover_every_kind_and_leave_feedback_out():
    chains = domain.load_chains(REPO_ROOT / "services" / "review" / "chains.yaml", kinds=ALL_KINDS)
    assert domain.chain_for(chains, "first_registration", "440305") == ["county", "province"]
    assert domain.chain_for(chains, "re_registration", "650102") == ["county", "province"]
    assert domain.chain_for(chains, "replacement", "110105") == ["county"]
    assert "feedback" not in chains["default"]


def test_province_keys_may_be_numbers_and_override_only_what_they_name():
    chains = domain.check_chains({"default": {"first_registration": ["county", "province"], "replacement": ["county"]},
                                  44: {"first_registration": ["city", "province"]},
                                  "32": {"first_registration": ["county", "city", "province"]}})
    assert domain.chain_for(chains, "first_registration", "440305") == ["city", "province"]
    assert domain.chain_for(chains, "first_registration", "320102") == ["county", "city", "province"]
    assert domain.chain_for(chains, "replacement", "440305") == ["county"]


@pytest.mark.parametrize("document, message", [
    ("just text", "with a `default` entry"),
    ({"44": {"first_registration": ["county"]}}, "with a `default` entry"),
    ({"default": {"first_registration": ["county"], "feedback": ["county"]}}, "reviewed in identity"),
    ({"default": {"first_registration": ["county"], "renewal": ["county"]}}, "unknown application kind"),
    ({"default": {"first_registration": []}}, "non-empty list"),
    ({"default": {"first_registration": "county"}}, "non-empty list"),
    ({"default": {"first_registration": ["county", "ministry"]}}, "levels"),
    ({"default": {"first_registration": ["province", "county"]}}, "go upwards"),
    ({"default": {"first_registration": ["county", "county"]}}, "go upwards"),
    ({"default": {"first_registration": ["county"]}, "99": {"first_registration": ["county"]}}, "province code"),
    ({"default": {"first_registration": ["county"]}, "4403": {"first_registration": ["county"]}}, "province code"),
    ({"default": {"first_registration": ["county"]}, "44": {}}, "expected application kinds"),
    ({"default": {"first_registration": ["county"]}, "44": {"upgrade": ["county"]}, 44: {"upgrade": ["county"]}},
     "appears twice"),
])
def test_broken_chains_are_refused(document, message):
    with pytest.raises(domain.ChainsError, match=message):
        domain.check_chains(document)


def test_the_service_demands_a_default_chain_for_every_kind(tmp_path):
    path = tmp_path / "chains.yaml"
    path.write_text("default:\n  first_registration: [county, province]\n  replacement: [county]\n", encoding="utf-8")
    assert domain.load_chains(path)["default"]["replacement"] == ["county"]     # tools may read a partial file
    with pytest.raises(domain.ChainsError, match=r"no chain for \['re_registration', 'upgrade'\]"):
        domain.load_chains(path, kinds=ALL_KINDS)


def test_unreadable_chains_file_is_refused(tmp_path):
    with pytest.raises(domain.ChainsError, match="not readable"):
        domain.load_chains(tmp_path / "missing.yaml")
