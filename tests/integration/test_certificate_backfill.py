"""Certificates issued before the status lists get an entry and a credential
(``python -m services.certificate.cli add-status-entries``), on SQLite and PostgreSQL and the moto
S3 server: the bits follow each certificate's status, a certificate still being issued is left
alone, a second run changes nothing, and ``repair-credentials`` stores a credential that went
missing. No broker: the command works on the service's database and bucket only."""
from __future__ import annotations

import datetime as dt

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from services.certificate import cli, credentials, issuing, status_lists, tokens
from services.certificate.keys import load_keys
from services.certificate.models import ISSUED, ISSUING, REVOKED, SUPERSEDED, SUSPENDED, Certificate, StatusList, audit
from swms.config import load_config, service_config_path
from swms.db import engine_for
from swms.storage import bucket_from_config

pytestmark = pytest.mark.integration

VERIFY_BASE_URL = "https://verify.swms.example.cn/verify"
STATUSES = {"1101202400001": ISSUED, "1101202400002": REVOKED, "1101202400003": SUSPENDED,
            "1101202400004": SUPERSEDED, "1101202400005": ISSUING}


@pytest.fixture
def certificate_config(tmp_path, make_database, s3_server):
    config = load_config(service_config_path("certificate"))
    config.update(s3_server)
    config.update({"DB_URL": make_database("certificate"), "VERIFY_BASE_URL": VERIFY_BASE_URL,
                   "CERTIFICATE_S3_BUCKET": f"backfill-{tmp_path.name[-20:].lower().replace('_', '-')}"})
    config.pop("LOGGING", None)
    path = tmp_path / "certificate.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    bucket = bucket_from_config(config, "CERTIFICATE_S3_BUCKET")
    bucket.ensure_exists()
    sessions = sessionmaker(engine_for(config["DB_URL"]), expire_on_commit=False)
    with sessions.begin() as session:   # as issued before the lists existed: no entry
        for i, (number, status) in enumerate(STATUSES.items()):
            session.add(Certificate(
                certificate_number=number, application_id=f"app-{i}", person_id=f"person-{i}", status=status,
                holder_name="张三丰", id_number="11010519491231002X", level="助理社会工作师", region_code="110105",
                authority="北京市民政局", valid_from=dt.date(2024, 1, 1), valid_until=dt.date(2026, 12, 31),
                object_key=f"certificates/{number}.pdf", created_at=dt.datetime(2024, 1, 1)))
    return {"path": str(path), "config": config, "bucket": bucket, "sessions": sessions}


def run(setup, *args) -> list[str]:
    lines: list[str] = []
    assert cli.main(["--config", setup["path"], "--actor", "ops-li", *args], out=lines.append) == 0, lines
    return lines


def test_old_certificates_get_entries_bits_and_credentials_once(certificate_config):
    setup, bucket = certificate_config, certificate_config["bucket"]
    assert run(setup, "add-status-entries", "--batch", "2")[-1] == (
        "done: 4 certificates given a status-list entry, 4 credentials stored")

    keys = load_keys(setup["config"])
    public_key = tokens.public_key_of(keys.qr_private_pem)
    with setup["sessions"]() as session:
        found = {c.certificate_number: c for c in session.execute(select(Certificate)).scalars()}
        [lists] = session.execute(select(StatusList)).scalars().all()
        entries = {(c.status_list, c.status_index) for c in found.values() if c.status_list is not None}
        assert len(entries) == 4 and lists.allocated == 4                 # one distinct index each
        for number, status in STATUSES.items():
            certificate = found[number]
            if status == ISSUING:   # its issue will give it one; a later run covers it otherwise
                assert certificate.status_list is None
                assert not bucket.exists(issuing.credential_key(certificate.object_key))
                continue
            wanted = status_lists.bits_for(status)
            assert {purpose: credentials.bit(getattr(lists, f"{purpose}_bits"), certificate.status_index)
                    for purpose in wanted} == wanted, number
            jws = bucket.get(issuing.credential_key(certificate.object_key)).decode()
            _, credential = credentials.verify_jws(public_key, jws, "vc+jwt")
            assert credential["credentialSubject"]["certificateNumber"] == number
            assert [entry["statusListIndex"] for entry in credential["credentialStatus"]] == [
                str(certificate.status_index)] * 2
            [row] = [r for r in audit.for_entity(session, number) if r["action"] == "certificate.status_entry_added"]
            assert row["actor"] == "cli:ops-li" and row["detail"]["status_index"] == certificate.status_index

    assert run(setup, "add-status-entries")[-1] == "done: 0 certificates given a status-list entry, 0 credentials stored"
    bucket.delete(issuing.credential_key("certificates/1101202400002.pdf"))
    assert run(setup, "repair-credentials")[-1] == "done: 1 missing credentials stored"
    assert bucket.exists(issuing.credential_key("certificates/1101202400002.pdf"))


def test_without_a_verify_base_url_the_command_refuses(certificate_config, tmp_path, capsys):
    config = dict(certificate_config["config"], VERIFY_BASE_URL="")
    path = tmp_path / "no-verify.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    assert cli.main(["--config", str(path), "add-status-entries"], out=lambda line: None) == 1
    assert "VERIFY_BASE_URL is not set" in capsys.readouterr().err
