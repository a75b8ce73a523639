"""Code checks: administrative region codes (GB/T 2260) and unified social credit codes (GB 32100-2015).

Region codes are checked for structure, not against the full county list (which changes every
year and is not shipped here): the province must be one of the 31 mainland province-level units
whose civil-affairs departments use this system, digits 3–4 (the city) must not be 00, and the
province and city codes a client sends must be the county code's prefixes. A county part of 00
is allowed, for prefecture-level cities without counties (东莞 441900, 中山 442000, 儋州 460400,
嘉峪关 620200).
"""
from __future__ import annotations

from dataclasses import dataclass

from swms import errors

MAINLAND_PROVINCES = {
    "11": "北京市", "12": "天津市", "13": "河北省", "14": "山西省", "15": "内蒙古自治区", "21": "辽宁省",
    "22": "吉林省", "23": "黑龙江省", "31": "上海市", "32": "江苏省", "33": "浙江省", "34": "安徽省",
    "35": "福建省", "36": "江西省", "37": "山东省", "41": "河南省", "42": "湖北省", "43": "湖南省",
    "44": "广东省", "45": "广西壮族自治区", "46": "海南省", "50": "重庆市", "51": "四川省", "52": "贵州省",
    "53": "云南省", "54": "西藏自治区", "61": "陕西省", "62": "甘肃省", "63": "青海省", "64": "宁夏回族自治区",
    "65": "新疆维吾尔自治区",
}


@dataclass(frozen=True)
class Region:
    province_code: str
    city_code: str
    county_code: str


def region(county_code: str, province_code: str | None = None, city_code: str | None = None,
           field: str = "region_code") -> Region:
    """The registration region of a county code; raises REGION_CODE_INVALID naming the field."""
    def refuse(message: str, at: str = field) -> errors.SwmsError:
        return errors.SwmsError(errors.REGION_CODE_INVALID, message, at)

    if len(county_code) != 6 or not county_code.isdigit():
        raise refuse("登记区域须为6位行政区划代码（GB/T 2260）")
    if county_code[:2] not in MAINLAND_PROVINCES:
        raise refuse(f"行政区划代码{county_code}的省级部分不存在")
    if county_code[2:4] == "00":
        raise refuse(f"{county_code}是省级代码，请选择到区县一级")
    result = Region(county_code[:2] + "0000", county_code[:4] + "00", county_code)
    if province_code is not None and province_code != result.province_code:
        raise refuse("省级代码与区县代码不一致", "province_code")
    if city_code is not None and city_code != result.city_code:
        raise refuse("地市代码与区县代码不一致", "city_code")
    return result


def region_prefix(code: str) -> str:
    """110000 → 11, 110100 → 1101, 110105 → 110105: what a search by region matches."""
    if code.endswith("0000"):
        return code[:2]
    if code.endswith("00"):
        return code[:4]
    return code


# ---- 统一社会信用代码 (GB 32100-2015) -------------------------------------------------------------

USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"      # 31 characters: no I, O, S, V, Z
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
CIVIL_AFFAIRS = "5"                                   # registration authority: 民政


def uscc_check_character(first17: str) -> str:
    total = sum(USCC_CHARSET.index(ch) * weight for ch, weight in zip(first17, _USCC_WEIGHTS))
    return USCC_CHARSET[(31 - total % 31) % 31]


def credit_code(raw: str) -> str:
    """The normalised code (upper case, no spaces); raises ValueError with a Chinese reason.

    Checked: 18 characters from the code's character set, the check character, digits 3–8 (the
    registration authority's region code) being digits, and the first character 5: the directory
    holds organisations registered by civil-affairs departments (社会服务机构 and the like).
    """
    code = (raw or "").strip().upper().replace(" ", "")
    if len(code) != 18:
        raise ValueError("统一社会信用代码须为18位")
    if any(ch not in USCC_CHARSET for ch in code):
        raise ValueError("统一社会信用代码含有不允许的字符（不使用I、O、S、V、Z）")
    if not code[2:8].isdigit():
        raise ValueError("统一社会信用代码第3–8位须为行政区划代码")
    if uscc_check_character(code[:17]) != code[17]:
        raise ValueError("统一社会信用代码校验位不正确")
    if code[0] != CIVIL_AFFAIRS:
        raise ValueError("不是民政部门登记的社会组织的统一社会信用代码（首位应为5）")
    return code
