"""One character policy for free text that people type and others read: printed on a certificate,
sent in an email, shown on a reviewer's screen (docs/contracts.md, "Free text").

Refused, naming the field (code ``TEXT_CHARACTERS_NOT_ALLOWED``):

* control characters: C0 (U+0000–U+001F), DEL, C1 (U+0080–U+009F). A multi-line field (reasons,
  descriptions, notes) takes the line feed U+000A and no other: no tab, no carriage return;
* the line and paragraph separators U+2028 and U+2029;
* invisible format characters (category Cf): bidi marks, embeddings and overrides (U+202A–U+202E),
  isolates (U+2066–U+2069), zero-width space and joiners (U+200B–U+200D), BOM, soft hyphen, tags;
* private-use characters (U+E000–U+F8FF, planes 15 and 16), surrogates, noncharacters and
  unassigned code points;
* emoji: pictographs (Extended_Pictographic: 😀 ❤ ☎ and also © ® ™), characters shown as emoji by
  default (Emoji_Presentation, flags), skin-tone modifiers, the emoji variation selectors U+FE0E and
  U+FE0F and the keycap U+20E3. Decision: the certificate font has no emoji, an emoji (ZWJ) sequence
  looks different on every screen, and no name, unit, address, title or reason needs one;
* the markup brackets ``<`` and ``>``.

Kept: letters and marks of every script, 汉字 of every CJK extension (䶮 U+4DAE, 𠮷 U+20BB7),
digits, punctuation (the name middle dot ·), other symbols (℃ № ★ ㎡), spaces.

Unicode data comes from the ``regex`` module, which follows Unicode more closely than Python's
``unicodedata`` (14.0 in Python 3.11): characters of recent CJK extensions count as assigned.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import regex
from pydantic_core import PydanticCustomError, core_schema

from swms import error_codes

ERROR_TYPE = "text_characters_not_allowed"   # pydantic error type; swms.rpc maps it to the code

_REFUSED = r"\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}" \
           r"\p{Extended_Pictographic}\p{Emoji_Presentation}\p{Emoji_Modifier}\uFE0E\uFE0F\u20E3<>"
_ONE_LINE = regex.compile(rf"[\p{{Cc}}{_REFUSED}]")
_MULTI_LINE = regex.compile(rf"[\x00-\x09\x0B-\x1F\x7F-\x9F{_REFUSED}]")   # Cc without the line feed
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_EMOJI = regex.compile(r"[\p{Extended_Pictographic}\p{Emoji_Presentation}\p{Emoji_Modifier}\uFE0E\uFE0F\u20E3]")

# The quick check that clears almost every value (a registry import checks millions of rows):
# str.isprintable is false for every control, format, private-use, surrogate, unassigned (as Python
# knows Unicode) and separator character but the space; what it lets through is looked up in the set
# of emoji (they lie in these spans, Unicode's emoji-data; a test compares every code point of planes
# 0 and 1) and markup. Both run in C. A value that fails either gets the full search above, which
# decides and says where.
_EMOJI_OR_MARKUP = frozenset(ch for span in (range(0x80, 0x3400), range(0xFE0E, 0xFE10), range(0x1F000, 0x20000))
                             for ch in map(chr, span) if _EMOJI.match(ch)) | {"<", ">"}

# Spaces (category Zs) a field may be padded with; trimming them changes nothing a reader sees.
SPACES = " \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"


@dataclass(frozen=True)
class TextProblem:
    """The first refused character of a text."""
    position: int        # 1-based, in characters
    code_point: str      # "U+202E"
    kind: str            # Chinese, for people: 文字方向控制符
    kind_en: str         # English, for operators' import reports

    def message(self, label: str) -> str:
        return f"{label}含有不允许的{self.kind}（第{self.position}个字符，{self.code_point}）"

    def english(self) -> str:
        return f"{self.kind_en} {self.code_point} at character {self.position}"


def _kinds(ch: str) -> tuple[str, str]:
    if ch in "\n\u2028\u2029":
        return "换行符", "line break"
    if ch == "\r":
        return "回车符", "carriage return"
    if ch == "\t":
        return "制表符", "tab"
    if ch in "<>":
        return "尖括号（< >）", "markup bracket"
    if ch in _BIDI:
        return "文字方向控制符", "bidi control"
    if _EMOJI.match(ch):
        return "表情符号", "emoji"
    category = regex.match(r"\p{Cc}|(\p{Cf})|(\p{Co})|(\p{Cs})", ch)
    if category is None:
        return "未分配的字符", "unassigned code point"
    if category.group(1):
        return "不可见的格式字符", "invisible format character"
    if category.group(2):
        return "私用区字符", "private-use character"
    if category.group(3):
        return "无效字符（代理码位）", "surrogate"
    return "控制字符", "control character"


def problem(value: str, multiline: bool = False) -> TextProblem | None:
    """The first character of ``value`` the policy refuses, or None."""
    if value.isprintable() and _EMOJI_OR_MARKUP.isdisjoint(value):
        return None
    found = (_MULTI_LINE if multiline else _ONE_LINE).search(value)
    if found is None:
        return None
    ch = found.group()
    kind, kind_en = _kinds(ch)
    return TextProblem(found.start() + 1, f"U+{ord(ch):04X}", kind, kind_en)


def refusal(field: str, label: str, found: TextProblem) -> "SwmsError":
    message = found.message(label)
    from swms.errors import SwmsError  # here, not at the top: the gateway imports this module without nameko
    return SwmsError(error_codes.TEXT_CHARACTERS_NOT_ALLOWED, message, field, [
        {"field": field, "code": error_codes.TEXT_CHARACTERS_NOT_ALLOWED, "message": message, "reason": ERROR_TYPE,
         "position": found.position, "code_point": found.code_point}])


def check(value: str, field: str, label: str, multiline: bool = False) -> str:
    """``value`` if the policy allows it; a SwmsError naming ``field`` (shown as ``label``) if not."""
    found = problem(value, multiline)
    if found is not None:
        raise refusal(field, label, found)
    return value


@dataclass(frozen=True)
class TextPolicy:
    """Annotated metadata for a pydantic ``str`` field: the policy checks the value as received,
    before whitespace is stripped (a trailing control character is refused, never quietly cut).
    Place it after ``Field(...)`` so that length errors keep their own type:
    ``Annotated[str, Field(title="通讯地址", max_length=200), OneLine]``."""
    multiline: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self._validate, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler) -> dict:
        json_schema = handler(schema)
        json_schema["x-text-policy"] = "multi-line" if self.multiline else "one-line"
        return json_schema

    def _validate(self, value: Any) -> Any:
        if isinstance(value, str):
            found = problem(value, self.multiline)
            if found is not None:
                raise PydanticCustomError(ERROR_TYPE, "含有不允许的{kind}（第{position}个字符，{code_point}）",
                                          {"kind": found.kind, "position": found.position,
                                           "code_point": found.code_point})
        return value


OneLine = TextPolicy()                    # names, units, positions, addresses, titles, file names
MultiLine = TextPolicy(multiline=True)    # reasons, descriptions, notes: line feeds allowed

DisplayText = Annotated[str, OneLine]
MultilineText = Annotated[str, MultiLine]
