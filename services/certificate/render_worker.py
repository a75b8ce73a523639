"""A render-and-sign worker process: ``python -m services.certificate.render_worker``.

Started by services/certificate/renderer.py with exec (never fork: the parent runs eventlet), it
imports WeasyPrint and pyHanko once, loads the signing key sent by the parent, opens its own S3
client, warms up, then answers jobs one at a time over its standard input and output until the
input closes (which is also what happens when the parent dies, even by SIGKILL).

The photo and the PDF stay here: the worker downloads the photo from the link the hub got from
profile, and stores the signed PDF itself, so the hub only ever sees the photo's type and the
PDF's SHA-256 (the bytes would cost the hub's single thread CPU, between every other request).

Frames: 4-byte big-endian length + pickle. Both ends are this repository's own code, so pickle
carries no foreign input. First frame in: {"signing": (key_pem, cert_pem, chain_pem),
"authority": str, "compact_font": bool, "storage": {config keys of swms.storage} | None,
"tsa_url": str, "tsa_timeout": float} (an empty TSA URL: PAdES B-B, else B-T);
reply {"ok": True, "pid": int}. Then per job, in one of

* {"photo_url": str}: download and check the photo, keep it for the next job;
  out {"ok": True, "photo_type": str};
* {"face": CertificateFace, "sign": bool, "photo_url": str | None, "store": {"key": str,
  "number": str, "credential": (key, bytes, media type) | None} | None}: the photo (kept from the
  job before, or downloaded; dropped after this job) goes on the face, the PDF is rendered, signed,
  and stored under ``key``, then the credential beside it (first stored copy wins for both);
  out {"ok": True, "sha256": str, "render_s": float, "sign_s": float, "store_s": float}, with
  "pdf": bytes instead of storing when "store" is None;

or {"ok": False, "code": str, "message": str, "field": str | None, "retryable": bool}.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import pickle
import struct
import sys
import time
import traceback

from swms.errors import TEXT_CHARACTERS_NOT_ALLOWED

PAUSE_ENV = "SWMS_TEST_PAUSE_AT"          # the crash tests' hook, as in services/certificate/issuing.py
PAUSE_MARKER_ENV = "SWMS_TEST_PAUSE_MARKER"


def _read_exactly(stream, count: int) -> bytes | None:
    chunks, remaining = [], count
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            return None  # end of input
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(stream) -> object | None:
    header = _read_exactly(stream, 4)
    if header is None:
        return None
    (length,) = struct.unpack(">I", header)
    payload = _read_exactly(stream, length)
    return None if payload is None else pickle.loads(payload)


def write_frame(stream, message: object) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack(">I", len(payload)) + payload)
    stream.flush()


def main() -> int:
    # Keep the protocol on a private copy of stdout; anything printed by libraries goes to stderr.
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    from services.certificate import files, render, signing
    from swms.storage import bucket_from_config

    init = read_frame(proto_in)
    if init is None:
        return 0
    material = signing.SigningMaterial(*init["signing"])
    signer = signing.make_signer(material)
    authority = init["authority"]
    storage = init.get("storage")   # one S3 client per worker, reused for every PDF
    bucket = bucket_from_config(storage, "CERTIFICATE_S3_BUCKET") if storage else None
    timestamper = signing.make_timestamper(init.get("tsa_url", ""), init.get("tsa_timeout", 10.0))
    renderer = render.Renderer(compact_font=init.get("compact_font", True))
    warm = render.CertificateFace(
        certificate_number="0000000000000", holder_name="预热", gender="男", id_number_shown="",
        level="社会工作师", unit_name="", authority=authority, valid_from=dt.date.today(),
        valid_until=dt.date.today(), issued_on=dt.date.today(), verify_url="https://example.invalid/")
    # The first PDF is slow; it also builds the signer's CMS template. No TSA call: a TSA that is
    # down must not keep the worker from starting.
    signing.sign_pdf(renderer.pdf(warm), signer, authority, warm.certificate_number)
    write_frame(proto_out, {"ok": True, "pid": os.getpid(), "compact_font": str(renderer.font_file or "")})

    photo: tuple[str, bytes, str] | None = None    # (link, bytes, type) of the last photo downloaded
    while True:
        job = read_frame(proto_in)
        if job is None:
            return 0
        try:
            url = job.get("photo_url")
            if url is not None and (photo is None or photo[0] != url):
                photo = None
                photo = (url, *files.download_photo(url))
            if "face" not in job:
                write_frame(proto_out, {"ok": True, "photo_type": photo[2]})
                continue
            face = job["face"]
            kept, photo = photo, None   # one download per certificate: a later job with the same link fetches again
            if url is not None:
                face = dataclasses.replace(face, photo=kept[1], photo_type=kept[2])
            elif face.photo is not None:
                render.check_photo(face.photo)
            started = time.perf_counter()
            pdf = renderer.pdf(face)
            rendered = time.perf_counter()
            if job.get("sign", True):
                pdf = signing.sign_pdf(pdf, signer, authority, face.certificate_number, timestamper)
            signed = time.perf_counter()
            reply = {"ok": True, "render_s": rendered - started, "sign_s": signed - rendered, "store_s": 0.0}
            store = job.get("store")
            if store is None:
                reply.update(pdf=pdf, sha256=hashlib.sha256(pdf).hexdigest())
            else:
                pause("after_render")
                reply["sha256"] = files.store_once(bucket, store["key"], pdf, store["number"])
                if store.get("credential"):
                    files.store_credential(bucket, *store["credential"], store["number"])
                reply["store_s"] = time.perf_counter() - signed
        except files.PhotoUnavailable as exc:
            reply = {"ok": False, "code": "PHOTO_UNAVAILABLE", "message": f"照片下载失败（{exc}），稍后自动重试",
                     "field": "photo", "retryable": True}
        except render.PhotoInvalid as exc:
            reply = {"ok": False, "code": "PHOTO_INVALID", "message": f"照片不能用于证书：{exc}", "field": "photo",
                     "retryable": False}
        except render.TextRefused as exc:   # the same data gives the same answer: no retry
            reply = {"ok": False, "code": TEXT_CHARACTERS_NOT_ALLOWED, "message": exc.message, "field": exc.field,
                     "retryable": False}
        except files.StoreFailed as exc:
            reply = {"ok": False, "code": "STORAGE_UNAVAILABLE", "message": str(exc), "field": "object_key",
                     "retryable": True}
        except signing.TimestampUnavailable as exc:   # the issue waits for the TSA (docs/deployment.md)
            print(f"time-stamping authority unavailable: {exc}", file=sys.stderr)
            reply = {"ok": False, "code": "TIMESTAMP_UNAVAILABLE", "message": "时间戳服务暂不可用，稍后自动重试",
                     "field": None, "retryable": True}
        except Exception as exc:  # reported to the parent, which retries the issue later
            traceback.print_exc()
            reply = {"ok": False, "code": "RENDER_FAILED", "message": f"{type(exc).__name__}: {exc}",
                     "field": None, "retryable": True}
        write_frame(proto_out, reply)


def pause(step: str) -> None:
    """The crash tests' hook (SWMS_TEST_PAUSE_AT=<step>): write the marker and wait to be killed."""
    if os.environ.get(PAUSE_ENV) != step:
        return
    marker = os.environ.get(PAUSE_MARKER_ENV)
    if marker:
        with open(marker, "w") as handle:
            handle.write(step)
    time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
