"""Client-side helpers for the profile's upload flow, for tests, tools and benchmarks.

A browser does the same: ``request_upload`` → HTML-form POST of the file to the returned URL →
``confirm_photo`` (or a work-experience / honour save naming the ``upload_id``).

    with ClusterRpcProxy(config, context_data={"auth_token": token}) as worker:
        upload_id = upload(worker, "photo", make_photo())
        worker.profile.confirm_photo({"upload_id": upload_id})
"""
from __future__ import annotations

import io
import urllib.error
import urllib.request
import uuid

COUNTY = "110105"


def make_photo(width: int = 295, height: int = 413, fmt: str = "JPEG", noise: bool = False) -> bytes:
    """An ID-photo-like image: light background, a darker head and shoulders (Pillow)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (236, 242, 250))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.3, height * 0.18, width * 0.7, height * 0.55), fill=(224, 186, 160))
    draw.rectangle((width * 0.15, height * 0.62, width * 0.85, height), fill=(40, 52, 80))
    if noise:  # camera-like detail, so the file has a realistic size
        import os
        grain = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
        image = Image.blend(image, grain, 0.25)
    out = io.BytesIO()
    image.save(out, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return out.getvalue()


def with_phone_metadata(data: bytes, orientation: int | None = None) -> bytes:
    """The JPEG with what a phone writes into it: EXIF with a GPS position, the device, the time
    (and an orientation, if given), and a comment."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        exif = Image.Exif()
        exif[0x010F], exif[0x0110], exif[0x0132] = "PhoneMaker", "Phone 15", "2026:11:20 08:15:00"
        exif[0x8825] = {1: "N", 2: (39.0, 54.0, 27.0), 3: "E", 4: (116.0, 23.0, 17.0)}   # GPS IFD
        if orientation is not None:
            exif[0x0112] = orientation
        out = io.BytesIO()
        image.save(out, "JPEG", quality=92, exif=exif, comment=b"taken at home")
    return out.getvalue()


def make_pdf(pages: int = 1) -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=595, height=842)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def post_file(ticket: dict, data: bytes, filename: str = "upload.bin",
              content_type: str = "application/octet-stream", timeout: float = 30) -> int:
    """POST ``data`` as multipart/form-data with the ticket's fields (the file part last, as S3
    requires). Returns the HTTP status (204 from S3/MinIO on success)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in ticket["fields"].items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 f"Content-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    request = urllib.request.Request(ticket["url"], data=b"".join(parts), method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:   # e.g. 400 EntityTooLarge from MinIO's policy check
        return exc.code


def upload(worker, purpose: str, data: bytes, filename: str = "upload.bin") -> str:
    """Ticket + POST; returns the ``upload_id`` to confirm."""
    ticket = worker.profile.request_upload({"purpose": purpose})
    status = post_file(ticket, data, filename)
    if status not in (200, 201, 204):
        raise RuntimeError(f"object storage refused the upload: HTTP {status}")
    return ticket["upload_id"]


def seed_directory(db_url: str, organisations: list[dict[str, str]]) -> dict[str, str]:
    """Loads organisations into the profile database's directory; returns {credit_code: org_id}.
    Each item: credit_code, name, and optionally region_code, status."""
    from sqlalchemy import select
    from sqlalchemy.orm import sessionmaker

    from services.profile import domain
    from services.profile.models import Organisation
    from swms.db import engine_for

    with sessionmaker(engine_for(db_url))() as session:
        domain.import_organisations(session, organisations, actor="test")
        session.commit()
        return dict(session.execute(select(Organisation.credit_code, Organisation.org_id)).all())


def credit_code(first17: str) -> str:
    from services.profile.codes import uscc_check_character
    return first17 + uscc_check_character(first17)


SUNSHINE = {"credit_code": credit_code("52110105MJ0000001"), "name": "北京市朝阳区阳光社会工作服务中心",
            "region_code": COUNTY}


def basic_info(unit_directory_id: str, **overrides) -> dict:
    """A complete 基础信息 request for a person working at a directory organisation."""
    form = {"ethnicity": "汉族", "political_status": "群众", "education": "本科", "major": "社会工作",
            "mobile": "13800138000", "address": "北京市朝阳区朝阳门外大街1号", "region_code": COUNTY,
            "unit_category": "社会工作服务机构", "unit_directory_id": unit_directory_id,
            "position": "社会工作者", "truth_commitment": True}
    form.update(overrides)
    return form


def complete_profile(worker, profile_db_url: str, person_id: str, **overrides) -> dict:
    """Makes the caller's 个人信息表 complete (directory unit, basic info, photo); returns the form.
    For other services' tests that need a person who may submit a registration."""
    org_id = seed_directory(profile_db_url, [SUNSHINE])[SUNSHINE["credit_code"]]
    worker.profile.save_basic_info(basic_info(org_id, **overrides))
    worker.profile.confirm_photo({"upload_id": upload(worker, "photo", make_photo(), "photo.jpg")})
    return worker.profile.get_profile({"person_id": person_id})
