"""GB 11643-1999 resident ID numbers."""
import datetime as dt

import pytest

from swms import idcard

VALID = ["11010519491231002X", "440524188001010014", "11010519491231002x", "110105199003071239"]


@pytest.mark.parametrize("number", VALID)
def test_valid_numbers(number):
    parsed = idcard.parse(number)
    assert parsed.number == number.upper()
    assert parsed.region_code == number[:6]


def test_fields_are_derived():
    parsed = idcard.parse("11010519491231002X")
    assert parsed.birth_date == dt.date(1949, 12, 31)
    assert parsed.gender == "女"  # sequence 002: even
    assert idcard.parse("440524188001010014").gender == "男"  # sequence 001: odd


@pytest.mark.parametrize("number, reason", [
    ("360426199101010072", "check"),           # wrong check digit
    ("110105199902300011", "date"),            # 30 February
    ("110105199913010011", "date"),            # month 13
    ("11010519491231002", "length"),           # 17 characters
    ("11010519491231002X1", "length"),         # 19 characters
    ("1101051949A231002X", "digits"),          # a letter in the middle
    ("X10105194912310021", "digits"),          # X not last
    ("010105194912310021", "digits"),          # region cannot start with 0
    ("", "length"),
    ("１１０１０５１９４９１２３１００２X", "digits"),  # full-width digits
    ("11010519491231002Y", "digits"),
])
def test_invalid_numbers(number, reason):
    with pytest.raises(idcard.InvalidIdNumber) as caught:
        idcard.parse(number)
    expected = {"check": "check", "date": "date", "length": "length", "digits": "digits"}[reason]
    assert expected in str(caught.value)


def test_future_birth_date_is_refused():
    first17 = "11010520300101001"
    with pytest.raises(idcard.InvalidIdNumber, match="birth date"):
        idcard.parse(first17 + idcard.check_character(first17), today=dt.date(2026, 11, 26))


def test_retired_region_codes_stay_valid():
    # 1101xx districts were merged long ago; numbers issued under them never change.
    first17 = "11010219800101001"  # 北京市宣武区 (abolished 2010)
    assert idcard.is_valid(first17 + idcard.check_character(first17))


def test_check_character_table():
    assert idcard.check_character("11010519491231002") == "X"
    assert idcard.check_character("44052418800101001") == "4"


def test_non_string_is_invalid():
    assert not idcard.is_valid(110105194912310021)


def test_masking_keeps_only_the_ends():
    assert idcard.mask("110105199003071239") == "110***********1239"
    assert idcard.mask_name("李明华") == "李**"
    assert idcard.mask_name("𠮷") == "𠮷"


def test_digits_of_other_scripts_are_refused():
    # Arabic-Indic digits are \d in Python's regex and int() reads them: they must still be refused.
    valid = "11010519491231002X"
    mixed = valid[0] + "".join(chr(0x0660 + int(c)) for c in valid[1:17]) + valid[17]
    assert idcard.is_valid(valid) and not idcard.is_valid(mixed)
