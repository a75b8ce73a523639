"""Profile rules without a broker: file content checks, code checks, request contracts, and the
domain rules over a real SQLite database migrated with the service's own Alembic revisions."""
from __future__ import annotations

import datetime as dt
import io
import struct
import zlib

import pytest
from PIL import Image
from sqlalchemy.orm import sessionmaker

from services.profile import codes, domain, media
from services.profile.models import Profile
from services.profile.testing import SUNSHINE, credit_code, make_pdf, make_photo
from swms import errors
from swms.contracts.identity import PersonResponse
from swms.contracts.profile import BasicInfoRequest, HonourRequest, WorkExperienceRequest
from swms.db import engine_for
from swms.migrations import upgrade
from swms.rpc import parse
from tests.support import valid_id

# ---- photos -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size, label", [
    ((295, 413), "一寸"), ((413, 579), "二寸"), ((287, 401), "一寸"), ((303, 425), "一寸"),
    ((401, 562), "二寸"), ((425, 596), "二寸"),
])
def test_photo_sizes_within_the_tolerance(size, label):
    facts = media.inspect_photo(make_photo(*size), 3)
    assert (facts.photo_size, facts.width, facts.height, facts.content_type) == (label, *size, "image/jpeg")


@pytest.mark.parametrize("size", [(286, 413), (304, 413), (295, 400), (295, 426), (350, 490), (413, 295), (100, 140)])
def test_photo_sizes_outside_the_tolerance(size):
    with pytest.raises(errors.SwmsError) as caught:
        media.inspect_photo(make_photo(*size), 3)
    assert caught.value.code == "PHOTO_DIMENSIONS_INVALID"
    assert f"{size[0]}×{size[1]}" in caught.value.message


def test_tolerance_zero_means_exact():
    assert media.inspect_photo(make_photo(295, 413), 0).photo_size == "一寸"
    with pytest.raises(errors.SwmsError):
        media.inspect_photo(make_photo(296, 413), 0)


def test_exif_orientation_counts():
    """A portrait photo stored sideways (413×295) with EXIF orientation 6 is a 295×413 photo."""
    image = Image.open(io.BytesIO(make_photo(413, 295)))
    exif = image.getexif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    facts = media.inspect_photo(out.getvalue(), 3)
    assert (facts.width, facts.height) == (295, 413)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def test_a_huge_image_is_refused_by_its_header_before_decoding():
    # 20000×28000 would be 1.6 GB of pixels; the file is 57 bytes.
    with pytest.raises(errors.SwmsError) as caught:
        media.inspect_photo(_png_header_only(20000, 28000), 3)
    assert caught.value.code == "PHOTO_DIMENSIONS_INVALID"


def test_a_png_with_the_right_header_but_no_pixels_is_damaged():
    with pytest.raises(errors.SwmsError) as caught:
        media.inspect_photo(_png_header_only(295, 413), 3)
    assert caught.value.code == "FILE_DAMAGED"


@pytest.mark.parametrize("data, code", [
    (make_pdf(), "FILE_TYPE_NOT_ALLOWED"),
    (b"", "FILE_TYPE_NOT_ALLOWED"),
    (b"GIF89a", "FILE_TYPE_NOT_ALLOWED"),
    (b"\xff\xd8\xff" + b"\0" * 100, "FILE_DAMAGED"),
    (make_photo()[:-2], "FILE_DAMAGED"),
    (make_photo()[:400], "FILE_DAMAGED"),
])
def test_photo_content_not_name(data, code):
    with pytest.raises(errors.SwmsError) as caught:
        media.inspect_photo(data, 3, field="upload_id")
    assert (caught.value.code, caught.value.field) == (code, "upload_id")


# ---- proofs -----------------------------------------------------------------------------------

def _encrypted_pdf() -> bytes:
    from pypdf import PdfReader, PdfWriter
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf())))
    writer.encrypt("secret")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_proof_types_by_content():
    assert media.inspect_proof(make_pdf(3)) == "application/pdf"
    assert media.inspect_proof(make_photo(1200, 900, "PNG")) == "image/png"
    assert media.inspect_proof(make_photo(800, 600)) == "image/jpeg"


@pytest.mark.parametrize("data, code", [
    (b"just text, named .pdf", "FILE_TYPE_NOT_ALLOWED"),
    (b"PK\x03\x04 a zip or docx", "FILE_TYPE_NOT_ALLOWED"),
    (make_pdf()[:-30], "FILE_DAMAGED"),
    (b"%PDF-1.7\n%%EOF", "FILE_DAMAGED"),
    (_encrypted_pdf(), "FILE_TYPE_NOT_ALLOWED"),
    (make_photo(800, 600)[:-300], "FILE_DAMAGED"),
])
def test_bad_proofs(data, code):
    with pytest.raises(errors.SwmsError) as caught:
        media.inspect_proof(data, field="proof_upload_ids.0")
    assert (caught.value.code, caught.value.field) == (code, "proof_upload_ids.0")


# ---- codes ------------------------------------------------------------------------------------

def test_credit_code_check_character_matches_the_standard_example():
    # GB 32100-2015's worked example: 91350100M000100Y4 → check character 3.
    assert codes.uscc_check_character("91350100M000100Y4") == "3"


def test_credit_code_accepts_civil_affairs_registrations():
    code = credit_code("52110105MJ0000001")
    assert codes.credit_code(f" {code.lower()} ") == code


@pytest.mark.parametrize("raw, reason", [
    ("52110105MJ000000", "18位"),
    ("52110105MJ0000001I", "不允许的字符"),
    ("5211O105MJ00000010", "不允许的字符"),
    ("52ABCDEFMJ00000010", "第3–8位"),
    ("91350100M000100Y43", "首位应为5"),
])
def test_bad_credit_codes(raw, reason):
    with pytest.raises(ValueError) as caught:
        codes.credit_code(raw)
    assert reason in str(caught.value)


def test_credit_code_wrong_check_character():
    code = credit_code("52110105MJ0000001")
    wrong = code[:-1] + ("0" if code[-1] != "0" else "1")
    with pytest.raises(ValueError, match="校验位"):
        codes.credit_code(wrong)


def test_regions():
    assert codes.region("110105") == codes.Region("110000", "110100", "110105")
    assert codes.region("441900").county_code == "441900"          # 东莞: a city without counties
    for bad, field in (("990105", "region_code"), ("110000", "region_code"), ("710101", "region_code")):
        with pytest.raises(errors.SwmsError) as caught:
            codes.region(bad)
        assert (caught.value.code, caught.value.field) == ("REGION_CODE_INVALID", field)
    with pytest.raises(errors.SwmsError) as caught:
        codes.region("110105", province_code="120000")
    assert caught.value.field == "province_code"
    assert [codes.region_prefix(c) for c in ("110000", "110100", "110105")] == ["11", "1101", "110105"]


# ---- contracts --------------------------------------------------------------------------------

GOOD = {"ethnicity": "汉族", "political_status": "群众", "education": "本科", "major": "社会工作",
        "mobile": "13800138000", "address": "北京", "region_code": "110105", "unit_category": "企业",
        "unit_name": "某公司", "position": "职员", "truth_commitment": True}


@pytest.mark.parametrize("change, code, field", [
    ({"ethnicity": "汉"}, "VALIDATION_FAILED", "ethnicity"),
    ({"mobile": "23800138000"}, "VALIDATION_FAILED", "mobile"),
    ({"truth_commitment": False}, "COMMITMENT_REQUIRED", "truth_commitment"),
    ({"region_code": "11010"}, "VALIDATION_FAILED", "region_code"),
    ({"unit_directory_id": "not-a-uuid"}, "VALIDATION_FAILED", "unit_directory_id"),
    ({"position": "\x07"}, "TEXT_CHARACTERS_NOT_ALLOWED", "position"),
])
def test_basic_info_contract(change, code, field):
    with pytest.raises(errors.SwmsError) as caught:
        parse(BasicInfoRequest, {**GOOD, **change})
    assert (caught.value.code, caught.value.field) == (code, field)
    assert caught.value.message


def test_dates_in_the_future_carry_the_date_code():
    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    with pytest.raises(errors.SwmsError) as caught:
        parse(WorkExperienceRequest, {"unit_category": "企业", "unit_name": "x", "position": "y",
                                      "start_date": "2020-01-01", "end_date": tomorrow})
    assert (caught.value.code, caught.value.field) == ("DATE_INVALID", "end_date")
    assert "不能晚于今天" in caught.value.message
    with pytest.raises(errors.SwmsError) as caught:
        parse(HonourRequest, {"title": "t", "level": "国家级", "awarding_body": "b", "awarded_on": "2020-01-01"})
    assert (caught.value.code, caught.value.field) == ("VALIDATION_FAILED", "level")


# ---- domain over a migrated SQLite database ----------------------------------------------------

@pytest.fixture
def session(tmp_path):
    url = f"sqlite:///{tmp_path / 'profile.db'}"
    upgrade("profile", url)
    with sessionmaker(engine_for(url), expire_on_commit=False)() as session:
        yield session


def _person() -> PersonResponse:
    return PersonResponse(person_id="00000000-0000-4000-8000-000000000001", name="李明华",
                          id_number=valid_id("11010519900307123"), email="li@example.cn", level="社会工作师",
                          management_number="202611000000123456", exam_year=2026)


def test_a_new_form_lists_every_item_in_order(session):
    items = domain.check_items(session, None)
    assert [item.label for item in items] == list(domain.REQUIRED_ITEMS.values())
    profile = domain.ensure_profile(session, _person().person_id, _person())
    assert (profile.gender, profile.birth_date) == ("男", dt.date(1990, 3, 7))
    assert [i.field for i in domain.check_items(session, profile)][:3] == ["ethnicity", "political_status", "education"]


def test_units_follow_the_directory_rule(session):
    report = domain.import_organisations(session, [SUNSHINE, {"credit_code": credit_code("52110105MJ0000009"),
                                                              "name": "已注销机构", "status": "注销"}])
    assert (report.added, report.rejected) == (2, [])
    org_id = session.query(domain.Organisation.org_id).filter_by(credit_code=SUNSHINE["credit_code"]).scalar()
    closed_id = session.query(domain.Organisation.org_id).filter_by(name="已注销机构").scalar()
    assert domain.resolve_unit(session, domain.SWO, org_id, None) == (org_id, SUNSHINE["name"])
    assert domain.resolve_unit(session, domain.SWO, org_id, SUNSHINE["name"]) == (org_id, SUNSHINE["name"])
    assert domain.resolve_unit(session, domain.SWO, closed_id, None, current=False)[1] == "已注销机构"
    assert domain.resolve_unit(session, "企业", None, "某某科技有限公司") == (None, "某某科技有限公司")
    for args, code, field in [
        ((domain.SWO, None, "手工填写的机构"), "UNIT_MUST_BE_CHOSEN", "unit_name"),
        ((domain.SWO, None, None), "UNIT_MUST_BE_CHOSEN", "unit_directory_id"),
        ((domain.SWO, closed_id, None), "UNIT_NOT_IN_DIRECTORY", "unit_directory_id"),
        (("基金会", org_id, None), "VALIDATION_FAILED", "unit_directory_id"),
        (("其他", None, SUNSHINE["name"]), "UNIT_MUST_BE_CHOSEN", "unit_name"),
    ]:
        with pytest.raises(errors.SwmsError) as caught:
            domain.resolve_unit(session, *args)
        assert (caught.value.code, caught.value.field) == (code, field), args


def test_directory_import_reports_each_bad_line(session):
    good = credit_code("52110105MJ0000004")
    rows = domain.read_directory_file((
        "credit_code,name,region_code,status\n"
        f"{good},新星社工事务所,,正常\n"
        f"{good[:-1]}{'0' if good[-1] != '0' else '1'},校验错,,\n"
        f"{credit_code('52110105MJ0000005')},,,\n"
        f"{credit_code('52110105MJ0000006')},地区错,120,\n"
        f"{credit_code('52110105MJ0000007')},状态错,,歇业\n"
        f"{good},重复,,\n"
        f"{credit_code('52110105MJ0000008')},阳光社工\u202e所务事,,\n"      # printed on certificates as the unit
        f'{credit_code("52110105MJ0000010")},"阳光社工事务所\n",,\n').encode("utf-8-sig"))
    report = domain.import_organisations(session, rows)
    assert (report.added, report.updated, report.unchanged) == (1, 0, 0)
    assert [line for line, _ in report.rejected] == [3, 4, 5, 6, 7, 8, 9]
    assert "校验位" in report.rejected[0][1] and "重复" in report.rejected[4][1]
    assert report.rejected[5][1] == "机构名称含有不允许的文字方向控制符（第5个字符，U+202E）"
    assert report.rejected[6][1] == "机构名称含有不允许的换行符（第8个字符，U+000A）"   # refused, not trimmed
    again = domain.import_organisations(session, rows[:1])
    assert (again.added, again.unchanged) == (0, 1)
    [org] = domain.search_organisations(session, "新星", None, 1, 20)[0]
    assert org.region_code == "110105"            # from characters 3–8 of the code
    assert domain.search_organisations(session, "新_", None, 1, 20)[1] == 0


def test_directory_file_needs_its_columns():
    with pytest.raises(errors.SwmsError) as caught:
        domain.read_directory_file("名称\n某机构\n".encode())
    assert caught.value.field == "file"


def test_values_saved_under_older_rules_are_reported_invalid(session):
    profile = domain.ensure_profile(session, _person().person_id, _person())
    for name, value in {"ethnicity": "汉", "political_status": "群众", "education": "大学", "major": "社工",
                        "mobile": "13800138000", "email": "li@example.cn", "address": "北京",
                        "region_code": "110105", "unit_category": domain.SWO, "unit_name": "手工填写的机构",
                        "position": "社工", "truth_committed_at": dt.datetime(2026, 1, 1)}.items():
        setattr(profile, name, value)
    session.flush()
    items = domain.check_items(session, profile)
    assert [(i.field, i.code) for i in items] == [("ethnicity", "INVALID"), ("education", "INVALID"),
                                                  ("unit_name", "INVALID"), ("photo", "MISSING")]
    assert isinstance(session.get(Profile, profile.person_id), Profile)
