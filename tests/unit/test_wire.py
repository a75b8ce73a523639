"""Log excerpts of bodies that could not be read: bounded, escaped, ID numbers masked."""
from kombu.exceptions import DecodeError
from kombu.serialization import loads

from swms.wire import EXCERPT_CHARS, describe, excerpt
from tests.support import valid_id

ID_NUMBER = valid_id("11010519900307123")


def test_a_long_body_is_cut_and_its_size_given():
    body = b'{"a": ' * 100_000 + b"1" + b"}" * 100_000
    text = excerpt(body)
    assert text.startswith('{"a": {"a": ') and text.endswith(f"…({len(body)} bytes)")
    assert len(text) <= EXCERPT_CHARS + 20
    assert excerpt(body.decode()) == text   # kombu may hand the body over as text


def test_id_numbers_are_masked_also_where_the_cut_falls():
    for offset in range(EXCERPT_CHARS - 20, EXCERPT_CHARS + 2):
        text = excerpt(b"x" * offset + b'"' + ID_NUMBER.encode() + b'", ' * 100)
        assert ID_NUMBER[:6] + ID_NUMBER[6:14] not in text, offset   # never the birth date with the region
        assert ID_NUMBER[3:17] not in text and ID_NUMBER[3:14] not in text, offset


def test_bytes_that_are_not_utf8_and_control_characters_are_escaped():
    body = '{"name": "李明华"}'.encode("gb18030") + b"\x00\n" + ID_NUMBER.encode()
    assert excerpt(body) == '{"name": "\\xc0\\xee\\xc3\\xf7\\xbb\\xaa"}\\x00\\n' + ID_NUMBER[:3] + "*" * 11 + ID_NUMBER[-4:]
    assert excerpt('李明华'.encode()) == "李明华" and excerpt(b"") == ""


def test_the_decoders_complaint_is_named_not_kombus_wrapper():
    try:
        loads(b"[" * 100_000, "application/json", "utf-8", accept=["application/json"])
    except DecodeError as exc:
        assert describe(exc).startswith("RecursionError: maximum recursion depth exceeded")
    try:
        loads(b"1" * 5000, "application/json", "utf-8", accept=["application/json"])
    except DecodeError as exc:
        assert describe(exc).startswith("ValueError: Exceeds the limit (4300 digits)")
