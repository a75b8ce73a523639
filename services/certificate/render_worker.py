"""A render-and-sign worker process: ``python -m services.certificate.render_worker``.

Started by services/certificate/renderer.py with exec (never fork: the parent runs eventlet), it
imports WeasyPrint and pyHanko once, loads the signing key sent by the parent, warms up, then
answers jobs one at a time over its standard input and output until the input closes (which is
also what happens when the parent dies, even by SIGKILL).

Frames: 4-byte big-endian length + pickle. Both ends are this repository's own code, so pickle
carries no foreign input. First frame in: {"signing": (key_pem, cert_pem, chain_pem),
"authority": str, "tsa_url": str, "tsa_timeout": float} (an empty TSA URL: PAdES B-B, else B-T);
reply {"ok": True, "pid": int}. Then per job, in: {"face": CertificateFace};
out: {"ok": True, "pdf": bytes, "render_s": float, "sign_s": float} or
{"ok": False, "code": str, "message": str, "field": str | None, "retryable": bool}.
"""
from __future__ import annotations

import datetime as dt
import os
import pickle
import struct
import sys
import time
import traceback

from swms.errors import TEXT_CHARACTERS_NOT_ALLOWED


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

    from services.certificate import render, signing

    init = read_frame(proto_in)
    if init is None:
        return 0
    material = signing.SigningMaterial(*init["signing"])
    signer = signing.make_signer(material)
    authority = init["authority"]
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

    while True:
        job = read_frame(proto_in)
        if job is None:
            return 0
        face = job["face"]
        try:
            if face.photo is not None:
                render.check_photo(face.photo)
            started = time.perf_counter()
            pdf = renderer.pdf(face)
            rendered = time.perf_counter()
            if job.get("sign", True):
                pdf = signing.sign_pdf(pdf, signer, authority, face.certificate_number, timestamper)
            signed = time.perf_counter()
            reply = {"ok": True, "pdf": pdf, "render_s": rendered - started, "sign_s": signed - rendered}
        except render.PhotoInvalid as exc:
            reply = {"ok": False, "code": "PHOTO_INVALID", "message": str(exc), "field": "photo", "retryable": False}
        except render.TextRefused as exc:   # the same data gives the same answer: no retry
            reply = {"ok": False, "code": TEXT_CHARACTERS_NOT_ALLOWED, "message": exc.message, "field": exc.field,
                     "retryable": False}
        except signing.TimestampUnavailable as exc:   # the issue waits for the TSA (docs/deployment.md)
            print(f"time-stamping authority unavailable: {exc}", file=sys.stderr)
            reply = {"ok": False, "code": "TIMESTAMP_UNAVAILABLE", "message": "时间戳服务暂不可用，稍后自动重试",
                     "field": None, "retryable": True}
        except Exception as exc:  # reported to the parent, which retries the issue later
            traceback.print_exc()
            reply = {"ok": False, "code": "RENDER_FAILED", "message": f"{type(exc).__name__}: {exc}",
                     "field": None, "retryable": True}
        write_frame(proto_out, reply)


if __name__ == "__main__":
    sys.exit(main())
