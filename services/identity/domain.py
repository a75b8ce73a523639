"""Identity rules in plain Python over a SQLAlchemy session (no broker): registry lookups, sign-up,
login and refresh tokens, password reset, officer and admin accounts, contacts for notification.

Errors are ``SwmsError`` with stable codes. Where a refused attempt must still leave a trace (a
failed login counts towards a rate limit, a reused refresh token revokes its family), the error
carries ``on_failure``: callables the service runs in a transaction of their own after the
refused work was rolled back (see :func:`failing`).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import unicodedata
import uuid
from typing import Callable

from sqlalchemy import and_, bindparam, desc, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from services.identity import passwords
from services.identity.models import (
    Account,
    EmailConfirmation,
    Passer,
    PasswordReset,
    RefreshToken,
    audit,
    outbox,
    throttle,
)
from services.identity.registry import (  # noqa: F401  (re-exported: CLI, tests, bench)
    ImportReport,
    import_file,
    import_passers,
    read_registry_file,
)
from services.identity.settings import Settings
from swms import errors, idcard, text
from swms.auth import ADMIN, CITY, COUNTY, OFFICER, OFFICER_LEVELS, PROVINCE, SOCIAL_WORKER
from swms.contracts.events import EmailConfirmationRequested, PasswordResetRequested
from swms.contracts.identity import name_key, name_problem
from swms.db import connection_of
from swms.outbox import utcnow

# Kept under their earlier names for callers (CLI, tests).
password_hasher = passwords.hasher
DUMMY_HASH = passwords.DUMMY_HASH
verify_password = passwords.verify
normalise_name = name_key

ALREADY_REGISTERED_MESSAGE = "该身份证号已注册，请直接登录"


def failing(exc: errors.SwmsError, *actions: Callable[[Session], None]) -> errors.SwmsError:
    """Attach work to run (in its own transaction) when ``exc`` ends the call."""
    exc.on_failure = [*getattr(exc, "on_failure", []), *actions]
    return exc


# ---- the registry at sign-up -----------------------------------------------------------------------

_PASSER_COLUMNS = (Passer.id, Passer.id_number, Passer.name, Passer.name_normalised, Passer.level,
                   Passer.management_number, Passer.exam_year)
# Built once (building a statement costs more than the indexed lookup itself).
_PASSER_BY_ID_NUMBER = select(*_PASSER_COLUMNS).where(Passer.id_number == bindparam("id_number"))
# The same, with the latest lock of n throttle keys: verify_passer's one round trip. Per key count.
_PASSER_AND_LOCK: dict[int, object] = {}


def find_passer(session: Session, name: str, id_number: str):
    """The registry row (id, id_number, name, name_normalised, level, management_number, exam_year)
    for this ID number and name. A plain row, not an ORM object, read on the session's connection
    (no ORM execution: callers look a passer up before adding anything to flush): this runs for
    every sign-up step, and the ORM would only add work."""
    return _matching(session.connection().execute(_PASSER_BY_ID_NUMBER, {"id_number": id_number}).first(), name)


def _matching(passer, name: str):
    if passer is None:
        # Same words users see today, plus the way out: feedback (反馈).
        raise errors.SwmsError(errors.PASSER_NOT_FOUND,
                               "请输入正确的身份证号（社工库中暂无您的信息，可点击“反馈”提交信息）",
                               "id_number")
    if passer.name_normalised != name_key(name):
        raise errors.SwmsError(errors.NAME_MISMATCH, "姓名与身份证号不匹配", "name")
    return passer


def verify_passer(session: Session | Connection, settings: Settings, name: str, id_number: str, source: str | None,
                  now: dt.datetime):
    """find_passer under rate limits: wrong names per ID number, misses per client address.

    A locked key answers RATE_LIMITED whatever the registry says. The passer row and the keys'
    latest lock are read in one statement (this runs before every sign-up: one round trip, not two);
    when no row comes back, the locks are read on their own."""
    id_key = throttle.key(settings, settings.lookup_id, id_number)
    src_key = throttle.key(settings, settings.lookup_source, source) if source else None
    keys = [k for k in (id_key, src_key) if k]
    statement = _PASSER_AND_LOCK.get(len(keys))
    if statement is None:
        statement = _PASSER_AND_LOCK[len(keys)] = _PASSER_BY_ID_NUMBER.add_columns(
            throttle.latest_lock(len(keys)).label("locked_until"))
    passer = connection_of(session).execute(statement, {"id_number": id_number, **throttle.key_parameters(keys)}).first()
    if passer is None:
        throttle.check(session, keys, now, "id_number")
    else:
        throttle.refuse_if_locked(passer.locked_until, now, "id_number")
    try:
        return _matching(passer, name)
    except errors.SwmsError as exc:
        counted = []
        if exc.code == errors.NAME_MISMATCH:
            counted.append(lambda s: throttle.record_failure(s, id_key, settings.lookup_id, now))
        if src_key:
            counted.append(lambda s: throttle.record_failure(s, src_key, settings.lookup_source, now))
        raise failing(exc, *counted) from None


def check_not_registered(session: Session, passer, email: str | None = None) -> None:
    if session.execute(select(Account.person_id).where(Account.passer_id == passer.id)).first():
        raise errors.SwmsError(errors.ALREADY_REGISTERED, ALREADY_REGISTERED_MESSAGE, "id_number")
    if email and session.execute(select(Account.person_id).where(Account.email == email.lower())).first():
        raise errors.SwmsError(errors.ALREADY_REGISTERED, "该电子邮箱已被使用", "email")


def sign_up(session: Session, settings: Settings, name: str, id_number: str, email: str, password_hash: str,
            source: str | None = None) -> Account:
    now = utcnow()
    passer = verify_passer(session, settings, name, id_number, source, now)
    check_not_registered(session, passer, email)
    account = Account(person_id=str(uuid.uuid4()), role=SOCIAL_WORKER, passer_id=passer.id,
                      id_number=passer.id_number, name=passer.name, email=email.lower(),
                      password_hash=password_hash, created_at=now, password_changed_at=now)
    session.add(account)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:  # a concurrent sign-up for the same person or email won the race
        raise errors.SwmsError(errors.ALREADY_REGISTERED, ALREADY_REGISTERED_MESSAGE, "id_number") from None
    audit.record(session, account.person_id, "account.created", "account", account.person_id,
                 {"id_number": idcard.mask(passer.id_number), "id_hash": settings.id_hash(passer.id_number)})
    start_email_confirmation(session, settings, account, now)
    return account


# ---- login, refresh tokens ------------------------------------------------------------------------

def normalise_login(login: str) -> str:
    login = unicodedata.normalize("NFKC", login).strip()   # full-width digits, Ｘ and ＠ as typed
    return login.lower() if "@" in login else login.upper()


def find_account_for_login(session: Session, login: str) -> Account | None:
    login = normalise_login(login)
    column = Account.email if "@" in login else Account.id_number
    return session.execute(select(Account).where(column == login)).scalar_one_or_none()


def login_keys(settings: Settings, account: Account | None, login: str, source: str | None):
    """[(throttle key, limit)]: the account (or, for an unknown login, the login itself) and the
    client address. Unknown logins lock exactly like real ones, so a lock reveals nothing."""
    subject = f"person:{account.person_id}" if account else f"login:{normalise_login(login)}"
    keys = [(throttle.key(settings, settings.login_account, subject), settings.login_account)]
    if source:
        keys.append((throttle.key(settings, settings.login_source, source), settings.login_source))
    return keys


def _login_entity(settings: Settings, account: Account | None, login: str) -> str:
    return account.person_id if account else f"login:{settings.keyed_hash('login', normalise_login(login))[:32]}"


def login_failed(session: Session, settings: Settings, keys, account: Account | None, login: str,
                 source: str | None, now: dt.datetime) -> None:
    for key, limit in keys:
        until = throttle.record_failure(session, key, limit, now)
        if until is not None:
            audit.record(session, "system", "login.locked", "account", _login_entity(settings, account, login),
                         {"scope": limit.scope, "until": until.isoformat()})
    audit.record(session, "anonymous", "login.failed", "account", _login_entity(settings, account, login),
                 {"source_hash": settings.keyed_hash("source", source)[:32] if source else None})


def issue_refresh_token(session: Session, settings: Settings, person_id: str, now: dt.datetime,
                        family_id: str | None = None) -> tuple[str, dt.datetime]:
    token = "rt_" + secrets.token_urlsafe(32)
    expires = now + settings.refresh_ttl
    session.add(RefreshToken(token_hash=hashlib.sha256(token.encode()).hexdigest(), person_id=person_id,
                             family_id=family_id or str(uuid.uuid4()), issued_at=now, expires_at=expires))
    return token, expires


def login_succeeded(session: Session, settings: Settings, account: Account, keys, now: dt.datetime,
                    new_hash: str | None = None) -> tuple[str, dt.datetime]:
    _refuse_if_disabled(account)
    throttle.clear(session, keys[0][0])   # the account's counter; the source's keeps counting
    if new_hash:   # hashing parameters were raised since this password was set
        session.execute(update(Account).where(Account.person_id == account.person_id)
                        .values(password_hash=new_hash))
    audit.record(session, account.person_id, "login.succeeded", "account", account.person_id)
    return issue_refresh_token(session, settings, account.person_id, now)


def _invalid_refresh() -> errors.SwmsError:
    return errors.SwmsError(errors.TOKEN_INVALID, "登录凭证无效，请重新登录", "refresh_token")


def _revoke_all_refresh_tokens(session: Session, person_id: str, now: dt.datetime) -> int:
    """Every login of the person ends at its next refresh (password reset, account disabled)."""
    return session.execute(update(RefreshToken).where(RefreshToken.person_id == person_id,
                                                      RefreshToken.revoked_at.is_(None)).values(revoked_at=now)).rowcount


def _revoke_family(session: Session, family_id: str, now: dt.datetime) -> None:
    session.execute(update(RefreshToken).where(RefreshToken.family_id == family_id,
                                               RefreshToken.revoked_at.is_(None)).values(revoked_at=now))


def use_refresh_token(session: Session, settings: Settings, token: str, now: dt.datetime
                      ) -> tuple[Account, str, dt.datetime]:
    """Spend a refresh token for the next one of its family. A token presented twice means it
    was copied: the whole family is revoked (the thief and the owner both log in again)."""
    row = session.get(RefreshToken, hashlib.sha256(token.encode()).hexdigest())
    if row is None or row.revoked_at is not None:
        raise _invalid_refresh()
    if row.used_at is not None:
        family, person = row.family_id, row.person_id

        def revoke(s: Session) -> None:
            _revoke_family(s, family, now)
            audit.record(s, "system", "refresh_token.reused", "account", person, {"family_id": family})

        raise failing(_invalid_refresh(), revoke)
    if row.expires_at <= now:
        raise errors.SwmsError(errors.TOKEN_EXPIRED, "登录已过期，请重新登录", "refresh_token")
    spent = session.execute(update(RefreshToken).where(RefreshToken.token_hash == row.token_hash,
                                                       RefreshToken.used_at.is_(None))
                            .values(used_at=now).execution_options(synchronize_session=False)).rowcount
    if spent != 1:   # a concurrent refresh with the same token won
        raise _invalid_refresh()
    account = session.get(Account, row.person_id)
    if account is None or account.disabled_at is not None:
        raise _invalid_refresh()
    new_token, expires = issue_refresh_token(session, settings, account.person_id, now, row.family_id)
    return account, new_token, expires


def revoke_refresh_token(session: Session, token: str, now: dt.datetime) -> bool:
    row = session.get(RefreshToken, hashlib.sha256(token.encode()).hexdigest())
    if row is None:
        return False
    _revoke_family(session, row.family_id, now)
    audit.record(session, row.person_id, "logout", "account", row.person_id, {"family_id": row.family_id})
    return True


# ---- one-time codes by email: address confirmation and password reset ----------------------------------

def _spend_attempt(id_column, row_id: str, settings: Settings) -> Callable[[Session], None]:
    """A wrong code counts against its row, in a transaction of its own (the call's rolls back);
    the last allowed attempt exhausts it, so even the right code no longer works."""
    model = id_column.class_

    def spend(session: Session) -> None:
        session.execute(update(model).where(id_column == row_id).values(attempts=model.attempts + 1))
        session.execute(update(model).where(id_column == row_id, model.attempts >= settings.reset_max_attempts)
                        .values(status="exhausted"))

    return spend


def _six_digits(settings: Settings, purpose: str, row_id: str, secret: str) -> str:
    """A one-time code: never stored, recomputed from the row's id and secret under the deployment key."""
    digest = settings.keyed_hash(purpose, f"{row_id}:{secret}")
    return f"{int(digest, 16) % 1_000_000:06d}"


def _code_to_mail(session: Session, id_column, row_id: str, what: str, now: dt.datetime, reader: str,
                  action: str):
    """For notification: the account and the live (pending, unexpired) code row; each read audited."""
    field = id_column.key
    row = session.get(id_column.class_, row_id)
    if row is None:
        raise errors.not_found(what, field)
    if row.status != "pending" or row.expires_at <= now:
        raise errors.SwmsError(errors.INVALID_STATE, "该验证码已失效（已使用、已过期或已被新的请求取代）", field)
    account = session.get(Account, row.person_id)
    audit.record(session, reader, action, "account", account.person_id, {field: row_id})
    return account, row


def confirmation_code(settings: Settings, confirmation: EmailConfirmation) -> str:
    return _six_digits(settings, "email-code", confirmation.confirmation_id, confirmation.secret)


def start_email_confirmation(session: Session, settings: Settings, account: Account,
                             now: dt.datetime) -> EmailConfirmation:
    """A new code for the account's address (earlier ones are cancelled); notification mails it."""
    session.execute(update(EmailConfirmation).where(EmailConfirmation.person_id == account.person_id,
                                                    EmailConfirmation.status == "pending").values(status="cancelled"))
    confirmation = EmailConfirmation(confirmation_id=str(uuid.uuid4()), person_id=account.person_id,
                                     email=account.email, secret=secrets.token_hex(16), status="pending", attempts=0,
                                     created_at=now, expires_at=now + settings.confirm_ttl)
    session.add(confirmation)
    session.flush()
    outbox.add(session, EmailConfirmationRequested(confirmation_id=confirmation.confirmation_id,
                                                   person_id=account.person_id, expires_at=confirmation.expires_at))
    audit.record(session, account.person_id, "email_confirmation.requested", "account", account.person_id,
                 {"confirmation_id": confirmation.confirmation_id})
    return confirmation


def request_email_confirmation(session: Session, settings: Settings, account: Account,
                               now: dt.datetime) -> EmailConfirmation:
    if account.email_confirmed_at is not None:
        raise errors.SwmsError(errors.INVALID_STATE, "您的电子邮箱已验证，无需再次验证", "email")
    key = throttle.key(settings, settings.confirm_account, f"person:{account.person_id}")
    throttle.check(session, [key], now, "login")
    throttle.record_failure(session, key, settings.confirm_account, now)
    return start_email_confirmation(session, settings, account, now)


def _confirmation_invalid() -> errors.SwmsError:
    return errors.SwmsError(errors.CONFIRMATION_CODE_INVALID, "邮箱验证码错误或已失效，请重新获取", "code")


def confirm_email(session: Session, settings: Settings, account: Account, code: str, now: dt.datetime) -> None:
    """The live code for the account's current address; a wrong code spends one of its attempts."""
    confirmation = session.execute(
        select(EmailConfirmation).where(EmailConfirmation.person_id == account.person_id,
                                        EmailConfirmation.status == "pending", EmailConfirmation.expires_at > now,
                                        EmailConfirmation.email == account.email)
        .order_by(desc(EmailConfirmation.created_at)).limit(1).with_for_update()).scalar_one_or_none()
    if confirmation is None:
        raise _confirmation_invalid()
    if not hmac.compare_digest(confirmation_code(settings, confirmation), code):
        raise failing(_confirmation_invalid(), _spend_attempt(EmailConfirmation.confirmation_id,
                                                              confirmation.confirmation_id, settings))
    confirmation.status, confirmation.used_at = "used", now
    session.execute(update(Account).where(Account.person_id == account.person_id).values(email_confirmed_at=now))
    audit.record(session, account.person_id, "email.confirmed", "account", account.person_id,
                 {"confirmation_id": confirmation.confirmation_id})


def email_confirmation_message(session: Session, settings: Settings, confirmation_id: str, now: dt.datetime,
                               reader: str):
    account, confirmation = _code_to_mail(session, EmailConfirmation.confirmation_id, confirmation_id, "邮箱验证",
                                          now, reader, "email_confirmation.code_read")
    return account, confirmation, confirmation_code(settings, confirmation)


# ---- password reset ------------------------------------------------------------------------------------

def reset_code(settings: Settings, reset: PasswordReset) -> str:
    return _six_digits(settings, "reset-code", reset.reset_id, reset.secret)


def _cancel_pending_resets(session: Session, person_id: str) -> None:
    session.execute(update(PasswordReset).where(PasswordReset.person_id == person_id,
                                                PasswordReset.status == "pending").values(status="cancelled"))


def request_password_reset(session: Session, settings: Settings, login: str, source: str | None,
                           now: dt.datetime) -> PasswordReset | None:
    """Every request counts towards the limits (each may send a mail), known login or not."""
    keys = [(throttle.key(settings, settings.reset_login, normalise_login(login)), settings.reset_login)]
    if source:
        keys.append((throttle.key(settings, settings.reset_source, source), settings.reset_source))
    throttle.check(session, [k for k, _ in keys], now, "login")
    for key, limit in keys:
        throttle.record_failure(session, key, limit, now)
    account = find_account_for_login(session, login)
    if account is None or account.email_confirmed_at is None or account.disabled_at is not None:
        # Only to a confirmed address: a mistyped one would hand the account to its owner. Not to a
        # disabled account: a reset would not let it in, and its owner may have left.
        return None
    _cancel_pending_resets(session, account.person_id)   # a new code replaces the old one
    reset = PasswordReset(reset_id=str(uuid.uuid4()), person_id=account.person_id,
                          secret=secrets.token_hex(16), status="pending", attempts=0, created_at=now,
                          expires_at=now + settings.reset_ttl)
    session.add(reset)
    session.flush()
    outbox.add(session, PasswordResetRequested(reset_id=reset.reset_id, person_id=account.person_id,
                                               expires_at=reset.expires_at))
    audit.record(session, account.person_id, "password_reset.requested", "account", account.person_id,
                 {"reset_id": reset.reset_id})
    return reset


def _code_invalid() -> errors.SwmsError:
    return errors.SwmsError(errors.RESET_CODE_INVALID, "验证码错误或已失效，请重新获取", "code")


def live_reset(session: Session, account: Account | None, now: dt.datetime) -> PasswordReset | None:
    if account is None:
        return None
    # A new request cancels the earlier ones, so at most one is pending.
    reset = session.execute(select(PasswordReset).where(PasswordReset.person_id == account.person_id,
                                                        PasswordReset.status == "pending")
                            .order_by(desc(PasswordReset.created_at)).limit(1)).scalar_one_or_none()
    if reset is None or reset.expires_at <= now:
        return None
    return reset


def check_reset_code(session: Session, settings: Settings, account: Account | None, code: str,
                     now: dt.datetime) -> PasswordReset:
    """The live reset whose code this is; a wrong code spends one of its attempts."""
    reset = live_reset(session, account, now)
    if reset is None:
        raise _code_invalid()
    if not hmac.compare_digest(reset_code(settings, reset), code):
        raise failing(_code_invalid(), _spend_attempt(PasswordReset.reset_id, reset.reset_id, settings))
    return reset


def complete_password_reset(session: Session, settings: Settings, account: Account, reset: PasswordReset,
                            new_hash: str, now: dt.datetime) -> None:
    used = session.execute(update(PasswordReset).where(
        PasswordReset.reset_id == reset.reset_id, PasswordReset.status == "pending",
        PasswordReset.expires_at > now, PasswordReset.attempts < settings.reset_max_attempts)
        .values(status="used", used_at=now).execution_options(synchronize_session=False)).rowcount
    if used != 1:
        raise _code_invalid()
    session.execute(update(Account).where(Account.person_id == account.person_id)
                    .values(password_hash=new_hash, password_changed_at=now))
    _revoke_all_refresh_tokens(session, account.person_id, now)
    throttle.clear(session, throttle.key(settings, settings.login_account, f"person:{account.person_id}"))
    audit.record(session, account.person_id, "password_reset.completed", "account", account.person_id,
                 {"reset_id": reset.reset_id})


def password_reset_message(session: Session, settings: Settings, reset_id: str, now: dt.datetime, reader: str):
    account, reset = _code_to_mail(session, PasswordReset.reset_id, reset_id, "重置请求", now, reader,
                                   "password_reset.code_read")
    return account, reset, reset_code(settings, reset)


# ---- officers and admins ---------------------------------------------------------------------------

def check_region_for_level(region_code: str, level: str) -> None:
    if level not in OFFICER_LEVELS:
        raise errors.validation_error("level", f"审核层级应为 {', '.join(OFFICER_LEVELS)} 之一")
    if not (len(region_code) == 6 and region_code.isascii() and region_code.isdigit()):
        raise errors.validation_error("region_code", "行政区划代码应为6位数字")
    shaped = {PROVINCE: region_code[2:] == "0000",
              CITY: region_code[4:] == "00" and region_code[2:4] != "00",
              COUNTY: region_code[4:] != "00"}[level]
    if not shaped:
        raise errors.validation_error("region_code", "行政区划代码与审核层级不符（省级如 110000，地市级如 440300，区县级如 110105）")


def _create_staff(session: Session, role: str, name: str, email: str, password_hash: str, actor: str,
                  region_code: str | None = None, level: str | None = None) -> Account:
    text.check(name, "name", "姓名")
    problem = name_problem(name)
    if problem:
        raise errors.validation_error("name", problem)
    email = email.strip().lower()
    if session.execute(select(Account.person_id).where(Account.email == email)).first():
        raise errors.SwmsError(errors.ALREADY_REGISTERED, "该电子邮箱已被使用", "email")
    now = utcnow()
    account = Account(person_id=str(uuid.uuid4()), role=role, name=name.strip(), email=email,
                      password_hash=password_hash, region_code=region_code, officer_level=level,
                      created_at=now, password_changed_at=now)
    session.add(account)
    session.flush()
    audit.record(session, actor, f"{role}.created", "account", account.person_id,
                 {"region_code": region_code, "level": level})
    return account


def create_officer(session: Session, name: str, email: str, password_hash: str, region_code: str,
                   level: str, actor: str = "admin-cli") -> Account:
    check_region_for_level(region_code, level)
    return _create_staff(session, OFFICER, name, email, password_hash, actor, region_code, level)


def create_admin(session: Session, name: str, email: str, password_hash: str, actor: str = "admin-cli") -> Account:
    return _create_staff(session, ADMIN, name, email, password_hash, actor)


def _account_for_admin(session: Session, login: str) -> Account:
    account = find_account_for_login(session, login)
    if account is None:
        raise errors.not_found("账号", "login")
    return account


def disable_account(session: Session, login: str, reason: str, now: dt.datetime, actor: str = "admin-cli"
                    ) -> tuple[Account, bool]:
    """Stops an account (an officer who left or moved, a compromised account): login, refresh and
    password reset are refused, and every refresh token and pending reset code is revoked now.
    Access tokens are verified locally by every service and cannot be recalled: the last one
    issued stays valid until it expires (TOKEN_TTL_MINUTES, 15 by default).
    Returns (account, changed); disabling a disabled account changes nothing."""
    reason = text.check(reason or "", "reason", "停用原因", multiline=True).strip()
    if not reason:
        raise errors.SwmsError(errors.REASON_REQUIRED, "请填写停用原因", "reason")
    if len(reason) > 200:
        raise errors.SwmsError(errors.VALIDATION_FAILED, "停用原因不能超过200个字", "reason")
    account = _account_for_admin(session, login)
    if account.disabled_at is not None:
        return account, False
    account.disabled_at, account.disabled_reason = now, reason
    revoked = _revoke_all_refresh_tokens(session, account.person_id, now)
    _cancel_pending_resets(session, account.person_id)
    audit.record(session, actor, "account.disabled", "account", account.person_id,
                 {"reason": reason, "refresh_tokens_revoked": revoked})
    return account, True


def enable_account(session: Session, login: str, actor: str = "admin-cli", reason: str | None = None
                   ) -> tuple[Account, bool]:
    """Lets a disabled account log in again (with its password, or after a password reset).
    ``reason``: why it is enabled (the portal asks for one); audited beside why it was disabled."""
    account = _account_for_admin(session, login)
    if account.disabled_at is None:
        return account, False
    audit.record(session, actor, "account.enabled", "account", account.person_id,
                 {"disabled_at": account.disabled_at.isoformat(), "disabled_reason": account.disabled_reason,
                  "reason": reason})
    account.disabled_at = account.disabled_reason = None
    return account, True


def _refuse_if_disabled(account: Account) -> None:
    """Called only once the password proved who is asking: a guesser learns nothing."""
    if account.disabled_at is not None:
        raise failing(errors.SwmsError(errors.ACCOUNT_DISABLED, "账号已停用，请联系所在地民政部门", "login"),
                      lambda s: audit.record(s, account.person_id, "login.refused_disabled", "account",
                                             account.person_id))


def covers(region_column, level_column, county_code: str):
    """SQL: an officer's (region, level) covers the county code (as swms.auth.Caller.covers_region)."""
    return or_(
        and_(level_column == PROVINCE, func.substr(region_column, 1, 2) == county_code[:2]),
        and_(level_column == CITY, func.substr(region_column, 1, 4) == county_code[:4]),
        and_(level_column == COUNTY, region_column == county_code),
    )


def officer_contacts(session: Session, county_code: str, level: str | None = None) -> list[Account]:
    """The officers notification mails about work in this county: not a disabled one (who left)."""
    query = select(Account).where(Account.role == OFFICER, Account.disabled_at.is_(None),
                                  covers(Account.region_code, Account.officer_level, county_code))
    if level:
        query = query.where(Account.officer_level == level)
    return list(session.execute(query.order_by(Account.officer_level, Account.created_at)).scalars())


def purge_expired(session: Session, now: dt.datetime, keep: dt.timedelta = dt.timedelta(days=1)) -> dict[str, int]:
    """Housekeeping (cli purge-expired, daily): old throttle counters, refresh tokens, resets."""
    from sqlalchemy import delete

    cutoff = now - keep
    return {
        "throttles": throttle.purge(session, now, keep),
        "refresh_tokens": session.execute(delete(RefreshToken).where(RefreshToken.expires_at < cutoff)).rowcount,
        "password_resets": session.execute(delete(PasswordReset).where(PasswordReset.expires_at < cutoff)).rowcount,
    }
