from __future__ import annotations

import datetime as dt
from enum import Enum

from pydantic import Field, model_validator

from swms.contracts.common import Contract, Level, RegionCode, UnitCategory, Uuid


class BasicInfoRequest(Contract):
    """基础信息 (basic information). Name and ID number come from identity, never retyped."""
    ethnicity: str = Field(title="民族", min_length=1, max_length=20)
    education: str = Field(title="学历", min_length=1, max_length=20)
    mobile: str = Field(title="手机号码", pattern=r"^1\d{10}$")
    address: str = Field(title="通讯地址", min_length=1, max_length=200)
    region_code: RegionCode = Field(title="登记区域（区县代码）")
    unit_category: UnitCategory = Field(title="单位类别")
    unit_name: str = Field(title="单位名称", min_length=1, max_length=100)
    position: str = Field(title="职务", min_length=1, max_length=50)
    truth_commitment: bool = Field(title="如实填写承诺")

    @model_validator(mode="after")
    def _commitment_given(self):
        if not self.truth_commitment:
            raise ValueError("须承诺所填信息真实（《社会工作者职业道德指引》）")
        return self


class ProfileResponse(Contract):
    person_id: Uuid
    name: str
    id_number_masked: str
    gender: str
    birth_date: dt.date
    level: Level
    management_number: str
    ethnicity: str
    education: str
    mobile: str
    address: str
    region_code: str
    unit_category: UnitCategory
    unit_name: str
    position: str
    truth_committed_at: dt.datetime
    updated_at: dt.datetime


class PersonRef(Contract):
    person_id: Uuid = Field(title="人员编号")


class CompletenessResponse(Contract):
    """系统校验: whether the form is complete, and each missing or invalid item."""
    complete: bool
    missing: list[str]


class HonourLevel(str, Enum):
    """个人荣誉 等级."""
    VILLAGE = "村(居)"
    SUBDISTRICT = "街道(乡镇)"
    COUNTY = "区(县)"
    CITY = "地市"
    PROVINCE = "省"
    MINISTRY = "部"


class WorkExperience(Contract):
    """工作经历 as stored and as copied into registration forms."""
    experience_id: str
    unit_name: str
    unit_directory_id: str | None = None      # set when chosen from the directory of 社会工作服务机构
    position: str
    start_date: dt.date
    end_date: dt.date | None = None           # None: the current job
    description: str = ""
    sanqu_programme: bool = False             # 三区计划
    qianshou_programme: bool = False          # 牵手计划
    proof_keys: list[str] = []                # object keys of the uploaded proof files


class Honour(Contract):
    """个人荣誉."""
    honour_id: str
    title: str
    level: HonourLevel
    awarding_body: str
    awarded_on: dt.date
    proof_key: str | None = None


class PhotoRef(Contract):
    person_id: Uuid = Field(title="人员编号")
    photo_key: str = Field(title="照片", min_length=1, max_length=200)


class PhotoLink(Contract):
    """A short-lived GET link to a stored ID photo (services only: e.g. certificate rendering)."""
    url: str
    content_type: str
    expires_in_seconds: int


class ProfileSnapshot(Contract):
    """What a registration form copies from the profile, full ID number included (services only)."""
    person_id: Uuid
    name: str
    id_number: str
    gender: str
    birth_date: dt.date
    level: Level
    management_number: str
    exam_year: int
    region_code: str
    unit_category: UnitCategory
    unit_name: str
    position: str
    photo_key: str | None = None
    work_experiences: list[WorkExperience] = []
    honours: list[Honour] = []
    revision: int = 0                         # the profile revision this snapshot was taken at
