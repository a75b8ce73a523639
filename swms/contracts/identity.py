from __future__ import annotations

import datetime as dt

from pydantic import Field

from swms.contracts.common import Contract, Email, IdNumber, Level, PersonName, Uuid


class CheckPasserRequest(Contract):
    """Step one of sign-up: is this name + ID number in the exam-passer registry (社工库)?"""
    name: PersonName
    id_number: IdNumber


class CheckPasserResponse(Contract):
    level: Level
    management_number: str = Field(title="职业水平证书管理号")
    exam_year: int


class SignUpRequest(Contract):
    name: PersonName
    id_number: IdNumber
    email: Email
    password: str = Field(title="密码", min_length=8, max_length=128)


class SignUpResponse(Contract):
    person_id: Uuid
    name: str
    id_number_masked: str
    level: Level
    management_number: str


class LoginRequest(Contract):
    login: str = Field(title="身份证号或电子邮箱", min_length=1, max_length=254)
    password: str = Field(title="密码", min_length=1, max_length=128)


class TokenResponse(Contract):
    access_token: str
    token_type: str = "Bearer"
    expires_at: dt.datetime
    subject: str
    role: str


class PersonRequest(Contract):
    person_id: Uuid = Field(title="人员编号")


class PersonResponse(Contract):
    """Full personal data: only for the person, an officer of their region, or a service."""
    person_id: Uuid
    name: str
    id_number: str
    email: str
    level: Level
    management_number: str
    exam_year: int


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


class OfficerContactsRequest(Contract):
    """Officers whose jurisdiction covers ``region_code`` (a county code), optionally of one level."""
    region_code: str = Field(title="行政区划代码", pattern=r"^\d{6}$")
    level: str | None = Field(default=None, title="审核层级", pattern=r"^(county|city|province)$")


class OfficerContacts(Contract):
    items: list[Contact]
