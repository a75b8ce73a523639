"""Vocabularies and field types shared by the contracts.

Domain vocabularies carry the official Chinese terms as values (the words users and officers see
on the forms); error codes and identifiers stay English.
"""
from __future__ import annotations

from enum import Enum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from swms import idcard
from swms.text import OneLine


class Contract(BaseModel):
    """Unknown fields are refused, so a typo in a client is an error, not silently dropped data."""
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=False)


class Level(str, Enum):
    """职业水平 (professional level)."""
    ASSISTANT = "助理社会工作师"
    SOCIAL_WORKER = "社会工作师"
    SENIOR = "高级社会工作师"


class UnitCategory(str, Enum):
    """单位类别."""
    SOCIAL_WORK_ORGANISATION = "社会工作服务机构"
    SOCIAL_GROUP = "社会团体"
    FOUNDATION = "基金会"
    PARTY_OR_GOVERNMENT = "党政机关"
    PUBLIC_INSTITUTION = "事业单位"
    VILLAGE_OR_RESIDENTS_COMMITTEE = "村(居)委会"
    ENTERPRISE = "企业"
    OTHER = "其他"


class ApplicationKind(str, Enum):
    FIRST_REGISTRATION = "first_registration"      # 首次登记
    RE_REGISTRATION = "re_registration"            # 再登记
    REPLACEMENT = "replacement"                    # 更换电子证
    UPGRADE = "upgrade"                            # re-issue at a higher level (已出证待升级)


class ApplicationStatus(str, Enum):
    NOT_REGISTERED = "未登记"
    INITIAL_REVIEW = "初审中"
    INITIAL_REJECTED = "初审不通过"
    FINAL_REVIEW = "终审中"
    FINAL_REJECTED = "终审不通过"
    ISSUED = "已出证"
    ISSUED_PENDING_UPGRADE = "已出证待升级"
    REJECTED = "审核不通过"   # replacement e-certificate, county-only review


def _id_number(value: str) -> str:
    try:
        return idcard.parse(value).number
    except idcard.InvalidIdNumber:
        raise ValueError(idcard.MESSAGE) from None


IdNumber = Annotated[str, Field(title="身份证号", min_length=1, max_length=32,
                                 json_schema_extra={"error_code": "ID_NUMBER_INVALID"}),
                     AfterValidator(_id_number)]
# Chinese names include middle dots (·) for ethnic-minority and transliterated names and may use
# characters outside the BMP (𠮷): the text policy refuses controls, bidi, emoji, markup, no letters.
PersonName = Annotated[str, Field(title="姓名", min_length=1, max_length=50), OneLine]
RegionCode = Annotated[str, Field(title="行政区划代码", pattern=r"^\d{6}$")]
Email = Annotated[str, Field(title="电子邮箱", max_length=254,
                             pattern=r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$"), OneLine]
Uuid = Annotated[str, Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
# Reads of a person's 个人信息表 and applications by an administrator (support, read-only) must say
# why: a ticket number or the request being answered. Each such read is audited with who and why.
AccessReason = Annotated[str | None, Field(
    default=None, title="查询事由", min_length=2, max_length=200,
    description="管理员必填：查看他人个人信息的事由（如工单号），每次查看均记入审计日志；其他调用方无需填写"),
    OneLine]   # written to the audit log and read by people: the text policy


class HealthResponse(Contract):
    """Every service's ``health`` RPC: ``ok`` when its database (and object storage) answer and its
    queue consumers (RPC and events) consume; ``degraded`` names what does not."""
    service: str
    status: str                 # ok / degraded
    checks: dict[str, str]      # component -> "ok" or "error: <type>"
