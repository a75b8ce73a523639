"""Profile: the personal information form (个人信息表) — basic information with the ID photo, work
experience (工作经历), honours (个人荣誉) — the directory of registered social-work service
organisations, and the completeness check (系统校验)."""
from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator, model_validator

from swms.contracts.common import Contract, Email, Level, RegionCode, UnitCategory, Uuid

# ---- vocabularies ------------------------------------------------------------------------------

# GB/T 3304-1991 民族名称: the 56 ethnic groups, plus its codes 97 and 98.
ETHNICITIES = (
    "汉族", "蒙古族", "回族", "藏族", "维吾尔族", "苗族", "彝族", "壮族", "布依族", "朝鲜族", "满族", "侗族",
    "瑶族", "白族", "土家族", "哈尼族", "哈萨克族", "傣族", "黎族", "傈僳族", "佤族", "畲族", "高山族", "拉祜族",
    "水族", "东乡族", "纳西族", "景颇族", "柯尔克孜族", "土族", "达斡尔族", "仫佬族", "羌族", "布朗族", "撒拉族",
    "毛南族", "仡佬族", "锡伯族", "阿昌族", "普米族", "塔吉克族", "怒族", "乌孜别克族", "俄罗斯族", "鄂温克族",
    "德昂族", "保安族", "裕固族", "京族", "塔塔尔族", "独龙族", "鄂伦春族", "赫哲族", "门巴族", "珞巴族", "基诺族",
    "其他", "外国血统中国籍人士",
)


class PoliticalStatus(str, Enum):
    """政治面貌 (GB/T 4762, in the short forms the forms use)."""
    CPC_MEMBER = "中共党员"
    CPC_PROBATIONARY = "中共预备党员"
    CYL_MEMBER = "共青团员"
    RCCK = "民革党员"
    CDL = "民盟盟员"
    CNDCA = "民建会员"
    CAPD = "民进会员"
    CPWDP = "农工党党员"
    CZGP = "致公党党员"
    JIUSAN = "九三学社社员"
    TDSGL = "台盟盟员"
    NON_PARTY = "无党派人士"
    MASSES = "群众"


class Education(str, Enum):
    """学历 (highest completed)."""
    DOCTORATE = "博士研究生"
    MASTER = "硕士研究生"
    BACHELOR = "本科"
    COLLEGE = "大专"
    SECONDARY_VOCATIONAL = "中专"
    HIGH_SCHOOL = "高中"
    JUNIOR_OR_BELOW = "初中及以下"


def _ethnicity(value: str) -> str:
    if value not in ETHNICITIES:
        raise ValueError("请从民族列表中选择（GB/T 3304，如“汉族”）")
    return value


Ethnicity = Annotated[str, Field(title="民族", min_length=1, max_length=20), AfterValidator(_ethnicity)]


def _plain_text(value: str) -> str:
    # Free text shown to officers and printed: no control characters or markup.
    if any(ord(ch) < 32 and ch not in "\n\t" for ch in value) or "<" in value or ">" in value:
        raise ValueError("含有不允许的字符")
    return value


Text = AfterValidator(_plain_text)


# ---- basic information -------------------------------------------------------------------------

class BasicInfoRequest(Contract):
    """基础信息 (basic information). Name, ID number, gender and birth date come from identity and
    the ID number, never retyped. Every field is required; ``email`` defaults to the account's.

    Unit: with 单位类别 社会工作服务机构 the unit is chosen from the directory (``unit_directory_id``;
    a typed ``unit_name`` is refused unless it is exactly the directory's name); with any other
    category ``unit_name`` is typed and ``unit_directory_id`` must be empty.
    Region: ``region_code`` is the county (区县) code; ``province_code`` and ``city_code`` may be sent
    too (as a cascading picker does) and must then agree with it.
    """
    ethnicity: Ethnicity
    political_status: PoliticalStatus = Field(title="政治面貌")
    education: Education = Field(title="学历")
    major: Annotated[str, Field(title="所学专业", min_length=1, max_length=50), Text]
    mobile: str = Field(title="手机号码", pattern=r"^1[3-9]\d{9}$")
    email: Email | None = Field(default=None, title="电子邮箱")
    address: Annotated[str, Field(title="通讯地址", min_length=1, max_length=200), Text]
    province_code: RegionCode | None = Field(default=None, title="登记区域（省级代码）")
    city_code: RegionCode | None = Field(default=None, title="登记区域（地市代码）")
    region_code: RegionCode = Field(title="登记区域（区县代码）")
    unit_category: UnitCategory = Field(title="单位类别")
    unit_directory_id: Uuid | None = Field(default=None, title="单位（从社会工作服务机构目录选择）")
    unit_name: Annotated[str, Field(title="单位名称", min_length=1, max_length=100), Text] | None = None
    position: Annotated[str, Field(title="职务", min_length=1, max_length=50), Text]
    truth_commitment: bool = Field(title="如实填写承诺", json_schema_extra={"error_code": "COMMITMENT_REQUIRED"})

    @field_validator("truth_commitment")
    @classmethod
    def _commitment_given(cls, value: bool) -> bool:
        if not value:
            raise ValueError("须承诺所填信息真实（《社会工作者职业道德指引》）")
        return value


class PhotoInfo(Contract):
    """The current ID photo (照片), as checked when it arrived."""
    photo_key: str
    content_type: str                 # image/jpeg or image/png, detected from the content
    width: int
    height: int
    size_bytes: int
    photo_size: str                   # 一寸 / 二寸
    uploaded_at: dt.datetime


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
    unit_category: UnitCategory | None = None


class Honour(Contract):
    """个人荣誉."""
    honour_id: str
    title: str
    level: HonourLevel
    awarding_body: str
    awarded_on: dt.date
    proof_key: str | None = None


class ProfileResponse(Contract):
    """The whole 个人信息表 as its owner or an officer of the region sees it (ID number masked).
    Basic fields are empty until 基础信息 is first saved (a photo or work experience may come first)."""
    person_id: Uuid
    name: str
    id_number_masked: str
    gender: str
    birth_date: dt.date
    level: Level
    management_number: str
    ethnicity: str | None = None
    political_status: PoliticalStatus | None = None
    education: str | None = None
    major: str | None = None
    mobile: str | None = None
    email: str | None = None
    address: str | None = None
    province_code: str | None = None
    city_code: str | None = None
    region_code: str | None = None
    unit_category: UnitCategory | None = None
    unit_directory_id: str | None = None
    unit_credit_code: str | None = None
    unit_name: str | None = None
    position: str | None = None
    truth_committed_at: dt.datetime | None = None
    updated_at: dt.datetime
    photo: PhotoInfo | None = None
    work_experiences: list[WorkExperience] = []
    honours: list[Honour] = []
    revision: int = 0


class PersonRef(Contract):
    person_id: Uuid = Field(title="人员编号")


class CompletenessItem(Contract):
    """One missing or invalid item of the form."""
    field: str                        # e.g. ethnicity, photo, work_experiences.<id>.proof_keys
    label: str                        # the words the form shows, e.g. 民族, 照片
    code: str                         # MISSING or INVALID
    message: str


class CompletenessResponse(Contract):
    """系统校验: whether the form is complete, and each missing or invalid item."""
    complete: bool
    missing: list[str]                # the labels of ``items``, in form order
    items: list[CompletenessItem] = []


# ---- uploads (photo and proof files go straight to object storage) -----------------------------

class UploadPurpose(str, Enum):
    PHOTO = "photo"                   # 照片: JPEG or PNG, 1-inch or 2-inch pixel size
    PROOF = "proof"                   # 证明材料: PDF, JPEG or PNG


class UploadRequest(Contract):
    purpose: UploadPurpose = Field(title="用途")


class UploadTicket(Contract):
    """Where and how to send the file: an HTML-form POST (multipart/form-data) of ``fields`` plus
    the file as the last part named ``file``, to ``url``, before ``expires_at``. Then pass
    ``upload_id`` to ``confirm_photo`` or to a work-experience / honour save, which checks the
    file's content; a file never confirmed is deleted after the ticket expires."""
    upload_id: str
    method: str = "POST"
    url: str
    fields: dict[str, str]
    max_bytes: int
    accepted_types: list[str]
    expires_at: dt.datetime
    expires_in_seconds: int


class UploadRef(Contract):
    upload_id: Uuid = Field(title="上传编号")


class PhotoRef(Contract):
    person_id: Uuid = Field(title="人员编号")
    photo_key: str = Field(title="照片", min_length=1, max_length=200)


class PhotoLink(Contract):
    """A short-lived GET link to a stored ID photo (services only: e.g. certificate rendering)."""
    url: str
    content_type: str
    expires_in_seconds: int


class FileRef(Contract):
    person_id: Uuid = Field(title="人员编号")
    file_key: str = Field(title="文件", min_length=1, max_length=200)


class FileLink(Contract):
    """A short-lived download link to a photo or proof file, for people's browsers."""
    url: str
    content_type: str
    expires_in_seconds: int


# ---- work experience and honours ---------------------------------------------------------------

def _not_future(value: dt.date | None) -> dt.date | None:
    if value is not None and value > dt.date.today():
        raise ValueError("不能晚于今天")
    return value


PastDate = Annotated[dt.date, AfterValidator(_not_future)]
_DATE_RULE = {"error_code": "DATE_INVALID"}


class WorkExperienceRequest(Contract):
    """Adds a 工作经历 (no ``experience_id``) or replaces one. The unit follows the basic-information
    rule. ``proof_keys``: proof files of this experience to keep; ``proof_upload_ids``: new ones.
    三区计划 / 牵手计划 = 是 needs at least one proof; with neither, no proof is kept."""
    experience_id: Uuid | None = Field(default=None, title="工作经历编号")
    unit_category: UnitCategory = Field(title="单位类别")
    unit_directory_id: Uuid | None = Field(default=None, title="单位（从社会工作服务机构目录选择）")
    unit_name: Annotated[str, Field(title="单位名称", min_length=1, max_length=100), Text] | None = None
    position: Annotated[str, Field(title="职务", min_length=1, max_length=50), Text]
    start_date: PastDate = Field(title="开始日期", json_schema_extra=_DATE_RULE)
    end_date: PastDate | None = Field(default=None, title="结束日期", json_schema_extra=_DATE_RULE)
    description: Annotated[str, Field(title="工作描述", max_length=1000), Text] = ""
    sanqu_programme: bool = Field(default=False, title="是否参与三区计划")
    qianshou_programme: bool = Field(default=False, title="是否参与牵手计划")
    proof_keys: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default=[], title="保留的证明材料", max_length=10)
    proof_upload_ids: list[Uuid] = Field(default=[], title="新上传的证明材料", max_length=10)


class WorkExperienceRef(Contract):
    experience_id: Uuid = Field(title="工作经历编号")


class HonourRequest(Contract):
    """Adds a 个人荣誉 (no ``honour_id``) or replaces one; the proof is optional: keep the stored one
    (``proof_key``) or send a new upload (``proof_upload_id``), not both."""
    honour_id: Uuid | None = Field(default=None, title="荣誉编号")
    title: Annotated[str, Field(title="荣誉名称", min_length=1, max_length=100), Text]
    level: HonourLevel = Field(title="荣誉等级")
    awarding_body: Annotated[str, Field(title="授予单位", min_length=1, max_length=100), Text]
    awarded_on: PastDate = Field(title="获得日期", json_schema_extra=_DATE_RULE)
    proof_key: str | None = Field(default=None, title="证明材料", min_length=1, max_length=200)
    proof_upload_id: Uuid | None = Field(default=None, title="新上传的证明材料")


class HonourRef(Contract):
    honour_id: Uuid = Field(title="荣誉编号")


class ChangeResponse(Contract):
    """The form's revision after a change (every change increases it by one)."""
    person_id: str
    revision: int


class WorkExperienceResponse(ChangeResponse):
    experience: WorkExperience


class HonourResponse(ChangeResponse):
    honour: Honour


class PhotoResponse(ChangeResponse):
    photo: PhotoInfo


# ---- directory of registered social-work service organisations ---------------------------------

class OrganisationSearchRequest(Contract):
    """Search by part of the name and/or by region (a province, city or county code: 110000 finds
    all of Beijing, 110100 its districts, 110105 one district). At least one of the two."""
    name: str | None = Field(default=None, title="机构名称", min_length=2, max_length=100)
    region_code: RegionCode | None = Field(default=None, title="所在地区代码")
    page: int = Field(default=1, title="页码", ge=1, le=1000)
    page_size: int = Field(default=20, title="每页条数", ge=1, le=50)

    @model_validator(mode="after")
    def _something_to_search(self):
        if self.name is None and self.region_code is None:
            raise ValueError("请输入机构名称或选择地区")
        return self


class Organisation(Contract):
    org_id: str
    credit_code: str                  # 统一社会信用代码 (GB 32100-2015)
    name: str
    region_code: str


class OrganisationPage(Contract):
    items: list[Organisation]
    total: int
    page: int
    page_size: int


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

    def file_keys(self) -> list[str]:
        """Every stored file this copy names (photo, proofs of work experience and honours): what a
        submission of it holds in profile."""
        keys = [self.photo_key] + [key for job in self.work_experiences for key in job.proof_keys] + [
            honour.proof_key for honour in self.honours]
        return sorted({key for key in keys if key})
