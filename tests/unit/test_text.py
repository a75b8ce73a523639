"""The one text policy (swms/text.py): what free text may hold, as a table of hostile and
legitimate strings, and how contracts, the RPC error and the plain-Python check report a refusal."""
from __future__ import annotations

import pytest
import regex

from swms import errors, idcard, text
from swms.contracts.identity import FeedbackDecisionRequest, SignUpRequest, name_problem
from swms.contracts.profile import BasicInfoRequest, WorkExperienceRequest
from swms.contracts.registration import ReRegistrationDraftRequest
from swms.contracts.review import DecideRequest
from swms.rpc import parse

LEGITIMATE = [
    "𠮷",                                   # U+20BB7, CJK Extension B (a surname)
    "䶮",                                   # U+4DAE, CJK Extension A
    "\U00031350",                           # CJK Extension H (Unicode 15): assigned, though Python 3.11's tables predate it
    "阿沛·阿旺晋美",                          # the name middle dot
    "欧阳・娜仁",                              # the katakana middle dot some keyboards type
    "北京市朝阳区阳光社会工作服务中心（第二分中心）",
    "二〇二四年度优秀社会工作者",                # 〇 (U+3007) as a Chinese zero
    "朝阳门外大街1号 3单元 ２０１室",
    "室温37℃ 面积60㎡ №5 ★级",                # symbols that are not emoji
    "Li Ming & Sons \"A\" 'B'",
    "བཀྲ་ཤིས་",                                # Tibetan, with its combining vowel signs
    "ئابدۇرېھىم",                              # Uyghur in Arabic script
    "李\u3000明",                            # a full-width space
]

# (value, kind, position, code point)
HOSTILE = [
    ("单位\u202e名称", "文字方向控制符", 3, "U+202E"),       # RIGHT-TO-LEFT OVERRIDE
    ("\u2066阳光\u2069", "文字方向控制符", 1, "U+2066"),     # isolates U+2066-2069
    ("阳光\u2067社工", "文字方向控制符", 3, "U+2067"),
    ("阳光\u2068社工", "文字方向控制符", 3, "U+2068"),
    ("阳光社工\u2069", "文字方向控制符", 5, "U+2069"),
    ("阳光\u200f社工", "文字方向控制符", 3, "U+200F"),       # RIGHT-TO-LEFT MARK
    ("阳光👨\u200d👩\u200d👧社工", "表情符号", 3, "U+1F468"),  # a ZWJ sequence: refused at its first emoji
    ("社\u200d工", "不可见的格式字符", 2, "U+200D"),          # a lone ZERO WIDTH JOINER
    ("社\u200b工", "不可见的格式字符", 2, "U+200B"),
    ("\ufeff社工", "不可见的格式字符", 1, "U+FEFF"),
    ("阳光社工😀", "表情符号", 5, "U+1F600"),
    ("爱心❤服务", "表情符号", 3, "U+2764"),
    ("🇨🇳社工", "表情符号", 1, "U+1F1E8"),                  # a flag (regional indicators)
    ("社工\U0001F3FB", "表情符号", 3, "U+1F3FB"),            # a skin-tone modifier alone
    ("1\ufe0f\u20e3号", "表情符号", 2, "U+FE0F"),            # keycap 1️⃣
    ("某某©公司", "表情符号", 3, "U+00A9"),                  # Extended_Pictographic: decided, see docs
    ("私\ue000用", "私用区字符", 2, "U+E000"),
    ("社\U000F0000工", "私用区字符", 2, "U+F0000"),
    ("未\u0378分配", "未分配的字符", 2, "U+0378"),
    ("非字符\uffff", "未分配的字符", 4, "U+FFFF"),
    ("代理\ud800", "无效字符（代理码位）", 3, "U+D800"),
    ("下\u0085一行", "控制字符", 2, "U+0085"),               # C1 NEXT LINE
    ("删除\x7f", "控制字符", 3, "U+007F"),
    ("第一行\n第二行", "换行符", 4, "U+000A"),
    ("第一行\u2028第二行", "换行符", 4, "U+2028"),
    ("单位\t名称", "制表符", 3, "U+0009"),
    ("空\x00字符", "控制字符", 2, "U+0000"),
    ("<b>单位</b>", "尖括号（< >）", 1, "U+003C"),
    ("标签\U000E0041", "不可见的格式字符", 3, "U+E0041"),    # a tag character
]


@pytest.mark.parametrize("value", LEGITIMATE)
def test_legitimate_text_passes_on_one_line_and_on_several(value):
    assert text.problem(value) is None
    assert text.problem(value, multiline=True) is None
    assert text.check(value, "unit_name", "单位名称") == value


@pytest.mark.parametrize("value, kind, position, code_point", HOSTILE)
def test_hostile_text_is_refused_naming_the_character(value, kind, position, code_point):
    found = text.problem(value)
    assert (found.kind, found.position, found.code_point) == (kind, position, code_point)
    with pytest.raises(errors.SwmsError) as caught:
        text.check(value, "unit_name", "单位名称")
    assert (caught.value.code, caught.value.field) == ("TEXT_CHARACTERS_NOT_ALLOWED", "unit_name")
    assert caught.value.message == f"单位名称含有不允许的{kind}（第{position}个字符，{code_point}）"
    assert caught.value.details[0]["code_point"] == code_point


def test_a_multi_line_field_takes_the_line_feed_and_nothing_else():
    assert text.problem("第一条：材料不全\n第二条：照片模糊", multiline=True) is None
    for value, kind in (("第一条\r\n第二条", "回车符"), ("第一条\t第二条", "制表符"), ("第一条\u2029第二条", "换行符"),
                        ("第一条\u202e第二条", "文字方向控制符"), ("第一条\x0b第二条", "控制字符")):
        assert text.problem(value, multiline=True).kind == kind, value


def test_spaces_are_every_space_separator_and_nothing_else():
    assert text.SPACES == "".join(chr(code) for code in range(0x110000) if regex.match(r"\p{Zs}", chr(code)))
    assert not any(ch in text.SPACES for ch in "\t\n\r\x0b\x0c\x1c\x85\u2028\u200b\ufeff")


def test_the_quick_check_never_clears_what_the_full_search_refuses():
    """problem() first asks str.isprintable and the emoji set (both in C, for imports of millions of
    rows); for every code point of the BMP and the emoji plane, its answer is the full search's."""
    cleared = "".join(ch for ch in map(chr, (*range(0x20000), *range(0x20000, 0x110000, 97)))
                      if ch.isprintable() and text._EMOJI_OR_MARKUP.isdisjoint(ch))
    assert len(cleared) > 70_000
    wrong = text._ONE_LINE.search(cleared)
    assert wrong is None, f"U+{ord(wrong.group()):04X}"


# ---- through the contracts ----------------------------------------------------------------------

BASIC = {"ethnicity": "汉族", "political_status": "群众", "education": "本科", "major": "社会工作",
         "mobile": "13800138000", "address": "北京市朝阳区", "region_code": "110105", "unit_category": "社会团体",
         "unit_name": "北京市社会工作者协会", "position": "干事", "truth_commitment": True}


@pytest.mark.parametrize("field, label", [("unit_name", "单位名称"), ("address", "通讯地址"), ("position", "职务"),
                                          ("major", "所学专业"), ("email", "电子邮箱")])
@pytest.mark.parametrize("value", ["北京\u202e协会", "北京😀协会", "北京\n协会", "北京\u200d协会"])
def test_every_free_text_field_of_basic_information_follows_the_policy(field, label, value):
    if field == "email":
        value = value.replace("北京", "li").replace("协会", "@example.cn")
    with pytest.raises(errors.SwmsError) as caught:
        parse(BasicInfoRequest, {**BASIC, field: value})
    assert (caught.value.code, caught.value.field) == ("TEXT_CHARACTERS_NOT_ALLOWED", field)
    assert caught.value.message.startswith(f"{label}含有不允许的")
    detail = caught.value.details[0]
    assert (detail["code"], detail["reason"], detail["position"]) == ("TEXT_CHARACTERS_NOT_ALLOWED",
                                                                      text.ERROR_TYPE, 3)


def test_rare_characters_and_the_middle_dot_pass_the_contracts():
    form = parse(BasicInfoRequest, {**BASIC, "unit_name": "𠮷䶮·阿沛·阿旺晋美社工站"})
    assert form.unit_name == "𠮷䶮·阿沛·阿旺晋美社工站"
    assert parse(SignUpRequest, {"name": "阿沛·阿旺晋美", "id_number": "110105199003071239",
                                 "email": "a@example.cn", "password": "Strong-pass-1"}).name == "阿沛·阿旺晋美"


def test_the_policy_sees_the_value_before_spaces_are_trimmed():
    """A trailing line break is refused, not quietly cut off with the spaces around the value."""
    assert parse(BasicInfoRequest, {**BASIC, "address": "  北京市朝阳区  "}).address == "北京市朝阳区"
    with pytest.raises(errors.SwmsError) as caught:
        parse(BasicInfoRequest, {**BASIC, "address": "北京市朝阳区\n"})
    assert caught.value.code == "TEXT_CHARACTERS_NOT_ALLOWED"


def test_reasons_and_descriptions_are_multi_line():
    decided = parse(DecideRequest, {"item_id": "00000000-0000-4000-8000-000000000001", "decision": "return",
                                    "reason": "1. 照片模糊\n2. 缺少证明材料"})
    assert decided.reason == "1. 照片模糊\n2. 缺少证明材料"
    for model, payload in (
            (DecideRequest, {"item_id": "00000000-0000-4000-8000-000000000001", "decision": "reject",
                             "reason": "材料\u202e不全"}),
            (FeedbackDecisionRequest, {"feedback_id": "00000000-0000-4000-8000-000000000001",
                                       "decision": "reject", "reason": "查无\x00此人"})):
        with pytest.raises(errors.SwmsError) as caught:
            parse(model, payload)
        assert (caught.value.code, caught.value.field) == ("TEXT_CHARACTERS_NOT_ALLOWED", "reason")
        assert caught.value.message.startswith("理由含有不允许的")
    experience = {"unit_category": "企业", "unit_name": "某公司", "position": "社工", "start_date": "2020-01-01"}
    assert parse(WorkExperienceRequest, {**experience, "description": "社区服务\n青少年服务"}).description
    with pytest.raises(errors.SwmsError) as caught:
        parse(WorkExperienceRequest, {**experience, "description": "社区服务\t青少年服务"})
    assert (caught.value.code, caught.value.field) == ("TEXT_CHARACTERS_NOT_ALLOWED", "description")


def test_a_nested_field_is_named_by_its_titles_along_the_way():
    course = {"institution": "北京社会管理职业学院", "course": "个案\u202e管理", "start_date": "2026-05-01",
              "end_date": "2026-05-03", "hours": 12.5, "proof_key": "proofs/x"}
    with pytest.raises(errors.SwmsError) as caught:
        parse(ReRegistrationDraftRequest, {"offline_courses": [course]})
    assert (caught.value.code, caught.value.field) == ("TEXT_CHARACTERS_NOT_ALLOWED", "offline_courses.0.course")
    assert caught.value.message.startswith("线下学时第1项课程名称含有不允许的文字方向控制符")


def test_names_follow_the_policy_before_their_own_rule():
    # name_key drops line breaks and bidi controls with the spaces: the name must be checked as written
    assert name_problem("张\n三") == "姓名含有不允许的换行符（第2个字符，U+000A）"
    assert name_problem("张\u202e三").startswith("姓名含有不允许的文字方向控制符")
    assert name_problem("阿沛·阿旺晋美") is None and name_problem("𠮷田") is None


@pytest.mark.parametrize("raw, result", [("１１０１０５１９９００３０７１２３ｘ", "11010519900307123x"),
                                         ("110105199003071239\u3000", "110105199003071239 "),
                                         ("①10105199003071239", "①10105199003071239")])
def test_only_full_width_digits_and_x_become_ascii_in_an_id_number(raw, result):
    assert idcard.from_full_width(raw) == result
