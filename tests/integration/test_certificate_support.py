"""Shared by the certificate tests (no tests here): stand-ins for registration's and profile's
service-only RPCs, data builders, and probes of the certificate service's database and bucket.

Why stand-ins for ``registration.get_issuance_data`` and ``profile.get_photo_link``: the
certificate service depends on those two calls only, through their declared contracts
(``IssuanceData``, ``PhotoLink``). Seeding the real services would mean writing into their
tables (their internals, rewritten while this is written) or walking every application kind
through identity, profile, registration and review, which the other kinds cannot do yet
(upgrade, replacement). The stand-ins answer exactly as the contracts say, validate what they
return with the same pydantic models, and refuse callers without a service token like the real
ones; the real services are exercised end to end in tests/e2e (a first registration, with the
certificate issued, downloaded and checked there).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import time
import uuid

from nameko.rpc import rpc
from PIL import Image
from sqlalchemy import func, select

from services.certificate.models import (
    Certificate,
    DevKeyMaterial,
    IssueRequest,
    SerialCounter,
)
from services.certificate.models import audit as certificate_audit
from services.certificate.models import outbox as certificate_outbox
from swms import errors, idcard
from swms.auth import SERVICE, Auth
from swms.contracts.common import ApplicationKind, Level, UnitCategory
from swms.contracts.events import ApplicationApproved
from swms.contracts.profile import PhotoLink, ProfileSnapshot
from swms.contracts.registration import IssuanceData
from swms.contracts.review import Stage
from swms.storage import make_s3_client
from tests.support import dispatch, session_for, valid_id, wait_until

ISSUANCE: dict[str, dict] = {}          # application_id → IssuanceData as JSON
PHOTOS: dict[str, tuple] = {}           # photo_key → ("s3", config, bucket, key) | ("error", code) | ("url", url)
APPLICANTS: dict[str, tuple[str, str]] = {}  # application_id → (person_id, region) the approval names

HOLDER_ID = valid_id("11010519900307123")
RARE_ID = valid_id("11010519851120456")


class RegistrationStandIn:
    """``registration.get_issuance_data`` as declared in swms/contracts/registration.py."""
    name = "registration"
    auth = Auth()

    @rpc(expected_exceptions=errors.SwmsError)
    def get_issuance_data(self, payload):
        self.auth.require(SERVICE)
        data = ISSUANCE.get(payload["application_id"])
        if data is None:
            raise errors.not_found("申请", "application_id")
        return data


class ProfileStandIn:
    """``profile.get_photo_link`` as declared in swms/contracts/profile.py."""
    name = "profile"
    auth = Auth()

    @rpc(expected_exceptions=errors.SwmsError)
    def get_photo_link(self, payload):
        self.auth.require(SERVICE)
        entry = PHOTOS.get(payload["photo_key"])
        if entry is None:
            raise errors.not_found("照片", "photo_key")
        if entry[0] == "error":
            raise errors.SwmsError(entry[1], "照片暂不可用")
        if entry[0] == "url":
            return PhotoLink(url=entry[1], content_type="image/jpeg", expires_in_seconds=60).model_dump(mode="json")
        _, config, bucket, key = entry
        url = make_s3_client(config).generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                            ExpiresIn=60)
        return PhotoLink(url=url, content_type="image/jpeg", expires_in_seconds=60).model_dump(mode="json")


def start_stand_ins(service_config, container_factory) -> list:
    config = service_config("certificate")  # any service's config: broker, keys, S3
    started = []
    for cls in (RegistrationStandIn, ProfileStandIn):
        container = container_factory(cls, config)
        container.start()
        started.append(container)
    return started


@contextlib.contextmanager
def running_certificate(service_config, container_factory, **overrides):
    """Stand-ins, then the real certificate service; all stopped when the block ends, BEFORE the
    test databases are dropped (nameko's container_factory tears down after make_database)."""
    from tests.support import service_class

    containers = start_stand_ins(service_config, container_factory)
    config = service_config("certificate", **certificate_overrides(**overrides))
    certificate = container_factory(service_class("certificate"), config)
    certificate.start()
    containers.append(certificate)
    try:
        yield config
    finally:
        for container in reversed(containers):
            container.stop()


def raw_reply(amqp_uri: str, method: str, payload: dict, context: dict | None = None) -> bytes:
    """The reply body exactly as the broker carries it, for comparing two answers byte for byte
    (a Python client would turn both into equal-looking exceptions)."""
    from kombu import Connection, Exchange, Producer, Queue

    exchange = Exchange("nameko-rpc", type="topic", durable=True)
    reply_to = f"test-reply-{uuid.uuid4().hex}"
    headers = {f"nameko.{key}": value for key, value in (context or {}).items()}
    with Connection(amqp_uri) as connection:
        channel = connection.channel()
        queue = Queue(reply_to, exchange=exchange, routing_key=reply_to, exclusive=True, auto_delete=True)
        queue(channel).declare()
        Producer(channel).publish({"args": [payload], "kwargs": {}}, exchange=exchange,
                                  routing_key=f"certificate.{method}", reply_to=reply_to,
                                  correlation_id=str(uuid.uuid4()), headers=headers, serializer="json")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            message = queue(channel).get(no_ack=True)
            if message is not None:
                return message.body
            time.sleep(0.05)
    raise AssertionError(f"no reply to certificate.{method}")


def certificate_overrides(**extra) -> dict:
    """Fast timers and short leases for tests, a bucket of the test's own."""
    values = {"CERTIFICATE_S3_BUCKET": f"certs-{uuid.uuid4().hex[:12]}", "CERT_RETRY_POLL_SECONDS": 1,
              "CERT_EXPIRY_CHECK_SECONDS": 1, "CERT_ISSUE_LEASE_SECONDS": 5, "CERT_RETRY_MAX_SECONDS": 2,
              "CERT_RENDER_PROCESSES": 1, "VERIFY_BASE_URL": "https://verify.example.gov.cn/v"}
    values.update(extra)
    return values


# ---- data ---------------------------------------------------------------------------------------

def jpeg(width: int = 295, height: int = 413, quality: int = 85, noise: bool = False) -> bytes:
    image = Image.new("RGB", (width, height), (205, 222, 240))
    if noise:
        image = Image.effect_noise((width, height), 120).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def store_photo(config, data: bytes) -> str:
    """Upload a photo where the profile stand-in finds it; return its photo_key."""
    client = make_s3_client(config)
    bucket = "profile-photos"
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    key = f"photos/{uuid.uuid4().hex}.jpg"
    client.put_object(Bucket=bucket, Key=key, Body=data, ContentType="image/jpeg")
    PHOTOS[key] = ("s3", {k: config[k] for k in ("S3_ENDPOINT_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY")}, bucket, key)
    return key


def snapshot(*, person_id: str | None = None, name: str = "李明华", id_number: str = HOLDER_ID,
             region: str = "110105", level: Level = Level.SOCIAL_WORKER, photo_key: str | None = None,
             **overrides) -> ProfileSnapshot:
    resident = idcard.parse(id_number) if idcard.is_valid(id_number) else idcard.parse(HOLDER_ID)
    values = dict(person_id=person_id or str(uuid.uuid4()), name=name, id_number=id_number,
                  gender=resident.gender, birth_date=resident.birth_date, level=level,
                  management_number="202611000000123456", exam_year=dt.date.today().year, region_code=region,
                  unit_category=UnitCategory.SOCIAL_WORK_ORGANISATION, unit_name="北京市朝阳区阳光社会工作服务中心",
                  position="社会工作者", photo_key=photo_key)
    values.update(overrides)
    return ProfileSnapshot(**values)


def application(snap: ProfileSnapshot, kind: ApplicationKind = ApplicationKind.FIRST_REGISTRATION,
                raw: dict | None = None, **extra) -> str:
    """Register what registration would answer for a new application; return its id."""
    application_id = str(uuid.uuid4())
    data = IssuanceData(application_id=application_id, kind=kind, snapshot=snap, **extra).model_dump(mode="json")
    APPLICANTS[application_id] = (snap.person_id, snap.region_code)
    if raw:
        for dotted, value in raw.items():  # deliberately bad values, bypassing the model
            target = data
            *path, last = dotted.split(".")
            for part in path:
                target = target[part]
            target[last] = value
    ISSUANCE[application_id] = data
    return application_id


def approve(amqp_uri: str, application_id: str, *, final: bool = True, event_id: str | None = None) -> ApplicationApproved:
    data = ISSUANCE.get(application_id)
    person_id, region = APPLICANTS.get(application_id, (str(uuid.uuid4()), "110105"))
    event = ApplicationApproved(application_id=application_id, person_id=person_id,
                                kind=data["kind"] if data else ApplicationKind.FIRST_REGISTRATION,
                                region_code=region, stage=Stage.FINAL if final else Stage.INITIAL,
                                final=final, decided_by="officer-province", decided_at=dt.datetime.now(dt.timezone.utc))
    if event_id:
        event.event_id = event_id
    dispatch(amqp_uri, event)
    return event


# ---- probes -------------------------------------------------------------------------------------

def certificates(config) -> list[Certificate]:
    with session_for(config["DB_URL"]) as session:
        return list(session.execute(select(Certificate).order_by(Certificate.created_at)).scalars())


def certificate(config, number: str) -> Certificate:
    with session_for(config["DB_URL"]) as session:
        return session.get(Certificate, number)


def issue_request(config, application_id: str) -> IssueRequest | None:
    with session_for(config["DB_URL"]) as session:
        return session.get(IssueRequest, application_id)


def wait_request(config, application_id: str, status: str, timeout: float = 40) -> IssueRequest:
    return wait_until(lambda: (lambda r: r if r is not None and r.status == status else None)(
        issue_request(config, application_id)), timeout=timeout, interval=0.2,
        what=f"issue request {application_id} to be {status}")


def outbox_rows(config, event_type: str | None = None) -> list[dict]:
    table = certificate_outbox.table
    query = select(table).order_by(table.c.id)
    if event_type:
        query = query.where(table.c.event_type == event_type)
    with session_for(config["DB_URL"]) as session:
        return [dict(row) for row in session.execute(query).mappings()]


def audit_count(config) -> int:
    with session_for(config["DB_URL"]) as session:
        return session.execute(select(func.count()).select_from(certificate_audit.table)).scalar_one()


def serials(config) -> dict[str, int]:
    with session_for(config["DB_URL"]) as session:
        return {row.scope: row.last_serial for row in session.execute(select(SerialCounter)).scalars()}


def objects(config) -> list[str]:
    client = make_s3_client(config)
    try:
        listing = client.list_objects_v2(Bucket=config["CERTIFICATE_S3_BUCKET"])
    except client.exceptions.NoSuchBucket:
        return []
    return [item["Key"] for item in listing.get("Contents", [])]


def stored_pdf(config, number: str) -> bytes:
    client = make_s3_client(config)
    return client.get_object(Bucket=config["CERTIFICATE_S3_BUCKET"], Key=f"certificates/{number}.pdf")["Body"].read()


def dev_key(config, name: str) -> bytes:
    with session_for(config["DB_URL"]) as session:
        return session.get(DevKeyMaterial, name).pem.encode()


def state(config) -> dict:
    """Everything an issue or a lifecycle change could have touched, to show that nothing did."""
    return {"certificates": [(c.certificate_number, c.status, c.status_reason, c.sha256) for c in certificates(config)],
            "serials": serials(config), "objects": objects(config), "outbox": len(outbox_rows(config)),
            "audit": audit_count(config)}


def settle(seconds: float = 0.5) -> None:
    time.sleep(seconds)
