"""Review's operator command line: check an edited chains or calendar file; recompute deadlines."""
import datetime as dt
import uuid

from sqlalchemy.orm import sessionmaker

from services.review import cli, domain
from services.review.models import ReviewItem
from swms.config import REPO_ROOT
from swms.contracts.common import ApplicationKind
from swms.contracts.events import ApplicationSubmitted
from swms.db import dispose_engine, engine_for
from swms.migrations import upgrade


def config_file(tmp_path, db_url: str = "sqlite://", calendar: str | None = None):
    path = tmp_path / "config.yaml"
    path.write_text(f"DB_URL: {db_url}\n"
                    f"REVIEW_CHAINS_FILE: {REPO_ROOT / 'services/review/chains.yaml'}\n"
                    f"REVIEW_CALENDAR_FILE: {calendar or REPO_ROOT / 'services/review/calendar.yaml'}\n"
                    "REVIEW_DEADLINE_WORKING_DAYS: 30\nREVIEW_NEAR_DUE_WORKING_DAYS: 5\n", encoding="utf-8")
    return str(path)


def test_check_config_prints_what_it_understood(tmp_path, capsys):
    assert cli.main(["--config", config_file(tmp_path), "check-config"]) == 0
    out = capsys.readouterr().out
    assert "default  first_registration   county → province" in out
    assert "default  replacement          county" in out
    assert "years 2025, 2026" in out and "make-up working days" in out


def test_check_config_refuses_a_broken_file_with_exit_status_2(tmp_path, capsys):
    broken = tmp_path / "calendar.yaml"
    broken.write_text("years:\n  2027:\n    holidays: [2027-01-01]\n    workdays: [2027-01-06]\n", encoding="utf-8")
    assert cli.main(["--config", config_file(tmp_path), "check-config", "--calendar", str(broken)]) == 2
    assert "2027-01-06 is a weekday" in capsys.readouterr().err


def test_recompute_deadlines_uses_the_calendar_file(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'review.db'}"
    upgrade("review", url)
    rules = cli.load_rules({"REVIEW_CHAINS_FILE": REPO_ROOT / "services/review/chains.yaml",
                            "REVIEW_CALENDAR_FILE": REPO_ROOT / "services/review/calendar.yaml"})
    factory = sessionmaker(engine_for(url), expire_on_commit=False)
    with factory() as session:
        event = ApplicationSubmitted(application_id=str(uuid.uuid4()), person_id=str(uuid.uuid4()),
                                     kind=ApplicationKind.FIRST_REGISTRATION, region_code="110105",
                                     applicant_name_masked="赵**", submitted_at=dt.datetime(2026, 11, 26, 2))
        item_id = domain.accept_submission(session, event, rules, now=dt.datetime(2026, 11, 26, 2)).item_id
        session.commit()
    calendar = tmp_path / "calendar.yaml"
    calendar.write_text((REPO_ROOT / "services/review/calendar.yaml").read_text(encoding="utf-8")
                        + "  2027:\n    holidays: [2027-01-01, 2027-01-04..2027-01-08]\n", encoding="utf-8")
    assert cli.main(["--config", config_file(tmp_path, url, str(calendar)), "recompute-deadlines"]) == 0
    assert capsys.readouterr().out.startswith("1 pending item(s) got a new deadline")
    with factory() as session:
        assert session.get(ReviewItem, item_id).due_at == dt.datetime(2027, 1, 15, 15, 59, 59)
    dispose_engine(url)
