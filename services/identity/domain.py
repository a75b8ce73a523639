"""Identity rules in plain Python (no broker): registry lookups, sign-up, login, registry import."""
from __future__ import annotations

import csv
import io
import unicodedata
import uuid
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.identity.models import Account, Passer, audit
from swms import errors, idcard
from swms.auth import OFFICER, OFFICER_LEVELS, SOCIAL_WORKER
from swms.contracts.common import Level
from swms.outbox import utcnow

password_hasher = PasswordHasher()
# Compared against when no account matches, so a miss costs the same time as a wrong password.
DUMMY_HASH = password_hasher.hash("not-a-real-password")
_MIDDLE_DOTS = "·•‧∙・･‧"


def normalise_name(name: str) -> str:
    """Full-width → half-width (NFKC), no spaces, one kind of middle dot (·)."""
    text = unicodedata.normalize("NFKC", name)
    text = "".join(ch for ch in text if not ch.isspace())
    for dot in _MIDDLE_DOTS:
        text = text.replace(dot, "·")
    return text


def find_passer(session: Session, name: str, id_number: str) -> Passer:
    passer = session.execute(select(Passer).where(Passer.id_number == id_number)).scalar_one_or_none()
    if passer is None:
        # Same words users see today, plus the way out: feedback (反馈).
        raise errors.SwmsError(errors.PASSER_NOT_FOUND,
                               "请输入正确的身份证号（社工库中暂无您的信息，可点击“反馈”提交信息）",
                               "id_number")
    if passer.name_normalised != normalise_name(name):
        raise errors.SwmsError(errors.NAME_MISMATCH, "姓名与身份证号不匹配", "name")
    return passer


def sign_up(session: Session, name: str, id_number: str, email: str, password_hash: str) -> Account:
    passer = find_passer(session, name, id_number)
    if session.execute(select(Account.person_id).where(Account.passer_id == passer.id)).first():
        raise errors.SwmsError(errors.ALREADY_REGISTERED, "该身份证号已注册，请直接登录", "id_number")
    if session.execute(select(Account.person_id).where(Account.email == email.lower())).first():
        raise errors.SwmsError(errors.ALREADY_REGISTERED, "该电子邮箱已被使用", "email")
    account = Account(person_id=str(uuid.uuid4()), role=SOCIAL_WORKER, passer_id=passer.id,
                      id_number=passer.id_number, name=passer.name, email=email.lower(),
                      password_hash=password_hash, created_at=utcnow())
    session.add(account)
    try:
        session.flush()
    except IntegrityError:  # a concurrent sign-up for the same person won the race
        raise errors.SwmsError(errors.ALREADY_REGISTERED, "该身份证号已注册，请直接登录", "id_number") from None
    audit.record(session, account.person_id, "account.created", "account", account.person_id,
                 {"id_number": idcard.mask(passer.id_number)})
    return account


def find_account_for_login(session: Session, login: str) -> Account | None:
    login = login.strip()
    if "@" in login:
        return session.execute(select(Account).where(Account.email == login.lower())).scalar_one_or_none()
    return session.execute(select(Account).where(Account.id_number == login.upper())).scalar_one_or_none()


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return password_hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def create_officer(session: Session, name: str, email: str, password_hash: str, region_code: str,
                   level: str) -> Account:
    if level not in OFFICER_LEVELS:
        raise errors.validation_error("level", f"审核层级应为 {', '.join(OFFICER_LEVELS)} 之一")
    if not (len(region_code) == 6 and region_code.isdigit()):
        raise errors.validation_error("region_code", "行政区划代码应为6位数字")
    account = Account(person_id=str(uuid.uuid4()), role=OFFICER, name=name, email=email.lower(),
                      password_hash=password_hash, region_code=region_code, officer_level=level,
                      created_at=utcnow())
    session.add(account)
    session.flush()
    audit.record(session, "admin-cli", "officer.created", "account", account.person_id,
                 {"region_code": region_code, "level": level})
    return account


@dataclass
class ImportReport:
    added: int = 0
    unchanged: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


REGISTRY_COLUMNS = ("name", "id_number", "level", "management_number", "exam_year", "province")


def read_registry_file(raw: bytes) -> list[dict[str, str]]:
    """The exam authority's CSV, in UTF-8 (with or without BOM) or GB18030."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise errors.validation_error("file", "文件编码应为 UTF-8 或 GB18030")
    return list(csv.DictReader(io.StringIO(text)))


def import_passers(session: Session, rows: list[dict[str, str]]) -> ImportReport:
    """Idempotent: re-importing the same rows changes nothing. Rows are checked one by one and
    each rejected row is reported with its line number (header = line 1) and reason."""
    report = ImportReport()
    levels = {level.value for level in Level}
    now = utcnow()
    for line, row in enumerate(rows, start=2):
        missing = [col for col in REGISTRY_COLUMNS if not (row.get(col) or "").strip()]
        if missing:
            report.rejected.append((line, f"missing field(s): {', '.join(missing)}"))
            continue
        try:
            number = idcard.parse(row["id_number"]).number
        except idcard.InvalidIdNumber as exc:
            report.rejected.append((line, f"bad id number: {exc}"))
            continue
        level = row["level"].strip()
        if level not in levels:
            report.rejected.append((line, f"unknown level {level!r}"))
            continue
        if not row["exam_year"].strip().isdigit():
            report.rejected.append((line, "exam_year is not a year"))
            continue
        name = row["name"].strip()
        values = dict(name=name, name_normalised=normalise_name(name), level=level,
                      management_number=row["management_number"].strip(),
                      exam_year=int(row["exam_year"]), province_code=row["province"].strip()[:2])
        existing = session.execute(select(Passer).where(Passer.id_number == number)).scalar_one_or_none()
        if existing is None:
            session.add(Passer(id_number=number, imported_at=now, **values))
            report.added += 1
        elif all(getattr(existing, key) == value for key, value in values.items()):
            report.unchanged += 1
        else:
            report.rejected.append((line, "conflicts with the registry's existing data for this id number"))
    session.flush()
    return report
