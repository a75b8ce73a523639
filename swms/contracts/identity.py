"""Identity's RPC contracts: the exam-passer registry (社工库), accounts, tokens, 反馈 (feedback).

Every request refuses unknown fields and values of the wrong JSON type (numbers are never taken
from strings, and the other way round): a client bug is an error, not silently coerced data.
"""
from __future__ import annotations

import datetime as dt
import unicodedata
from enum import Enum
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator

from swms import idcard, text
from swms.contracts.common import AccessReason, Contract, Email, Level, PersonName, RegionCode, Uuid
from swms.contracts.common import IdNumber as CommonIdNumber
from swms.text import MultiLine, OneLine

# Separators people type inside names: the middle dot of minority and transliterated names
# (·, its look-alikes from other keyboards and encodings, and a full stop typed instead) and spaces.
NAME_SEPARATORS = "·•‧∙・･‧·."


_DROPPED = {ord(ch): None for ch in NAME_SEPARATORS} | {
    code: None for code in range(0x3001) if chr(code).isspace()}   # every Unicode space is below U+3001


def name_key(name: str) -> str:
    """What two spellings of one name have in common: NFKC (full-width → half-width), case-folded,
    without spaces or middle dots. ``欧阳・娜仁``, ``欧阳·娜仁``, ``欧阳.娜仁`` and ``欧阳 娜仁``
    give one key."""
    return unicodedata.normalize("NFKC", name).casefold().translate(_DROPPED)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a person's name on a resident ID card, or None.

    Letters of any script (汉字 including the supplementary planes, e.g. 𠮷; Latin; Tibetan,
    Uyghur, Mongolian scripts) with middle dots and spaces between them. Refused: digits,
    punctuation, symbols and emoji, markup, and every character the text policy refuses (a line
    break or a bidi control would vanish from the key, not from the name).
    """
    found = text.problem(name)
    if found is not None:
        return found.message("姓名")
    return key_problem(name_key(name))


def key_problem(key: str) -> str | None:
    """name_problem for a name already turned into its key."""
    if not key:
        return "姓名不能为空"
    if len(key) > 50:
        return "姓名过长"
    if not key.isalpha() and not all(ch.isalpha() or unicodedata.category(ch).startswith("M") for ch in key):
        return "姓名只能包含文字和间隔号（·）"
    return None


def _real_name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


RealName = Annotated[PersonName, AfterValidator(_real_name)]


def _ascii_id_number(value):
    """Full-width digits and Ｘ (as Chinese input methods type them) become ASCII; any other
    non-ASCII character is refused (swms.idcard's pattern would take other scripts' digits)."""
    if isinstance(value, str):
        value = idcard.from_full_width(value)
        if not value.isascii():
            raise ValueError(idcard.MESSAGE)
    return value


IdNumber = Annotated[CommonIdNumber, BeforeValidator(_ascii_id_number)]
StrictInt = Annotated[int, Field(strict=True)]
ManagementNumber = Annotated[str, Field(title="职业水平证书管理号", min_length=1, max_length=32,
                                        pattern=r"^\d+$")]


def _exam_year(value: int) -> int:
    if not 2008 <= value <= dt.date.today().year:   # the national exam started in 2008
        raise ValueError(f"考试年度应在 2008 至 {dt.date.today().year} 之间")
    return value


ExamYear = Annotated[int, Field(title="考试年度", strict=True), AfterValidator(_exam_year)]


# ---- registry and sign-up ----------------------------------------------------------------------

class CheckPasserRequest(Contract):
    """Step one of sign-up: is this name + ID number in the exam-passer registry (社工库)?"""
    name: RealName
    id_number: IdNumber


class CheckPasserResponse(Contract):
    level: Level
    management_number: str = Field(title="职业水平证书管理号")
    exam_year: int


class SignUpRequest(Contract):
    """The password must also pass the strength rule (error ``PASSWORD_TOO_WEAK``)."""
    name: RealName
    id_number: IdNumber
    email: Email
    password: str = Field(title="密码", min_length=8, max_length=128)


class SignUpResponse(Contract):
    person_id: Uuid
    name: str
    id_number_masked: str
    level: Level
    management_number: str


# ---- login and tokens --------------------------------------------------------------------------

class LoginRequest(Contract):
    login: str = Field(title="身份证号或电子邮箱", min_length=1, max_length=254)
    password: str = Field(title="密码", min_length=1, max_length=128)


class TokenResponse(Contract):
    """``access_token`` goes with every call (context data ``auth_token``); when it expires,
    ``identity.refresh`` with ``refresh_token`` gives a new pair (the old refresh token is spent)."""
    access_token: str
    token_type: str = "Bearer"
    expires_at: dt.datetime
    subject: str
    role: str
    refresh_token: str | None = None
    refresh_expires_at: dt.datetime | None = None


class RefreshRequest(Contract):
    refresh_token: str = Field(title="刷新令牌", min_length=1, max_length=200)


class Acknowledged(Contract):
    ok: bool = True
    message: str | None = None


class PasswordResetStart(Contract):
    login: str = Field(title="身份证号或电子邮箱", min_length=1, max_length=254)


class PasswordResetStarted(Contract):
    """The same answer whether or not the account exists (no way to probe for accounts)."""
    message: str
    expires_in_seconds: int


class PasswordResetConfirm(Contract):
    login: str = Field(title="身份证号或电子邮箱", min_length=1, max_length=254)
    code: str = Field(title="验证码", pattern=r"^\d{6}$")
    new_password: str = Field(title="新密码", min_length=8, max_length=128)


class EmailConfirmationStarted(Contract):
    message: str
    expires_in_seconds: int


class EmailConfirm(Contract):
    code: str = Field(title="邮箱验证码", pattern=r"^\d{6}$")


class EmailConfirmed(Contract):
    email: str
    confirmed_at: dt.datetime


class PersonRequest(Contract):
    """The person themself or a service; an administrator only with ``access_reason`` (audited),
    because the answer holds the raw ID number and email."""
    person_id: Uuid = Field(title="人员编号")
    access_reason: AccessReason = None


class PersonResponse(Contract):
    """Full personal data: only for the person, an officer of their region, or a service."""
    person_id: Uuid
    name: str
    id_number: str
    email: str
    level: Level
    management_number: str
    exam_year: int
    email_confirmed: bool = False


# ---- administrators: disabling and enabling an account --------------------------------------------

class AccountStatusRequest(Contract):
    """Admin: disable (or enable again) the account that logs in with ``login`` (ID number or email),
    saying why; the reason is written to the audit log with the administrator as actor."""
    login: str = Field(title="账号（身份证号或电子邮箱）", min_length=1, max_length=254)
    reason: Annotated[str, OneLine] = Field(title="理由", min_length=2, max_length=200)


class AccountState(Contract):
    """The account after the change: never the raw ID number (``login_masked``: 110***********1239,
    or l***@example.cn). ``changed`` is false when it was already in the state asked for."""
    person_id: str
    login_masked: str
    role: str
    disabled: bool
    disabled_at: dt.datetime | None = None
    disabled_reason: str | None = None
    changed: bool


# ---- 反馈 (feedback): a person not found in the registry asks to be added -----------------------

class FeedbackStatus(str, Enum):
    PENDING = "pending"       # 待处理
    APPROVED = "approved"     # 已通过: the person is in the registry and may sign up
    REJECTED = "rejected"     # 未通过: the reason is emailed to the person


PROOF_TYPES = ("application/pdf", "image/jpeg", "image/png")


def _filename(value: str) -> str:
    if any(ch in value for ch in "/\\"):
        raise ValueError("文件名不能含路径")
    return value


class ProofFile(Contract):
    """证明材料: PDF, JPEG or PNG, base64 in the JSON body (size limit: FEEDBACK_PROOF_MAX_BYTES)."""
    filename: Annotated[str, Field(title="文件名", min_length=1, max_length=100), OneLine, AfterValidator(_filename)]
    content_type: Literal["application/pdf", "image/jpeg", "image/png"] = Field(title="文件类型")
    content_base64: str = Field(title="文件内容", min_length=1, max_length=14_000_000)


class FeedbackRequest(Contract):
    """反馈. ``region_code`` (the county where the person works or lives) decides which officers
    review it; left out, the region code of the ID number is used."""
    name: RealName
    id_number: IdNumber
    email: Email
    level: Level = Field(title="职业水平")
    exam_year: ExamYear
    management_number: ManagementNumber | None = None
    note: Annotated[str, Field(title="说明", max_length=500), MultiLine] = ""
    region_code: RegionCode | None = None
    proof: ProofFile | None = Field(default=None, title="证明材料")


class FeedbackReceipt(Contract):
    feedback_id: Uuid
    status: FeedbackStatus
    submitted_at: dt.datetime


class FeedbackQuery(Contract):
    status: FeedbackStatus = Field(default=FeedbackStatus.PENDING, title="状态")
    page: StrictInt = Field(default=1, title="页码", ge=1, le=100000)
    page_size: StrictInt = Field(default=20, title="每页条数", ge=1, le=200)


class FeedbackItem(Contract):
    """One feedback in an officer's list (ID number and email masked; open it for the full data)."""
    feedback_id: Uuid
    status: FeedbackStatus
    name: str
    id_number_masked: str
    level: Level
    exam_year: int
    management_number: str | None
    region_code: str
    has_proof: bool
    submitted_at: dt.datetime
    decided_by: str | None = None
    decided_at: dt.datetime | None = None
    reason: str | None = None


class FeedbackPage(Contract):
    items: list[FeedbackItem]
    page: int
    page_size: int
    total: int


class ProofLink(Contract):
    filename: str
    content_type: str
    size: int
    sha256: str
    url: str
    expires_in_seconds: int


class FeedbackDetail(FeedbackItem):
    """The full feedback for an officer of its region (each opening is audited)."""
    id_number: str
    email: str
    note: str
    proof: ProofLink | None = None


class FeedbackDecision(str, Enum):
    APPROVE = "approve"
    REJECT = "reject"


class FeedbackDecisionRequest(Contract):
    """Approve (the person is added to the registry; ``management_number`` is required unless the
    person gave it) or reject with a ``reason`` the person reads in the email."""
    feedback_id: Uuid = Field(title="反馈编号")
    decision: FeedbackDecision = Field(title="处理结论")
    reason: Annotated[str, Field(max_length=500), MultiLine] | None = Field(default=None, title="理由",
                                                                             validate_default=True)
    management_number: ManagementNumber | None = None

    @field_validator("reason")
    @classmethod
    def _reason_for_rejection(cls, value: str | None, info: ValidationInfo):
        if info.data.get("decision") == FeedbackDecision.REJECT and not (value or "").strip():
            raise ValueError("不通过时须填写理由")
        return value


class FeedbackStatusRequest(Contract):
    """The submitter, without an account: the 反馈编号 from the receipt and the ID number it was
    submitted with. Both must match; a mismatch is answered exactly as an unknown id."""
    feedback_id: Uuid = Field(title="反馈编号")
    id_number: IdNumber


class FeedbackStatusAnswer(Contract):
    """待处理 / 已通过 (the person may sign up) / 未通过 with the reason the officer gave."""
    feedback_id: Uuid
    status: FeedbackStatus
    submitted_at: dt.datetime
    decided_at: dt.datetime | None = None
    reason: str | None = None


# ---- service-only lookups used by notification (the bus never carries addresses or codes) -----

class FeedbackRef(Contract):
    feedback_id: Uuid = Field(title="反馈编号")


class Contact(Contract):
    person_id: str | None = None    # None for a feedback submitter who has no account yet
    name: str
    email: str


class PasswordResetRef(Contract):
    reset_id: Uuid = Field(title="重置编号")


class PasswordResetMessage(Contract):
    person_id: Uuid
    name: str
    email: str
    code: str
    expires_at: dt.datetime


class EmailConfirmationRef(Contract):
    confirmation_id: Uuid = Field(title="验证编号")


class EmailConfirmationMessage(Contract):
    person_id: Uuid
    name: str
    email: str
    code: str
    expires_at: dt.datetime


class OfficerContactsRequest(Contract):
    """Officers whose jurisdiction covers ``region_code`` (a county code), optionally of one level."""
    region_code: str = Field(title="行政区划代码", pattern=r"^\d{6}$")
    level: str | None = Field(default=None, title="审核层级", pattern=r"^(county|city|province)$")


class OfficerContacts(Contract):
    items: list[Contact]
