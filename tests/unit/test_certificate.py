"""Certificate rules without a broker: numbers, validity, QR tokens and the ID hash, PAdES signing
and its validation, key loading (development and production), the photo check, rendering (CJK,
rare characters, long names), and the domain's state changes on a real SQLite database."""
from __future__ import annotations

import datetime as dt
import io
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from PIL import Image
from pypdf import PdfReader
from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from services.certificate import domain, fonts, keys, render, signing, tokens
from services.certificate.models import Certificate, IssueRequest, SerialCounter
from services.certificate.models import outbox as certificate_outbox
from swms import errors, idcard
from swms.auth import ADMIN, OFFICER, SOCIAL_WORKER, Caller
from swms.contracts.certificate import VerificationStatus
from swms.contracts.common import ApplicationKind, Level, UnitCategory
from swms.contracts.events import ApplicationApproved, PasserLevelRaised
from swms.contracts.profile import ProfileSnapshot
from swms.contracts.registration import IssuanceData
from swms.contracts.review import Stage
from swms.db import engine_for
from swms.migrations import upgrade
from swms.outbox import utcnow
from tests.support import valid_id
from tools.dev_tsa import DevTsa

HOLDER_ID = valid_id("11010519900307123")
TODAY = dt.date(2026, 11, 26)


@pytest.fixture(scope="module")
def material() -> signing.SigningMaterial:
    return signing.generate_dev_ca("中华人民共和国民政部")


@pytest.fixture
def session(tmp_path):
    url = f"sqlite:///{tmp_path / 'certificate.db'}"
    upgrade("certificate", url)
    with sessionmaker(engine_for(url), expire_on_commit=False)() as session:
        yield session


def face(**overrides) -> render.CertificateFace:
    values = dict(certificate_number="1120262000001", holder_name="李明华", gender="男", id_number_shown=HOLDER_ID,
                  level="社会工作师", unit_name="北京市朝阳区阳光社会工作服务中心", authority="中华人民共和国民政部",
                  valid_from=TODAY, valid_until=dt.date(2029, 11, 25), issued_on=TODAY,
                  verify_url="https://swms.example.gov.cn/verify?t=1120262000001." + "A" * 86)
    values.update(overrides)
    return render.CertificateFace(**values)


def text_of(pdf: bytes) -> str:
    return "".join("".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages).split())


def image(kind: str = "JPEG", size=(295, 413)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 220, 240)).save(buffer, kind)
    return buffer.getvalue()


# ---- numbers and validity -----------------------------------------------------------------------

def test_numbers_are_thirteen_digits_per_province_year_and_level_and_never_reused(session):
    first = domain.next_number(session, "11", 2026, Level.SOCIAL_WORKER.value)
    second = domain.next_number(session, "11", 2026, Level.SOCIAL_WORKER.value)
    senior = domain.next_number(session, "11", 2026, Level.SENIOR.value)
    guangdong = domain.next_number(session, "44", 2026, Level.ASSISTANT.value)
    session.commit()
    assert (first, second, senior, guangdong) == ("1120262000001", "1120262000002", "1120263000001",
                                                  "4420261000001")
    session.rollback()
    assert domain.next_number(session, "11", 2026, Level.SOCIAL_WORKER.value) == "1120262000003"
    session.rollback()  # a rolled-back reservation gives its number back before anyone saw it
    assert session.get(SerialCounter, "1120262").last_serial == 2


def test_three_year_validity_ends_the_day_before_the_anniversary():
    assert domain.period(TODAY, 3) == (TODAY, dt.date(2029, 11, 25))
    assert domain.period(dt.date(2024, 2, 29), 3) == (dt.date(2024, 2, 29), dt.date(2027, 2, 27))
    assert domain.period(TODAY, 5)[1] == dt.date(2031, 11, 25)


# ---- QR tokens and the ID hash ------------------------------------------------------------------

def test_qr_token_checks_out_and_every_forgery_is_recognised():
    key = tokens.generate_token_key()
    public = tokens.public_key_of(key)
    token = tokens.make_token(key, "1120262000001")
    assert tokens.read_token(public, token) == "1120262000001"
    number, signature = token.split(".")
    forgeries = [
        tokens.make_token(tokens.generate_token_key(), "1120262000001"),   # another key
        f"1120262000002.{signature}",                                      # number altered
        f"{number}.{signature[:-2]}{'AB' if signature[-2:] != 'AB' else 'CD'}",  # signature altered
        *(f"{number}.{signature[:-1]}{c}" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c != signature[-1]),  # last char
        token[:-1], token + "A", number, "", "1120262000001.", "a.b", None, 42,
    ]
    for forged in forgeries:
        with pytest.raises(tokens.ForgedToken):
            tokens.read_token(public, forged)


def test_id_hash_is_keyed_and_matches_however_the_x_is_typed():
    key, other = b"k" * 32, b"o" * 32
    number = valid_id("11010519491231002")
    assert number.endswith("X")
    assert tokens.id_hash(key, number) == tokens.id_hash(key, number.lower()) == tokens.id_hash(key, f" {number} ")
    assert tokens.id_hash(key, number) != tokens.id_hash(other, number)
    assert tokens.id_hash(key, number) != tokens.id_hash(key, HOLDER_ID)
    assert number not in tokens.id_hash(key, number) and len(tokens.id_hash(key, number)) == 64
    assert tokens.id_hash_key_id(key) != tokens.id_hash_key_id(other)


# ---- signing ------------------------------------------------------------------------------------

def test_signed_pdf_validates_and_one_changed_byte_breaks_it(material):
    signer = signing.make_signer(material)
    pdf = signing.sign_pdf(render.render_pdf(face()), signer, "中华人民共和国民政部", "1120262000001")
    report = signing.validate_pdf(pdf, material.chain_pem)
    assert report.ok, report
    assert "中华人民共和国民政部" in report.signer_subject
    assert "李明华" in text_of(pdf)  # text extraction still works on the signed file

    content = bytearray(pdf)
    content[len(pdf) // 3] ^= 0x01                      # a byte of the page content
    assert not signing.validate_pdf(bytes(content), material.chain_pem).intact
    start = pdf.index(b"/Contents <") + len(b"/Contents <") + 40
    in_signature = bytearray(pdf)
    in_signature[start] = ord("0") if pdf[start] != ord("0") else ord("1")   # a byte of the signature itself
    assert not signing.validate_pdf(bytes(in_signature), material.chain_pem).ok
    producer = bytearray(pdf)
    at = pdf.index(b"WeasyPrint")
    producer[at] = ord("w")                               # one letter of the metadata
    assert not signing.validate_pdf(bytes(producer), material.chain_pem).ok

    stranger = signing.generate_dev_ca("中华人民共和国民政部")  # same name, another CA: not trusted
    untrusted = signing.validate_pdf(pdf, stranger.chain_pem)
    assert untrusted.intact and not untrusted.trusted and not untrusted.ok
    unsigned = signing.validate_pdf(render.render_pdf(face()), material.chain_pem)
    assert not unsigned.signed and unsigned.problem == "no signature"
    assert not signing.validate_pdf(b"not a pdf at all", material.chain_pem).ok


def test_the_cms_spliced_from_the_template_is_what_pyhanko_builds_and_every_pdf_validates(material):
    import asyncio

    from pyhanko.sign.signers import SimpleSigner

    signer = signing.make_signer(material)
    digest = bytes(range(100, 132))
    fast = asyncio.run(signer.async_sign(digest, "sha256", use_pades=True))
    slow = asyncio.run(SimpleSigner.async_sign(signer, digest, "sha256", use_pades=True))
    [fast_info], [slow_info] = fast["content"]["signer_infos"], slow["content"]["signer_infos"]
    assert fast_info["signed_attrs"].dump() == slow_info["signed_attrs"].dump()
    assert fast["content"]["certificates"].dump() == slow["content"]["certificates"].dump()
    fast_native, slow_native = fast.native, slow.native
    for native in (fast_native, slow_native):   # ECDSA signatures differ every time
        native["content"]["signer_infos"][0]["signature"] = None
    assert fast_native == slow_native
    # one signer, several documents: each signature is over its own document
    first, second = (signing.sign_pdf(render.render_pdf(face(holder_name=name)), signer, "民政部", "1120262000001")
                     for name in ("李明华", "王芳"))
    assert signing.validate_pdf(first, material.chain_pem).ok and signing.validate_pdf(second, material.chain_pem).ok
    assert first[-1500:] != second[-1500:]


@pytest.fixture(scope="module")
def tsa():
    with DevTsa() as server:   # an RFC 3161 TSA over HTTP on loopback
        yield server


def test_with_a_tsa_the_signature_carries_a_time_stamp_token_the_validator_checks(material, tsa):
    signer = signing.make_signer(material)
    before = tsa.requests
    pdf = signing.sign_pdf(render.render_pdf(face()), signer, "中华人民共和国民政部", "1120262000001",
                           signing.make_timestamper(tsa.url, 5))
    assert tsa.requests == before + 1
    report = signing.validate_pdf(pdf, material.chain_pem, tsa.roots_pem)
    assert report.ok and report.timestamp_ok is True, report
    assert abs(report.timestamped_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=2)
    # a verifier that does not trust the TSA's root: the token is not good, the signature still is
    unknown_tsa = signing.validate_pdf(pdf, material.chain_pem, material.chain_pem)
    assert unknown_tsa.ok and unknown_tsa.timestamp_ok is False
    # no TSA configured: PAdES B-B as before, no token
    assert signing.make_timestamper("  ", 5) is None
    plain = signing.validate_pdf(signing.sign_pdf(render.render_pdf(face()), signer, "中华人民共和国民政部",
                                                  "1120262000001", None), material.chain_pem, tsa.roots_pem)
    assert plain.ok and plain.timestamped_at is None and plain.timestamp_ok is None


def test_a_tsa_that_does_not_answer_or_refuses_stops_the_signature(material):
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    signer = signing.make_signer(material)
    pdf = render.render_pdf(face())
    with socket.socket() as probe:     # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/tsa"
    with pytest.raises(signing.TimestampUnavailable, match="URLError"):
        signing.sign_pdf(pdf, signer, "民政部", "1120262000001", signing.make_timestamper(url, 2))

    class Broken(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/html")   # a proxy's error page, say
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"no")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(signing.TimestampUnavailable, match="not a time-stamp reply"):
            signing.sign_pdf(pdf, signer, "民政部", "1120262000001",
                             signing.make_timestamper(f"http://127.0.0.1:{server.server_address[1]}/", 2))
    finally:
        server.shutdown()
        server.server_close()


def test_an_rsa_production_key_from_another_ca_signs_too():
    """A production authority certificate: RSA, issued by a CA of its own (not the development one)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    root_key = rsa.generate_private_key(65537, 3072)
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "民政部电子认证根证书（测试）")])
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(root_key, hashes.SHA256()))
    key = rsa.generate_private_key(65537, 3072)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "民政部")]))
            .issuer_name(root_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(root_key, hashes.SHA256()))
    root_pem = root.public_bytes(serialization.Encoding.PEM)
    production = signing.SigningMaterial(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        cert.public_bytes(serialization.Encoding.PEM), root_pem)
    signing.check_material(production)
    pdf = signing.sign_pdf(render.render_pdf(face()), signing.make_signer(production), "民政部", "1120262000001")
    assert signing.validate_pdf(pdf, root_pem).ok


def test_a_key_that_does_not_match_its_certificate_is_refused_at_start(material):
    other = signing.generate_dev_ca("x")
    with pytest.raises(ValueError, match="does not belong"):
        signing.check_material(signing.SigningMaterial(other.key_pem, material.cert_pem, material.chain_pem))
    with pytest.raises(ValueError, match="chain"):
        signing.check_material(signing.SigningMaterial(material.key_pem, material.cert_pem, b""))


def test_a_certificate_without_non_repudiation_is_refused_at_start():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "TLS server, not a signer")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=9))
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    material = signing.SigningMaterial(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()), pem, pem)
    with pytest.raises(ValueError, match="non-repudiation"):
        signing.check_material(material)


# ---- keys: development in the database, production from files ---------------------------------

def test_development_keys_are_made_once_and_shared(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade("certificate", url)
    config = {"DB_URL": url, "CERT_AUTHORITY_NAME": "中华人民共和国民政部"}
    first, second = keys.load_keys(config), keys.load_keys(config)
    assert first == second  # a second replica (or restart) signs with the same CA, checks the same tokens
    assert set(first.dev_keys_used) == {"signing", "qr_token", "id_hash"}
    assert len(first.id_hash_key) >= 32


def test_production_keys_come_from_files_and_missing_ones_stop_the_service(tmp_path, material):
    paths = {"CERT_SIGNING_KEY_PATH": material.key_pem, "CERT_SIGNING_CERT_PATH": material.cert_pem,
             "CERT_SIGNING_CHAIN_PATH": material.chain_pem, "CERT_QR_KEY_PATH": tokens.generate_token_key(),
             "CERT_ID_HASH_KEY_PATH": b"s" * 48 + b"\n"}
    config = {"DB_URL": "sqlite:///" + str(tmp_path / "never-created.db"), "CERT_ALLOW_DEV_KEYS": "false"}
    for name, content in paths.items():
        (tmp_path / name).write_bytes(content)
        config[name] = str(tmp_path / name)
    ring = keys.load_keys(config)
    assert ring.dev_keys_used == () and ring.signing == material and ring.id_hash_key == b"s" * 48
    assert not (tmp_path / "never-created.db").exists()  # no database touched for keys

    with pytest.raises(RuntimeError, match="CERT_ALLOW_DEV_KEYS"):
        keys.load_keys({**config, "CERT_QR_KEY_PATH": ""})
    with pytest.raises(RuntimeError, match="go together"):
        keys.load_keys({**config, "CERT_SIGNING_CHAIN_PATH": ""})
    (tmp_path / "short").write_bytes(b"too short")
    with pytest.raises(RuntimeError, match="32 bytes"):
        keys.load_keys({**config, "CERT_ID_HASH_KEY_PATH": str(tmp_path / "short")})
    with pytest.raises(FileNotFoundError):
        keys.load_keys({**config, "CERT_SIGNING_KEY_PATH": str(tmp_path / "absent.pem")})


# ---- the photo and the page ---------------------------------------------------------------------

@pytest.mark.parametrize("data, reason", [
    (b"", "为空"),
    (b"GIF89a" + b"\x00" * 100, "无法识别"),
    (b"not an image", "无法识别"),
    (image()[:500], "无法识别"),                       # truncated
    (image("GIF"), "JPEG 或 PNG"),
    (image(size=(60, 80)), "尺寸"),
    (b"\xff\xd8" + b"\x00" * (500 * 1024), "500 KB"),
])
def test_photos_that_cannot_go_on_a_certificate(data, reason):
    with pytest.raises(render.PhotoInvalid, match=reason):
        render.check_photo(data)


def test_jpeg_and_png_photos_are_accepted():
    assert render.check_photo(image("JPEG")) == "image/jpeg"
    assert render.check_photo(image("PNG", (413, 579))) == "image/png"


def test_rare_characters_render_in_a_cjk_font_never_as_boxes():
    from fontTools.ttLib import TTCollection

    name = "张𠮷䶮"
    pdf = render.render_pdf(face(holder_name=name, photo=image(), photo_type="image/jpeg"))
    assert name in text_of(pdf)
    reader = PdfReader(io.BytesIO(pdf))
    fonts_used = {str(reader.pages[0]["/Resources"]["/Font"][f].get_object()["/BaseFont"])
                  for f in reader.pages[0]["/Resources"]["/Font"]}
    assert fonts_used and all("SWMS" in f or "Noto-Serif-CJK" in f for f in fonts_used), fonts_used
    # the fallback font really has these glyphs (a missing glyph would be drawn as a box)
    path, index = fonts._source_font()
    cmap = TTCollection(path, lazy=True)[index]["cmap"].getBestCmap()
    assert all(ord(ch) in cmap for ch in name)
    assert len(reader.pages[0].images) == 2  # photo and QR code


def test_the_compact_font_holds_common_characters_and_leaves_rare_ones_to_the_fallback():
    from fontTools.ttLib import TTFont

    path = fonts.common_font_file()
    assert path is not None and path.stat().st_size > 1_000_000
    cmap = TTFont(str(path), lazy=True)["cmap"].getBestCmap()
    assert all(ord(ch) in cmap for ch in "李明华社会工作者登记证书中华人民共和国民政部0123456789")
    assert ord("𠮷") not in cmap and ord("䶮") not in cmap


def test_a_thirty_character_name_and_a_long_unit_stay_on_one_page():
    name = "阿卜杜热合曼·买买提依明·艾合买提江·吐尔逊托合提江·古丽𠮷"
    assert len(name) == 30
    pdf = render.render_pdf(face(holder_name=name, unit_name="新疆维吾尔自治区乌鲁木齐市天山区" * 6,
                                 original_certificate_no="20250301", supersedes="1120262000001"))
    assert len(PdfReader(io.BytesIO(pdf)).pages) == 1
    text = text_of(pdf)
    assert name in text and "20250301" in text and "1120262000001" in text


@pytest.mark.parametrize("field, value, label", [
    ("unit_name", "北京市朝阳区阳光社会工作服务中心\u202e心中务服", "工作单位"),
    ("unit_name", "阳光👨\u200d👩\u200d👧社工站", "工作单位"),
    ("holder_name", "李\u2066明华\u2069", "姓名"),
    ("authority", "中华人民共和国民政部\n（测试）", "登记机关"),
    ("supersedes", "1120262000001\x00", "换发的证书编号"),
])
def test_the_renderer_refuses_to_print_what_the_text_policy_refuses(field, value, label):
    with pytest.raises(render.TextRefused) as refused:
        render.render_pdf(face(**{field: value}))
    assert refused.value.field == field and refused.value.message.startswith(f"{label}含有不允许的")


def test_markup_in_printed_fields_is_refused_the_rest_escaped_and_the_renderer_fetches_nothing_else():
    with pytest.raises(render.TextRefused) as refused:        # the text policy: < > are never printed
        render.certificate_html(face(unit_name='<img src="file:///etc/passwd">&'))
    assert refused.value.field == "unit_name" and "工作单位" in refused.value.message
    html = render.certificate_html(face(unit_name='阳光"社工"&服务中心'))
    assert "阳光&quot;社工&quot;&amp;服务中心" in html      # quotes and ampersands stay text
    renderer = render.Renderer()
    for url in ("file:///etc/passwd", "http://127.0.0.1:9/x.png", render.PHOTO_URL):
        with pytest.raises(ValueError):
            renderer._fetch(url)  # outside a render, not even the certificate's own images


# ---- the domain on a database -------------------------------------------------------------------

def snapshot(person_id: str, **overrides) -> ProfileSnapshot:
    resident = idcard.parse(HOLDER_ID)
    values = dict(person_id=person_id, name="李明华", id_number=HOLDER_ID, gender=resident.gender,
                  birth_date=resident.birth_date, level=Level.SOCIAL_WORKER, management_number="1",
                  exam_year=2026, region_code="110105", unit_category=UnitCategory.OTHER, unit_name="单位",
                  position="社工")
    values.update(overrides)
    return ProfileSnapshot(**values)


def approved(session, kind=ApplicationKind.FIRST_REGISTRATION, person_id=None, **snapshot_overrides):
    person_id = person_id or str(uuid.uuid4())
    event = ApplicationApproved(application_id=str(uuid.uuid4()), person_id=person_id, kind=kind,
                                region_code="110105", stage=Stage.FINAL, final=True, decided_by="o",
                                decided_at=dt.datetime.now(dt.timezone.utc))
    request = domain.record_approval(session, event, utcnow())
    return request, snapshot(person_id, **snapshot_overrides)


def issue(session, kind=ApplicationKind.FIRST_REGISTRATION, person_id=None, extra=None, **snapshot_overrides):
    request, snap = approved(session, kind, person_id, **snapshot_overrides)
    data = IssuanceData(application_id=request.application_id, kind=kind, snapshot=snap, **(extra or {}))
    certificate = domain.reserve(session, request, data, authority="民政部", validity_years=3, today=TODAY,
                                 photo_missing=True)
    finished = domain.finish(session, certificate.certificate_number, "ab" * 32, "f" * 64, b"k" * 32, utcnow())
    session.commit()
    return finished


def test_finishing_twice_announces_once(session):
    request, snap = approved(session)
    data = IssuanceData(application_id=request.application_id, kind=ApplicationKind.FIRST_REGISTRATION, snapshot=snap)
    reserved = domain.reserve(session, request, data, authority="民政部", validity_years=3, today=TODAY,
                              photo_missing=False)
    again = domain.reserve(session, request, data, authority="民政部", validity_years=3, today=TODAY,
                           photo_missing=False)
    assert again.certificate_number == reserved.certificate_number  # the same approval: the same number
    assert domain.finish(session, reserved.certificate_number, "a" * 64, "f" * 64, b"k" * 32, utcnow()) is not None
    assert domain.finish(session, reserved.certificate_number, "b" * 64, "f" * 64, b"k" * 32, utcnow()) is None
    session.commit()
    rows = session.execute(select(certificate_outbox.table)).all()
    assert [row.event_type for row in rows] == ["certificate_issued"]
    assert session.get(Certificate, reserved.certificate_number).sha256 == "a" * 64
    assert session.get(IssueRequest, request.application_id).status == "done"


@pytest.mark.parametrize("kind, extra, overrides, code, field", [
    (ApplicationKind.REPLACEMENT, {}, {}, "ORIGINAL_NO_REQUIRED", "original_certificate_no"),
    (ApplicationKind.REPLACEMENT, {"original_certificate_no": "123456789"}, {}, "ORIGINAL_NO_INVALID",
     "original_certificate_no"),
    (ApplicationKind.REPLACEMENT, {"original_certificate_no": "12345678", "original_valid_from": TODAY},
     {}, "ORIGINAL_VALIDITY_INVALID", "original_valid_until"),
    (ApplicationKind.FIRST_REGISTRATION, {}, {"name": "李\t明华"}, "NAME_INVALID", "snapshot.name"),
    (ApplicationKind.FIRST_REGISTRATION, {}, {"name": ""}, "NAME_INVALID", "snapshot.name"),
    (ApplicationKind.FIRST_REGISTRATION, {}, {"id_number": HOLDER_ID[:-1] + "0"}, "ID_NUMBER_INVALID",
     "snapshot.id_number"),
    (ApplicationKind.FIRST_REGISTRATION, {}, {"region_code": "11010"}, "REGION_INVALID", "snapshot.region_code"),
    (ApplicationKind.FIRST_REGISTRATION, {}, {"unit_name": "单" * 101}, "ISSUANCE_DATA_INVALID", "snapshot.unit_name"),
    (ApplicationKind.UPGRADE, {}, {}, "PREVIOUS_CERTIFICATE_NOT_FOUND", "previous_certificate_number"),
])
def test_issuance_data_that_cannot_make_a_correct_certificate(session, kind, extra, overrides, code, field):
    request, snap = approved(session, kind, **overrides)
    data = IssuanceData(application_id=request.application_id, kind=kind, snapshot=snap, **extra)
    session.commit()
    with pytest.raises(domain.IssueRefused) as refused:
        domain.reserve(session, request, data, authority="民政部", validity_years=3, today=TODAY,
                       photo_missing=True)
    assert (refused.value.code, refused.value.field) == (code, field)
    session.rollback()
    assert session.execute(select(Certificate)).all() == []
    assert session.execute(select(SerialCounter)).all() == []


def test_holder_cannot_get_a_second_first_registration_certificate_but_may_upgrade(session):
    person = str(uuid.uuid4())
    first = issue(session, person_id=person)
    request, snap = approved(session, person_id=person)
    with pytest.raises(domain.IssueRefused) as refused:
        domain.reserve(session, request, IssuanceData(application_id=request.application_id,
                                                      kind=ApplicationKind.FIRST_REGISTRATION, snapshot=snap),
                       authority="民政部", validity_years=3, today=TODAY, photo_missing=True)
    assert refused.value.code == "ALREADY_CERTIFIED"
    session.rollback()
    with pytest.raises(domain.IssueRefused) as same_level:
        issue(session, ApplicationKind.UPGRADE, person_id=person)
    assert (same_level.value.code, same_level.value.field) == ("UPGRADE_LEVEL_NOT_HIGHER", "snapshot.level")
    session.rollback()
    upgraded = issue(session, ApplicationKind.UPGRADE, person_id=person, level=Level.SENIOR)
    assert upgraded.supersedes == first.certificate_number
    assert session.get(Certificate, first.certificate_number).status == "superseded"


def test_re_registration_continues_the_validity_without_a_gap(session):
    person = str(uuid.uuid4())
    first = issue(session, person_id=person)
    renewed = issue(session, ApplicationKind.RE_REGISTRATION, person_id=person)
    assert renewed.valid_from == first.valid_until + dt.timedelta(days=1)
    assert renewed.valid_until == dt.date(2032, 11, 25)
    assert session.get(Certificate, first.certificate_number).superseded_by == renewed.certificate_number


def test_lifecycle_transitions_and_who_may_make_them(session):
    certificate = issue(session)
    officer = Caller("officer-9", OFFICER, "110105", "county")
    for caller, allowed in ((officer, True), (Caller("p", OFFICER, "110000", "province"), True),
                            (Caller("a", ADMIN), True), (Caller("x", OFFICER, "110106", "county"), False),
                            (Caller("w", SOCIAL_WORKER), False)):
        if allowed:
            domain.authorise_officer(caller, certificate)
        else:
            with pytest.raises(errors.SwmsError):
                domain.authorise_officer(caller, certificate)
    now = utcnow()
    suspended = domain.change_status(session, certificate, "suspend", officer, "调查", b"k" * 32, TODAY, now)
    assert suspended.status == "suspended"
    with pytest.raises(errors.SwmsError) as twice:
        domain.change_status(session, suspended, "suspend", officer, "再次", b"k" * 32, TODAY, now)
    assert twice.value.code == "INVALID_STATE"
    assert domain.change_status(session, suspended, "reinstate", officer, "结束", b"k" * 32, TODAY, now).status == "issued"
    revoked = domain.change_status(session, suspended, "revoke", officer, "欺骗", b"k" * 32, TODAY, now)
    assert (revoked.status, revoked.status_reason, revoked.status_changed_by) == ("revoked", "欺骗", "officer-9")
    for action in ("revoke", "suspend", "reinstate"):
        with pytest.raises(errors.SwmsError):
            domain.change_status(session, revoked, action, officer, "再来", b"k" * 32, TODAY, now)
    session.commit()
    types = [row.event_type for row in session.execute(select(certificate_outbox.table)).all()]
    assert types == ["certificate_issued", "certificate_suspended", "certificate_reinstated", "certificate_revoked"]


def test_expiry_and_what_verification_answers(session):
    current = issue(session)
    assert domain.verification_status(current, TODAY) == VerificationStatus.CURRENT
    assert domain.verification_status(current, dt.date(2029, 11, 26)) == VerificationStatus.EXPIRED
    assert domain.expire_due(session, dt.date(2029, 11, 25), utcnow(), b"k" * 32) == []  # last valid day
    assert domain.expire_due(session, dt.date(2029, 11, 26), utcnow(), b"k" * 32) == [current.certificate_number]
    assert domain.expire_due(session, dt.date(2029, 11, 27), utcnow(), b"k" * 32) == []  # not twice
    session.commit()
    result = domain.verify(session, current.certificate_number, "李明华", dt.date(2029, 12, 1), utcnow())
    assert (result.status, result.status_label, result.holder_name_masked) == (VerificationStatus.EXPIRED, "已过期", "李**")
    with pytest.raises(errors.SwmsError) as unknown:
        domain.verify(session, "1120269999999", "李明华", TODAY, utcnow())
    assert (unknown.value.code, unknown.value.field) == ("NOT_FOUND", "certificate_number")


def test_by_number_only_the_holders_whole_name_answers_and_a_wrong_pair_is_an_unknown_number(session):
    current = issue(session, name="欧阳·娜仁")
    number = current.certificate_number
    session.commit()
    for spelling in ("欧阳·娜仁", "欧阳・娜仁", "欧阳 娜仁", "欧阳娜仁", "欧阳．娜仁"):   # as identity compares names
        assert domain.verify(session, number, spelling, TODAY, utcnow()).certificate_number == number, spelling
    refusals = []
    for number_, name in ((number, "欧阳"), (number, "欧阳·娜"), (number, "欧阳·娜仁仁"), (number, "李明华"),
                          ("1120269999999", "欧阳·娜仁"), ("1120269999999", "李明华")):
        with pytest.raises(errors.SwmsError) as refused:
            domain.verify(session, number_, name, TODAY, utcnow())
        refusals.append(refused.value.args)
    # the same four values (code, message, field, details) on the wire, whatever was wrong
    assert refusals == [("NOT_FOUND", domain.NOT_FOUND_BY_NUMBER, "certificate_number", [])] * 6
    # a signed QR token needs no name
    assert domain.verify(session, number, None, TODAY, utcnow()).holder_name_masked == "欧****"
    with pytest.raises(errors.SwmsError) as unknown:
        domain.verify(session, "1120269999999", None, TODAY, utcnow())
    assert (unknown.value.code, unknown.value.field) == ("NOT_FOUND", "token")


def test_a_certificate_being_issued_is_unknown_to_verification(session):
    current = issue(session)
    session.execute(update(Certificate).where(Certificate.certificate_number == current.certificate_number)
                    .values(status="issuing"))
    session.commit()
    with pytest.raises(errors.SwmsError) as refused:
        domain.verify(session, current.certificate_number, "李明华", TODAY, utcnow())
    assert refused.value.args == ("NOT_FOUND", domain.NOT_FOUND_BY_NUMBER, "certificate_number", [])


def test_level_raised_marks_the_current_certificate_pending_upgrade(session):
    person = str(uuid.uuid4())
    certificate = issue(session, person_id=person)
    raised = PasserLevelRaised(person_id=person, previous_level=Level.SOCIAL_WORKER, new_level=Level.SENIOR,
                               management_number="1", exam_year=2027)
    assert domain.mark_pending_upgrade(session, raised) == [certificate.certificate_number]
    assert session.get(Certificate, certificate.certificate_number).pending_upgrade_level == "高级社会工作师"
    not_higher = PasserLevelRaised(person_id=person, previous_level=Level.ASSISTANT, new_level=Level.ASSISTANT,
                                   management_number="1", exam_year=2027)
    assert domain.mark_pending_upgrade(session, not_higher) == []
    nobody = PasserLevelRaised(person_id=str(uuid.uuid4()), previous_level=Level.ASSISTANT,
                               new_level=Level.SENIOR, management_number="1", exam_year=2027)
    assert domain.mark_pending_upgrade(session, nobody) == []
