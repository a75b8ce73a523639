"""End to end: the six services as separate ``nameko run`` processes, over a real RabbitMQ vhost,
with an S3 server and an SMTP server on loopback; once on SQLite files, once on PostgreSQL."""
from __future__ import annotations

import email
import email.policy
import io

import pytest
from pypdf import PdfReader

from swms.storage import make_s3_client
from tools.walkthrough import HOLDER_EMAIL, HOLDER_NAME, walk

pytestmark = pytest.mark.e2e


def test_sign_up_to_downloaded_certificate_and_email(stack, tmp_path):
    lines = []
    result = walk(stack, tmp_path / "out", say=lines.append)
    assert len(lines) == 17, lines

    # The PDF object is in S3 under its certificate number, and it is the file the holder downloaded.
    environment = stack.environment()
    s3 = make_s3_client({key: environment[key] for key in ("S3_ENDPOINT_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY")})
    stored = s3.get_object(Bucket="swms-certificates", Key=result.object_key)["Body"].read()
    assert stored == result.pdf_path.read_bytes()
    assert stored.startswith(b"%PDF")
    text = PdfReader(io.BytesIO(stored)).pages[0].extract_text()
    assert HOLDER_NAME in text
    assert result.certificate_number in text
    assert "社会工作者登记证书" in "".join(text.split())  # the title is letter-spaced

    # Every object the services keep (the ID photo, the certificate) is encrypted at rest by the
    # server (S3_ENCRYPTION, default SSE-S3).
    kept = {(bucket["Name"], item["Key"]) for bucket in s3.list_buckets()["Buckets"]
            for item in s3.list_objects_v2(Bucket=bucket["Name"]).get("Contents", [])}
    assert ("swms-certificates", result.object_key) in kept and any(name == "swms-profile" for name, _ in kept)
    assert {(name, key): s3.head_object(Bucket=name, Key=key).get("ServerSideEncryption") for name, key in kept} == {
        object_: "AES256" for object_ in kept}

    # Exactly one certificate email reached the SMTP server, addressed to the holder (the holder and
    # the officers also get mail about the submission and each decision).
    mails = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
             for p in stack.mail_dir.glob("*.eml")]
    issued = [m for m in mails if "电子登记证书已签发" in m["Subject"]]
    assert [m["To"] for m in issued] == [HOLDER_EMAIL]
    assert any(m["To"] == HOLDER_EMAIL and "申请已提交" in m["Subject"] for m in mails)
    body = issued[0].get_body(preferencelist=("plain",)).get_content()
    assert result.certificate_number in body
    assert "查看证书" in body
