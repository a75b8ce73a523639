"""Identity's admin command line against a real (SQLite) database migrated to head, no broker."""
from __future__ import annotations

import csv
import datetime as dt

import pytest
import yaml
from sqlalchemy import select

from services.identity import cli, domain
from services.identity import settings as identity_settings
from services.identity.models import Account, Passer, RefreshToken, audit, outbox
from swms.idcard import check_character
from swms.outbox import utcnow
from swms.migrations import upgrade
from tests.support import session_for

THIS_YEAR = dt.date.today().year
HOLDER_ID = "110105199003071239"


@pytest.fixture
def config_path(tmp_path, keys_dir):
    url = f"sqlite:///{tmp_path / 'identity.db'}"
    upgrade("identity", url)
    path = tmp_path / "identity.yaml"
    path.write_text(yaml.safe_dump({"DB_URL": url, "AUTH_PRIVATE_KEY_FILE": str(keys_dir / "token-signing.pem"),
                                    "AUTH_PUBLIC_KEY_FILE": str(keys_dir / "token-signing.pub.pem")}))
    return path


def run(config_path, *args) -> int:
    return cli.main(["--config", str(config_path), *args])


def test_import_prints_the_report_and_writes_the_rejected_rows(config_path, tmp_path, capsys):
    other = "44030519950612402" + check_character("44030519950612402")
    registry = tmp_path / "passers.csv"
    registry.write_bytes((
        "姓名,身份证号,级别,管理号,考试年度,省份\n"
        f"李明华,{HOLDER_ID},社会工作师,202611000000123456,{THIS_YEAR},北京\n"
        f"欧阳·娜仁,{other},助理社会工作师,202644000000654321,{THIS_YEAR},广东省\n"
        f"坏号码,360426199101010072,社会工作师,1,{THIS_YEAR},江西\n"
        f"无级别,11010519491231002X,中级,2,{THIS_YEAR},11\n").encode("gb18030"))
    report = tmp_path / "rejected.csv"
    assert run(config_path, "import-passers", str(registry), "--report", str(report)) == 0
    out = capsys.readouterr().out
    assert "added 2, unchanged 0, level raised 0, superseded 0, repeated 0, rejected 2" in out
    assert "line 4: bad id number: wrong check character" in out and "line 5: unknown level '中级'" in out
    with open(report, encoding="utf-8") as handle:
        assert list(csv.reader(handle))[1:] == [["4", "bad id number: wrong check character"],
                                                 ["5", "unknown level '中级'"]]
    assert run(config_path, "import-passers", str(registry)) == 0
    assert "added 0, unchanged 2" in capsys.readouterr().out
    with session_for(yaml.safe_load(config_path.read_text())["DB_URL"]) as session:
        assert session.execute(select(Passer.province_code).order_by(Passer.id)).scalars().all() == ["11", "44"]


def test_import_fixes_nothing_up_quietly(config_path, tmp_path, capsys):
    """A name with a line break inside quotes is rejected like the NUL, emoji and bidi rows, each
    reported at the line its record starts on; so are values beyond the header's columns and ID
    numbers written with circled digits. Only the spaces around a value are trimmed."""
    ids = ["44030519950612" + str(400 + n) for n in range(8)]
    ids = [first17 + check_character(first17) for first17 in (n[:17] for n in ids)]
    registry = tmp_path / "hostile.csv"
    registry.write_bytes((
        "姓名,身份证号,级别,管理号,考试年度,省份\n"                               # line 1
        f"李明华,{HOLDER_ID},社会工作师,1,{THIS_YEAR},北京\n"                     # line 2: added
        f'"张\n三",{ids[0]},社会工作师,2,{THIS_YEAR},11\n'                        # lines 3-4: one record
        f"王\x00芳,{ids[1]},社会工作师,3,{THIS_YEAR},11\n"                        # line 5
        f"赵😀,{ids[2]},社会工作师,4,{THIS_YEAR},11\n"                            # line 6
        f"钱\u202e孙,{ids[3]},社会工作师,5,{THIS_YEAR},11\n"                      # line 7
        f"孙丽,{ids[4]},社会工作师,6,{THIS_YEAR},11,备注\n"                        # line 8: a stray column
        f"周杰,①{ids[5][1:]},社会工作师,7,{THIS_YEAR},11\n"                       # line 9: a circled digit
        f"  吴  敏\u3000,{ids[6]},社会工作师,8,{THIS_YEAR},11\n"                  # line 10: added, as written
        f"郑\t强,{ids[7]},社会工作师,9,{THIS_YEAR},11\n").encode("utf-8"))        # line 11
    report = tmp_path / "rejected.csv"
    assert run(config_path, "import-passers", str(registry), "--report", str(report)) == 0
    assert "added 2, unchanged 0, level raised 0, superseded 0, repeated 0, rejected 7" in capsys.readouterr().out
    with open(report, encoding="utf-8") as handle:
        rejected = {int(line): reason for line, reason in list(csv.reader(handle))[1:]}
    assert sorted(rejected) == [3, 5, 6, 7, 8, 9, 11]
    assert rejected[3].startswith("bad name: line break U+000A at character 2")
    assert rejected[5].startswith("bad name: control character U+0000 at character 2")
    assert rejected[6].startswith("bad name: emoji U+1F600 at character 2")
    assert rejected[7].startswith("bad name: bidi control U+202E at character 2")
    assert rejected[8] == "7 values, but the header has 6 columns"
    assert rejected[9].startswith("bad id number")
    assert rejected[11].startswith("bad name: tab U+0009 at character 2")
    with session_for(yaml.safe_load(config_path.read_text())["DB_URL"]) as session:
        assert session.execute(select(Passer.name).order_by(Passer.id)).scalars().all() == ["李明华", "吴  敏"]


def test_a_file_without_the_columns_is_refused(config_path, tmp_path, capsys):
    registry = tmp_path / "bad.csv"
    registry.write_text("who,what\n李明华,1\n", encoding="utf-8")
    assert run(config_path, "import-passers", str(registry)) == 2
    assert "缺少列" in capsys.readouterr().err


def test_officers_and_admins(config_path, capsys, monkeypatch):
    assert run(config_path, "create-officer", "--name", "朝阳区民政局审核员", "--email", "county@example.gov.cn",
               "--password", "County-officer-1", "--region", "110105", "--level", "county") == 0
    assert run(config_path, "create-officer", "--name", "某审核员", "--email", "x@example.gov.cn",
               "--password", "short", "--region", "110105", "--level", "county") == 2
    assert "PASSWORD_TOO_WEAK" in capsys.readouterr().err
    assert run(config_path, "create-officer", "--name", "某审核员", "--email", "y@example.gov.cn",
               "--password", "County-officer-1", "--region", "110105", "--level", "province") == 2
    assert "region_code" in capsys.readouterr().err
    assert run(config_path, "create-officer", "--name", "某审核员", "--email", "COUNTY@example.gov.cn",
               "--password", "County-officer-1", "--region", "110000", "--level", "province") == 2
    assert "ALREADY_REGISTERED" in capsys.readouterr().err
    assert run(config_path, "create-officer", "--name", "某审核员\u202e", "--email", "z@example.gov.cn",
               "--password", "County-officer-1", "--region", "110105", "--level", "county") == 2
    assert "TEXT_CHARACTERS_NOT_ALLOWED [name]" in capsys.readouterr().err
    monkeypatch.setenv("SWMS_ADMIN_PASSWORD", "Admin-secret-2026")
    assert run(config_path, "create-admin", "--name", "系统管理员", "--email", "admin@example.gov.cn",
               "--password-env", "SWMS_ADMIN_PASSWORD") == 0
    assert run(config_path, "purge-expired") == 0
    with session_for(yaml.safe_load(config_path.read_text())["DB_URL"]) as session:
        accounts = session.execute(select(Account.role, Account.region_code, Account.officer_level)
                                   .order_by(Account.created_at)).all()
        assert session.execute(select(outbox.table)).all() == []
    assert [tuple(a) for a in accounts] == [("officer", "110105", "county"), ("admin", None, None)]


def test_disable_and_enable_an_account(config_path, capsys):
    """An officer who left: disabled with a reason, refresh tokens revoked, audited with who did it."""
    assert run(config_path, "create-officer", "--name", "朝阳区民政局审核员", "--email", "county@example.gov.cn",
               "--password", "County-officer-1", "--region", "110105", "--level", "county") == 0
    url = yaml.safe_load(config_path.read_text())["DB_URL"]
    with session_for(url) as session:
        person_id = session.execute(select(Account.person_id)).scalar_one()
        domain.issue_refresh_token(session, identity_settings.from_config(yaml.safe_load(config_path.read_text())),
                                   person_id, utcnow())   # a login on some device
        session.commit()
    capsys.readouterr()
    assert run(config_path, "disable-account", "county@example.gov.cn", "--reason", "  ") == 2
    assert "REASON_REQUIRED" in capsys.readouterr().err
    assert run(config_path, "disable-account", "county@example.gov.cn", "--reason", "调" * 201) == 2
    assert "VALIDATION_FAILED" in (err := capsys.readouterr().err) and "reason" in err
    assert run(config_path, "disable-account", "county@example.gov.cn", "--reason", "调离\u202e岗位") == 2
    assert "TEXT_CHARACTERS_NOT_ALLOWED [reason]: 停用原因含有不允许的文字方向控制符" in capsys.readouterr().err
    assert run(config_path, "disable-account", "nobody@example.gov.cn", "--reason", "调离岗位") == 2
    assert "NOT_FOUND" in capsys.readouterr().err
    with session_for(url) as session:   # the refusals stored nothing
        assert session.get(Account, person_id).disabled_at is None
        assert session.execute(select(RefreshToken.revoked_at)).scalar_one() is None
    assert run(config_path, "disable-account", "County@Example.gov.cn", "--reason", "调离岗位") == 0
    assert capsys.readouterr().out.strip() == f"officer {person_id}: disabled"
    assert run(config_path, "disable-account", "county@example.gov.cn", "--reason", "again") == 0
    assert "already disabled since" in capsys.readouterr().out
    with session_for(url) as session:
        account = session.get(Account, person_id)
        assert account.disabled_at is not None and account.disabled_reason == "调离岗位"
        assert session.execute(select(RefreshToken.revoked_at)).scalar_one() is not None
        [disabled] = [row for row in audit.for_entity(session, person_id) if row["action"] == "account.disabled"]
        assert disabled["actor"].startswith("admin-cli") and disabled["detail"] == {
            "reason": "调离岗位", "refresh_tokens_revoked": 1}
    assert run(config_path, "enable-account", "county@example.gov.cn") == 0
    assert capsys.readouterr().out.strip() == f"officer {person_id}: enabled"
    assert run(config_path, "enable-account", "county@example.gov.cn") == 0
    assert "was not disabled" in capsys.readouterr().out
    with session_for(url) as session:
        assert session.get(Account, person_id).disabled_at is None
        assert [row["action"] for row in audit.for_entity(session, person_id)][-2:] == [
            "account.disabled", "account.enabled"]


def test_rows_checked_in_several_processes_give_the_same_result(config_path, tmp_path, keys_dir):
    """The CLI in its own process (no eventlet): --workers 2 on a file cut into 16 pieces."""
    import os
    import subprocess
    import sys

    from swms.config import REPO_ROOT

    rows = ["name,id_number,level,management_number,exam_year,province"]
    for index in range(3000):
        first17 = f"110105{1960 + index % 40}{1 + index % 12:02d}{1 + index % 28:02d}{index % 1000:03d}"
        number = first17 + check_character(first17)
        if index % 500 == 7:
            number = number[:17] + ("0" if number[17] != "0" else "1")      # a wrong check character
        rows.append(f"测试{'甲乙丙丁'[index % 4]},{number},社会工作师,{index},{THIS_YEAR},11")
        if index % 1000 == 3:
            rows.append("")                                                  # blank lines still count
        if index % 1000 == 5:
            rows[-1] = rows[-1].replace("测试", "测试😀", 1)                  # refused, never cleaned
        if index % 1000 == 9:
            rows[-1] += ",备注"                                               # a value beyond the header
    rows.append(rows[2])                                                     # a repeated line
    registry = tmp_path / "many.csv"
    registry.write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8"))   # Windows line ends, as exported
    second = tmp_path / "second.yaml"
    url = f"sqlite:///{tmp_path / 'second.db'}"
    upgrade("identity", url)
    second.write_text(yaml.safe_dump({"DB_URL": url, "AUTH_PRIVATE_KEY_FILE": str(keys_dir / "token-signing.pem")}))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    outputs = []
    for config, workers in ((config_path, "1"), (second, "2")):
        report = tmp_path / f"rejected-{workers}.csv"
        result = subprocess.run([sys.executable, "-m", "services.identity.cli", "--config", str(config),
                                 "import-passers", str(registry), "--workers", workers, "--report", str(report)],
                                cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        outputs.append((result.stdout.splitlines()[0], report.read_text(encoding="utf-8")))
    assert outputs[0] == outputs[1]
    assert outputs[0][0] == "added 2988, unchanged 0, level raised 0, superseded 0, repeated 1, rejected 12"
    assert outputs[0][1].count("wrong check character") == 6
    assert outputs[0][1].count("emoji U+1F600") == 3 and outputs[0][1].count("header has 6 columns") == 3
