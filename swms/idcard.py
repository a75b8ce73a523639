"""Resident identity card number (公民身份号码), GB 11643-1999.

18 characters: 6-digit administrative region code, 8-digit birth date (YYYYMMDD, a real date, not
in the future), 3-digit sequence (odd = male, even = female) and a check character computed with
ISO 7064 MOD 11-2. Region codes are checked only for shape: a code retired from today's GB/T 2260
list stays valid on the cards issued under it.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_SHAPE = re.compile(r"^[1-9][0-9]{16}[0-9X]$")  # ASCII only: \d would accept other scripts' digits
_EARLIEST_BIRTH = dt.date(1880, 1, 1)

MESSAGE = "请输入正确的身份证号"


@dataclass(frozen=True)
class ResidentId:
    number: str            # normalised: upper-case X
    region_code: str
    birth_date: dt.date
    gender: str            # "男" / "女"

    @property
    def masked(self) -> str:
        return mask(self.number)


class InvalidIdNumber(ValueError):
    """Raised with a short English reason; callers show ``MESSAGE`` to people."""


# Full-width digits, Ｘ and the full-width space, as Chinese input methods type them, are the same
# characters as their ASCII forms. Nothing else is mapped: NFKC would also turn circled ①,
# superscript ¹ or mathematical 𝟏 into digits, quietly accepting what nobody types into an ID number.
_FULL_WIDTH = str.maketrans({**{chr(0xFF10 + digit): str(digit) for digit in range(10)},
                             "Ｘ": "X", "ｘ": "x", "\u3000": " "})


def from_full_width(raw: str) -> str:
    return raw.translate(_FULL_WIDTH)


def check_character(first17: str) -> str:
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS))
    return _CHECK_CHARS[total % 11]


def parse(raw: str, today: dt.date | None = None) -> ResidentId:
    if not isinstance(raw, str):
        raise InvalidIdNumber("not a string")
    number = raw.strip().upper()
    if len(number) != 18:
        raise InvalidIdNumber(f"length {len(number)}, expected 18")
    if not _SHAPE.match(number):
        raise InvalidIdNumber("only digits, with X allowed as the last character")
    try:
        birth = dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise InvalidIdNumber("birth date is not a real date") from None
    if not (_EARLIEST_BIRTH <= birth <= (today or dt.date.today())):
        raise InvalidIdNumber("birth date out of range")
    if check_character(number[:17]) != number[17]:
        raise InvalidIdNumber("wrong check character")
    gender = "男" if int(number[16]) % 2 == 1 else "女"
    return ResidentId(number, number[:6], birth, gender)


def is_valid(raw: str) -> bool:
    try:
        parse(raw)
    except InvalidIdNumber:
        return False
    return True


def mask(number: str) -> str:
    """Keep the first 3 and last 4 characters: 110***********4514 (never log the full number)."""
    if len(number) < 8:
        return "*" * len(number)
    return number[:3] + "*" * (len(number) - 7) + number[-4:]


def mask_name(name: str) -> str:
    """Keep the surname character: 张** (names shown publicly or sent to agencies)."""
    return name[0] + "*" * (len(name) - 1) if name else name
