"""The certificate's files: the ID photo fetched, the signed PDF stored (first stored copy wins).

Plain blocking code, run in the render worker processes (services/certificate/render_worker.py),
so that neither the photo nor the PDF passes through the Nameko hub: the hub hands a worker the
photo's link and the object key, and gets back the photo's type or the stored PDF's SHA-256.
Errors are this module's own (no database, no eventlet here); the worker turns them into the
issue pipeline's codes.
"""
from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request

from botocore.exceptions import BotoCoreError, ClientError

from services.certificate import render
from swms.storage import is_missing

PHOTO_READ_SECONDS = 20.0       # the whole download, however slowly the server trickles it
PHOTO_SOCKET_SECONDS = 10.0


class PhotoUnavailable(Exception):
    """Not now (the link does not answer, or answers with an error): retried later."""


class StoreFailed(Exception):
    """The PDF could not be stored now, or the stored copy does not match its record: retried later."""


def download_photo(url: str) -> tuple[bytes, str]:
    """The photo behind ``url`` and its MIME type, decoded fully (render.check_photo);
    PhotoUnavailable while it cannot be had, render.PhotoInvalid if it can never be used."""
    deadline = time.monotonic() + PHOTO_READ_SECONDS
    chunks, size = [], 0
    try:
        with urllib.request.urlopen(url, timeout=PHOTO_SOCKET_SECONDS) as response:
            while size <= render.PHOTO_MAX_BYTES:
                chunk = response.read(min(65536, render.PHOTO_MAX_BYTES + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if time.monotonic() > deadline:
                    raise TimeoutError("photo download took too long")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PhotoUnavailable(type(exc).__name__) from None
    data = b"".join(chunks)
    return data, render.check_photo(data)


def stored_digest(bucket, key: str, number: str) -> str | None:
    """SHA-256 of the PDF already stored for this number, or None if none is; StoreFailed if what
    is stored is not that certificate's PDF."""
    try:
        stored = bucket.client.get_object(Bucket=bucket.name, Key=key)
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise
    body = stored["Body"].read()
    metadata = stored.get("Metadata") or {}
    digest = hashlib.sha256(body).hexdigest()
    if metadata.get("certificate-number") != number or metadata.get("sha256") != digest or not body.startswith(b"%PDF"):
        raise StoreFailed("已存储的证书文件与记录不符，需运维人员核查")
    return digest


def store_once(bucket, key: str, pdf: bytes, number: str) -> str:
    """Store ``pdf`` under ``key`` unless something is there already (If-None-Match: *); the SHA-256
    of the copy that counts: this one, or the one stored first (a retry after a crash)."""
    digest = hashlib.sha256(pdf).hexdigest()
    try:
        if bucket.put_if_absent(key, pdf, "application/pdf", {"sha256": digest, "certificate-number": number}):
            return digest
        existing = stored_digest(bucket, key, number)  # someone stored it first: theirs is the certificate
    except (ClientError, BotoCoreError) as exc:
        raise StoreFailed(f"证书文件存储失败（{type(exc).__name__}），稍后自动重试") from None
    if existing is None:
        raise StoreFailed("证书文件存储冲突，稍后自动重试")
    return existing


def store_credential(bucket, key: str, body: bytes, media_type: str, number: str) -> None:
    """The certificate's credential beside its PDF, first stored copy wins (the hub makes the same
    bytes again on a retry: Ed25519 and sorted JSON)."""
    try:
        bucket.put_if_absent(key, body, media_type, {"certificate-number": number})
    except (ClientError, BotoCoreError) as exc:
        raise StoreFailed(f"证书凭证存储失败（{type(exc).__name__}），稍后自动重试") from None
